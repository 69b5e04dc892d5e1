// The OpenID provider the test suite runs on loopback (tests/oidc_provider.py starts it):
// the npm package oidc-provider, with test clients and key rotation on demand.
//
//   node provider.mjs PORT
//
// Issuer http://127.0.0.1:PORT. Clients (client_credentials, client_secret_basic):
//   svc-jwt     access tokens for RESOURCE as RS256 JWTs (roles claim: ["reader"])
//   svc-opaque  access tokens for RESOURCE as opaque strings (introspection answers roles)
//   gateway     the gateway's own client, for introspection only
// Test-only admin endpoints (loopback, no authentication):
//   POST /admin/rotate?keep=1   a new signing key signs from now on; the old ones stay
//                               published with keep=1, and are dropped otherwise
//   GET  /admin/keys            the published key ids, newest first
import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.mjs PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = 'https://api.stackgate.test';
const SECRETS = {
  'svc-jwt': 'svc-jwt-secret-for-tests-only-0123456789',
  'svc-opaque': 'svc-opaque-secret-for-tests-only-0123456789',
  gateway: 'gateway-secret-for-tests-only-0123456789',
};
const ROLES = { 'svc-jwt': ['reader'], 'svc-opaque': ['reader'], gateway: [] };

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig' };
}

function build(keys) {
  const provider = new Provider(issuer, {
    clients: Object.entries(SECRETS).map(([clientId, secret]) => ({
      client_id: clientId,
      client_secret: secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys },
    cookies: { keys: ['stackgate-test-cookie-key'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator, client) => {
          if (resourceIndicator !== RESOURCE) {
            throw new Error(`unknown resource ${resourceIndicator}`);
          }
          const jwt = client.clientId === 'svc-jwt';
          return {
            scope: 'todos:read todos:write',
            audience: RESOURCE,
            accessTokenTTL: 3600,
            accessTokenFormat: jwt ? 'jwt' : 'opaque',
            ...(jwt ? { jwt: { sign: { alg: 'RS256' } } } : {}),
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => ({ roles: ROLES[token.clientId] || [] }),
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let keys = [newKey()];
let handler = build(keys).callback();

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/admin/rotate' && req.method === 'POST') {
    keys = [newKey(), ...(url.searchParams.get('keep') === '1' ? keys : [])];
    handler = build(keys).callback();
    console.log(`rotated: signing with ${keys[0].kid}, publishing ${keys.length} keys`);
    json(res, 200, { kids: keys.map((k) => k.kid) });
  } else if (url.pathname === '/admin/keys') {
    json(res, 200, { kids: keys.map((k) => k.kid) });
  } else {
    handler(req, res);
  }
});
server.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
}
