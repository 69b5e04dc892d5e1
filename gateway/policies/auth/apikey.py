"""API keys in ``X-API-Key``: the config holds only their SHA-256.

A key is 32 random bytes (``sgk_`` + URL-safe base64), so a fast hash is
right: nothing can be guessed from it, and a lookup costs one SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Iterable, Optional

from gateway.policies.auth.identity import BadCredentials

KEY_PREFIX = "sgk_"
HASH_PREFIX = "sha256:"
MAX_KEY_LENGTH = 256
_HASH = re.compile(r"^sha256:[0-9a-fA-F]{64}$")

ERR_BAD_KEY = "The API key is not valid."


def new_key() -> str:
    """A fresh key: shown once, stored nowhere."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str | bytes) -> str:
    """``"sha256:<hex>"`` of a key: the form ``api_keys`` holds."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return HASH_PREFIX + hashlib.sha256(raw).hexdigest()


def parse_hash(value: str) -> Optional[str]:
    """The normalised (lower-case) hash, or None when ``value`` is not ``sha256:<64 hex digits>``."""
    return value.lower() if _HASH.match(value) else None


def config_line(key: str) -> str:
    return f'api_keys = ["{hash_key(key)}"]'


class KeyIndex:
    """Consumer by key hash, built once per config."""

    def __init__(self, owners: Iterable[tuple[str, str]]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, str]] = {}
        for digest_text, consumer in owners:
            digest = bytes.fromhex(digest_text[len(HASH_PREFIX) :])
            self._by_digest[digest] = (digest, consumer)

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def consumer(self, presented: bytes) -> str:
        """The consumer owning the presented key; BadCredentials otherwise."""
        if not presented or len(presented) > MAX_KEY_LENGTH:
            raise BadCredentials(ERR_BAD_KEY)
        digest = hashlib.sha256(presented).digest()
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            raise BadCredentials(ERR_BAD_KEY)
        return entry[1]
