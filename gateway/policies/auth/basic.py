"""HTTP Basic against argon2 or bcrypt hashes: slow on purpose, so done off the event loop.

Verifications run on a small pool of their own (argon2's default costs
64 MiB per verification: the pool bounds that memory, and a flood of wrong
passwords never takes the threads other work needs). A successful
verification is remembered for ``[auth] basic_cache_ttl`` seconds, keyed by
(consumer, stored hash, HMAC of the password with a key made at process
start), so a client repeating the same credentials costs one HMAC — and a
changed password hash in the config invalidates what was remembered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import argon2
import bcrypt

from gateway.policies.auth.identity import BadCredentials

VERIFY_THREADS = 4
MAX_PASSWORD_BYTES = 1024
ERR_MALFORMED = 'HTTP Basic credentials must be "Basic " followed by the base64 of "user:password".'
ERR_BAD_PASSWORD = "Unknown user or wrong password."

_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_HASHER = argon2.PasswordHasher()
#: Verified against for unknown users, so that they take as long as wrong passwords.
_UNKNOWN_USER_HASH = "$argon2id$v=19$m=65536,t=3,p=4$KHkBTSP2UD4++vZp1QerqA$OM4Nj6p/4v+Crt68pLUSLUrr+vz89dQTadjo1VO2dKM"
_PROCESS_KEY = secrets.token_bytes(32)
_executor: Optional[ThreadPoolExecutor] = None
_executor_lock = threading.Lock()


def hash_password(password: str) -> str:
    """The argon2id hash ``password = "..."`` holds (argon2-cffi's default costs)."""
    return _HASHER.hash(password)


def config_line(password: str) -> str:
    return f'password = "{hash_password(password)}"'


def is_password_hash(value: str) -> bool:
    if value.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        try:
            argon2.extract_parameters(value)
        except argon2.exceptions.InvalidHashError:
            return False
        return True
    return bool(_BCRYPT.match(value))


def verify(stored: str, password: bytes) -> bool:
    """Blocking: whether ``password`` matches the stored hash."""
    if stored.startswith("$argon2"):
        try:
            return _HASHER.verify(stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    try:
        return bcrypt.checkpw(password, stored.encode("ascii"))
    except ValueError:  # bcrypt refuses passwords over 72 bytes
        return False


def parse(credentials: bytes) -> tuple[str, bytes]:
    """``base64("user:password")`` -> (user, password); BadCredentials when it is not that."""
    try:
        decoded = base64.b64decode(credentials, validate=True)
        user, sep, password = decoded.partition(b":")
        name = user.decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadCredentials(ERR_MALFORMED) from None
    if not sep or not name or len(password) > MAX_PASSWORD_BYTES:
        raise BadCredentials(ERR_MALFORMED)
    return name, password


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="stackgate-basic")
        return _executor


class VerifiedCache:
    """Recent successful verifications: bounded (LRU), each for ``ttl`` seconds."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size if ttl > 0 else 0
        self._entries: OrderedDict[tuple[str, str, bytes], float] = OrderedDict()

    @staticmethod
    def key(consumer: str, stored: str, password: bytes) -> tuple[str, str, bytes]:
        return consumer, stored, hmac.new(_PROCESS_KEY, password, hashlib.sha256).digest()

    def hit(self, key: tuple[str, str, bytes]) -> bool:
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires <= time.monotonic():
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def add(self, key: tuple[str, str, bytes]) -> None:
        if self.size <= 0:
            return
        self._entries[key] = time.monotonic() + self.ttl
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class BasicVerifier:
    """Consumer by HTTP Basic credentials, for one config."""

    def __init__(self, hashes: dict[str, str], ttl: float, size: int) -> None:
        self.hashes = hashes
        self.cache = VerifiedCache(ttl, size)

    def __bool__(self) -> bool:
        return bool(self.hashes)

    async def consumer(self, credentials: bytes) -> str:
        name, password = parse(credentials)
        stored = self.hashes.get(name)
        loop = asyncio.get_running_loop()
        if stored is None:
            await loop.run_in_executor(_pool(), verify, _UNKNOWN_USER_HASH, password)
            raise BadCredentials(ERR_BAD_PASSWORD)
        key = self.cache.key(name, stored, password)
        if self.cache.hit(key):
            return name
        if not await loop.run_in_executor(_pool(), verify, stored, password):
            raise BadCredentials(ERR_BAD_PASSWORD)
        self.cache.add(key)
        return name
