"""A real OpenID provider on loopback: the npm package oidc-provider, run by ``provider.mjs``.

``scripts/setup --dev`` installs it (``npm ci`` here) with Debian's Node.js
(``scripts/system-packages``). ``OidcProvider`` starts it on a free port, asks
it for client-credentials tokens, revokes them, and rotates its signing keys.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional

import httpx

from tests.services import free_port, wait_for_port

HERE = Path(__file__).resolve().parent
RESOURCE = "https://api.stackgate.test"
CLIENTS = {
    "svc-jwt": "svc-jwt-secret-for-tests-only-0123456789",
    "svc-opaque": "svc-opaque-secret-for-tests-only-0123456789",
    "gateway": "gateway-secret-for-tests-only-0123456789",
}


def unavailable() -> Optional[str]:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed: run scripts/system-packages (Debian's nodejs and npm)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider is not installed in tests/oidc: run scripts/setup --dev"
    return None


class OidcProvider:
    """``node provider.mjs PORT``; ``stop()`` and ``start()`` make an outage (same port, same issuer, new keys)."""

    def __init__(self, log_path: Path, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "OidcProvider":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["node", str(HERE / "provider.mjs"), str(self.port)], cwd=HERE, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, timeout=60, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def token(self, client: str = "svc-jwt") -> str:
        """A client-credentials access token: a JWT for svc-jwt, an opaque string for svc-opaque."""
        response = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "resource": RESOURCE, "scope": "todos:read"},
            auth=(client, CLIENTS[client]),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def revoke(self, token: str, client: str = "svc-opaque") -> None:
        response = httpx.post(f"{self.issuer}/token/revocation", data={"token": token}, auth=(client, CLIENTS[client]), timeout=30)
        assert response.status_code == 200, response.text

    def rotate(self, keep: bool) -> list[str]:
        """A new signing key; the old ones stay published with ``keep``. The key ids, newest first."""
        response = httpx.post(f"{self.issuer}/admin/rotate", params={"keep": "1" if keep else "0"}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["kids"]

    def jwks(self) -> dict:
        return httpx.get(f"{self.issuer}/jwks", timeout=30).json()
