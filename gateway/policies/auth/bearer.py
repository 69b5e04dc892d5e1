"""JWT bearer tokens (PyJWT): issuers from the config, each with its own keys and algorithms.

A token is matched to its issuer by its unverified ``iss``, then verified with
that issuer's keys and algorithms alone (never ``none``; one key source: a
``secret``, a ``jwks_file``, or keys fetched from the provider by ``jwks``),
``exp`` required. A token that is not a JWT goes to the one issuer that
introspects opaque tokens, if any (``introspection``; docs/auth.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

import jwt
from jwt.algorithms import get_default_algorithms

from gateway.policies.auth import jwks
from gateway.policies.auth.identity import ROLE, TOKEN_IDENTITY, BadCredentials
from gateway.policies.auth.introspection import Introspector

#: HMAC algorithms and the shortest secret each accepts (RFC 7518 §3.2: the hash size).
HMAC = {"HS256": 32, "HS384": 48, "HS512": 64}
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_TOKEN_BYTES = 8192

ERR_NO_ALGORITHMS = 'must list at least one algorithm, e.g. ["HS256"] with secret or ["RS256"] with jwks_file'
ERR_ALGORITHMS_REQUIRED = '"algorithms" is required with "secret" and "jwks_file" (with jwks_url or discovery it may be left out)'
ERR_ALG_NONE = 'the "none" algorithm is never allowed: tokens must be signed'
ERR_ALG_UNKNOWN = (
    f'"{{alg}}" is not a supported algorithm; use {", ".join(HMAC)} (with secret) or {", ".join(ASYMMETRIC)} (with jwks_file)'
)
ERR_KEY_SOURCE = (
    'needs exactly one key source: "secret" (for HS* algorithms), or "jwks_file", "jwks_url" or '
    '"discovery = true" (for public-key algorithms)'
)
ERR_SECRET_ALGS = 'an issuer with "secret" may list only HS256, HS384 and HS512 in algorithms, not "{alg}"'
ERR_JWKS_ALGS = 'an issuer with "{source}" may list only public-key algorithms (RS*, PS*, ES*, EdDSA), not "{alg}"'
ERR_KEYS_UNAVAILABLE = "its issuer's signing keys could not be fetched, and none is known for it"
ERR_SECRET_SHORT = (
    'must be at least {size} bytes for {alg} (RFC 7518 §3.2); take it from the environment, '
    'e.g. secret = "${{STACKGATE_JWT_SECRET}}"'
)

ERR_TOKEN = "The bearer token is not valid: {reason}."
_REASONS: dict[type, str] = {
    jwt.ExpiredSignatureError: "it has expired",
    jwt.ImmatureSignatureError: "it is not valid yet",
    jwt.InvalidAudienceError: 'its "aud" claim does not name this gateway',
    jwt.InvalidIssuerError: 'its "iss" claim does not match its issuer',
    jwt.InvalidSignatureError: "its signature does not verify",
    jwt.InvalidAlgorithmError: 'its "alg" is not allowed for its issuer',
    jwt.InvalidIssuedAtError: 'its "iat" claim is not a time',
    jwt.exceptions.InvalidSubjectError: 'its "sub" claim is not a string',
    jwt.DecodeError: "it is not a well-formed JWT",
}


class JwksFile(str):
    """A ``jwks_file`` value (the path as written) carrying its prepared keys: kid -> alg -> key."""

    keys: dict[Optional[str], dict[str, Any]]


def check_secret(secret: bytes, algorithms: Iterable[str]) -> None:
    hmac_algs = [alg for alg in algorithms if alg in HMAC] or ["HS256"]
    alg = max(hmac_algs, key=HMAC.__getitem__)
    if len(secret) < HMAC[alg]:
        raise ValueError(ERR_SECRET_SHORT.format(size=HMAC[alg], alg=alg))


def load_jwks(value: str, path: Path, algorithms: list[str]) -> JwksFile:
    """Read a JWKS file and prepare each public key for the algorithms it can verify."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f'cannot read "{value}": {exc.strerror or exc}') from None
    except ValueError:
        raise ValueError(f'"{value}" is not JSON') from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'"{value}" is not a JSON Web Key Set: expected {{"keys": [...]}}')
    registry = get_default_algorithms()
    keys: dict[Optional[str], dict[str, Any]] = {}
    for index, jwk in enumerate(entries):
        where = f'"{value}" keys[{index}]'
        if not isinstance(jwk, dict):
            raise ValueError(f"{where} is not a JSON object")
        if jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") == "oct" or "k" in jwk:
            raise ValueError(f"{where} is a symmetric key: an HMAC secret belongs in secret, never in a JWKS")
        if "d" in jwk:
            raise ValueError(f"{where} holds private key material (\"d\"): publish only public keys")
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError(f'{where}: "kid" must be a string')
        prepared: dict[str, Any] = {}
        for alg in algorithms:
            if jwk.get("alg") not in (None, alg):
                continue
            algorithm = registry[alg]
            try:
                key = algorithm.prepare_key(algorithm.from_jwk(jwk))
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                continue  # another key type or curve
            weakness = algorithm.check_key_length(key)
            if weakness:
                raise ValueError(f"{where}: {weakness}")
            prepared[alg] = key
        if not prepared:
            continue
        if kid in keys:
            raise ValueError(f'{where}: kid "{kid}" appears twice')
        keys[kid] = prepared
    if not keys:
        raise ValueError(f'"{value}" holds no public key for the algorithms {", ".join(algorithms)}')
    if None in keys and len(keys) > 1:
        raise ValueError(f'"{value}": every key needs a "kid" when the set holds more than one')
    result = JwksFile(value)
    result.keys = keys
    return result


def claim_value(claims: dict[str, Any], name: str) -> Any:
    """The claim ``name``; when no claim has that name, a dotted path into nested objects
    (Keycloak's ``realm_access.roles``, ``resource_access.CLIENT.roles``). None when absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class Issuer:
    """One configured issuer, ready to verify."""

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        self.remote: Optional[jwks.RemoteKeys] = None
        self.introspector: Optional[Introspector] = None
        if config.secret is not None:
            self.algorithms = tuple(config.algorithms)
            secret = config.secret.get_secret_value().encode("utf-8")
            self.keys: dict[Optional[str], dict[str, Any]] = {None: {alg: secret for alg in self.algorithms}}
            self.by_kid = False
        elif config.jwks_file is not None:
            self.algorithms = tuple(config.algorithms)
            self.keys = config.jwks_file.keys
            self.by_kid = True
        else:
            # Fetched keys: each verifies only the public-key algorithms its type allows (jwks.prepare_keys).
            self.algorithms = tuple(config.algorithms or ASYMMETRIC)
            self.keys = {}
            self.by_kid = True
            self.remote = jwks.remote_keys(name, config)
        if config.introspection is not None:
            remote = self.remote
            configured = config.introspection.endpoint
            endpoint = (lambda: configured) if configured else (lambda: remote.introspection_endpoint if remote else None)
            self.introspector = Introspector(name, config.issuer, config.introspection, endpoint, config.leeway)
        self.options = {"require": ["exp", "iss", *(["aud"] if config.audience else [])]}

    async def key(self, header: dict[str, Any]) -> tuple[str, Any]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise BadCredentials(ERR_TOKEN.format(reason=_REASONS[jwt.InvalidAlgorithmError]))
        kid = header.get("kid")
        if self.remote is not None:
            if kid is not None and not isinstance(kid, str):
                raise BadCredentials(ERR_TOKEN.format(reason='its "kid" names no key of its issuer'))
            keyset = await self.remote.keyset(kid)
            if keyset is None and not self.remote.keys:
                raise BadCredentials(ERR_TOKEN.format(reason=ERR_KEYS_UNAVAILABLE))
        elif not self.by_kid or (kid is None and len(self.keys) == 1):
            keyset = next(iter(self.keys.values()))
        else:
            keyset = self.keys.get(kid) if isinstance(kid, str) else None
        if keyset is None:
            raise BadCredentials(ERR_TOKEN.format(reason='its "kid" names no key of its issuer'))
        if alg not in keyset:
            raise BadCredentials(ERR_TOKEN.format(reason='its "alg" does not fit the key its "kid" names'))
        return alg, keyset[alg]

    async def claims(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        alg, key = await self.key(header)
        config = self.config
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options=self.options,  # type: ignore[arg-type]
            )
        except jwt.MissingRequiredClaimError as exc:
            raise BadCredentials(ERR_TOKEN.format(reason=f'the "{exc.claim}" claim is missing')) from None
        except jwt.PyJWTError as exc:
            reason = next((text for kind, text in _REASONS.items() if isinstance(exc, kind)), "it could not be verified")
            raise BadCredentials(ERR_TOKEN.format(reason=reason)) from None

    def identity(self, claims: dict[str, Any]) -> tuple[str, frozenset[str]]:
        claim = self.config.identity_claim
        name = claims.get(claim)
        if not isinstance(name, str) or not TOKEN_IDENTITY.match(name):
            reason = f'its "{claim}" claim must be a printable ASCII string of at most 256 characters'
            raise BadCredentials(ERR_TOKEN.format(reason=reason))
        raw = claim_value(claims, self.config.roles_claim)
        if isinstance(raw, str):
            raw = raw.split()
        roles = frozenset(r for r in raw if isinstance(r, str) and ROLE.match(r)) if isinstance(raw, list) else frozenset()
        return name, roles

    async def introspected(self, token: str) -> dict[str, Any]:
        """An opaque token's claims from the issuer's introspection endpoint, held to the same audience rule."""
        assert self.introspector is not None
        claims = await self.introspector.claims(token)
        audience, aud = self.config.audience, claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if (audience is not None and audience not in auds) or (audience is None and auds):
            raise BadCredentials(ERR_TOKEN.format(reason=_REASONS[jwt.InvalidAudienceError]))
        if self.config.identity_claim == "sub" and "sub" not in claims and isinstance(claims.get("client_id"), str):
            # RFC 7662 answers for client-credentials tokens often carry no "sub": the client is the caller
            # (as in the JWT access tokens of RFC 9068, whose "sub" is then the client id).
            claims = {**claims, "sub": claims["client_id"]}
        return claims


class Issuers:
    """Issuers by their ``iss``, for one config (``configs``: ``[auth.jwt]``, name -> table)."""

    def __init__(self, configs: dict[str, Any]) -> None:
        self.by_iss = {config.issuer: Issuer(name, config) for name, config in configs.items()}
        self.opaque = next((issuer for issuer in self.by_iss.values() if issuer.introspector is not None), None)
        self.remote = [issuer.remote for issuer in self.by_iss.values() if issuer.remote is not None]

    def __bool__(self) -> bool:
        return bool(self.by_iss)

    def claimed(self, credentials: bytes) -> bytes:
        """The issuer and identity a token names, unverified (what its failures are counted under)."""
        if len(credentials) > MAX_TOKEN_BYTES:
            return b"?"
        try:
            unverified = jwt.decode(credentials.decode("ascii"), options={"verify_signature": False})
        except (jwt.PyJWTError, UnicodeDecodeError, ValueError):
            return b"?"
        iss = unverified.get("iss")
        issuer = self.by_iss.get(iss) if isinstance(iss, str) else None
        name = unverified.get(issuer.config.identity_claim if issuer else "sub")
        return f"{iss}\0{name}".encode("utf-8", "surrogatepass")

    async def identify(self, credentials: bytes) -> tuple[str, frozenset[str]]:
        if not credentials or len(credentials) > MAX_TOKEN_BYTES or not credentials.isascii():
            raise BadCredentials(ERR_TOKEN.format(reason=_REASONS[jwt.DecodeError]))
        token = credentials.decode("ascii")
        if self.opaque is not None and token.count(".") != 2:  # not a JWS: an opaque access token
            return self.opaque.identity(await self.opaque.introspected(token))
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise BadCredentials(ERR_TOKEN.format(reason=_REASONS[jwt.DecodeError])) from None
        iss = unverified.get("iss")
        issuer = self.by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise BadCredentials(ERR_TOKEN.format(reason='its "iss" claim names no configured issuer'))
        return issuer.identity(await issuer.claims(token, header))
