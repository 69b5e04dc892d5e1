"""HTTP Basic against argon2 or bcrypt hashes: slow on purpose, so done off the event loop.

Verifications run on a pool of their own (``VERIFY_THREADS``, at most
``VERIFY_QUEUE`` waiting, 503 ``auth_busy`` beyond), never a stack's thread. An
unknown user is checked against a dummy hash, so it takes as long. A success is
remembered ``[auth] basic_cache_ttl`` seconds, keyed by an HMAC of the password
(docs/auth.md, "Credentials").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

import argon2
import bcrypt

from gateway import metrics
from gateway.errors import GatewayError
from gateway.policies.auth.identity import BadCredentials


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


VERIFY_THREADS = max(1, min(4, _cores() // 2))
"""Password verifications running at once in a process."""
VERIFY_QUEUE = 8 * VERIFY_THREADS
"""Verifications that may wait for a thread; beyond them a request gets 503 ``auth_busy``."""
MAX_PASSWORD_BYTES = 1024
ERR_MALFORMED = 'HTTP Basic credentials must be "Basic " followed by the base64 of "user:password".'
ERR_BAD_PASSWORD = "Unknown user or wrong password."
ERR_BUSY = "Too many password checks are in progress; retry shortly."

_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_HASHER = argon2.PasswordHasher()
_PROCESS_KEY = secrets.token_bytes(32)
_executor: Optional[ThreadPoolExecutor] = None
_executor_lock = threading.Lock()
_in_pool = 0
"""Verifications running or waiting (under ``_executor_lock``)."""


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


def cost_of(stored: str) -> tuple[Any, ...]:
    """What a verification against ``stored`` costs: its algorithm and parameters, not its salt or digest."""
    if stored.startswith("$argon2"):
        p = argon2.extract_parameters(stored)
        return ("argon2", p.type, p.version, p.salt_len, p.hash_len, p.time_cost, p.memory_cost, p.parallelism)
    return ("bcrypt", int(stored[4:6]))  # "$2b$12$...": its rounds


def dummy_like(stored: str) -> str:
    """A hash that matches no password and costs as much to verify as ``stored`` (random salt and digest)."""
    if stored.startswith("$argon2"):
        p = argon2.extract_parameters(stored)
        salt = base64.b64encode(secrets.token_bytes(p.salt_len)).decode().rstrip("=")
        digest = base64.b64encode(secrets.token_bytes(p.hash_len)).decode().rstrip("=")
        return f"{stored[:stored.index('$', 1) + 1]}v={p.version}$m={p.memory_cost},t={p.time_cost},p={p.parallelism}${salt}${digest}"
    salt = bcrypt.gensalt(rounds=int(stored[4:6])).decode()
    return salt + "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31))


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


def _release(_: Future) -> None:
    global _in_pool
    with _executor_lock:
        _in_pool -= 1


async def run_verification(fn: Callable[..., bool], *args: Any) -> bool:
    """``fn(*args)`` on the password pool; 503 ``auth_busy`` when the pool and its queue are full."""
    global _in_pool
    pool = _pool()
    with _executor_lock:
        if _in_pool >= VERIFY_THREADS + VERIFY_QUEUE:
            busy = True
        else:
            busy = False
            _in_pool += 1
    if busy:
        metrics.AUTH_PASSWORD_CHECKS.labels("busy").inc()
        raise GatewayError(503, "auth_busy", ERR_BUSY, [(b"retry-after", b"1")])
    future = pool.submit(fn, *args)
    future.add_done_callback(_release)  # also when cancelled before it ran
    return await asyncio.wrap_future(future)


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
    """Consumer by HTTP Basic user name and password, for one config."""

    def __init__(self, hashes: dict[str, str], ttl: float, size: int) -> None:
        self.hashes = hashes
        self.cache = VerifiedCache(ttl, size)
        costs = Counter(cost_of(stored) for stored in hashes.values())
        common = costs.most_common(1)[0][0] if costs else None
        template = next((stored for stored in hashes.values() if cost_of(stored) == common), None)
        self.unknown_user_hash = dummy_like(template) if template else ""
        """Verified against for names without a password: the costs most of the configured hashes use."""
        self._running: dict[tuple[str, str, bytes], asyncio.Future[None]] = {}

    def __bool__(self) -> bool:
        return bool(self.hashes)

    async def consumer(self, name: str, password: bytes, reserve: Callable[[], Any] = lambda: _UNRESERVED) -> str:
        """``name`` when ``password`` is its password; BadCredentials otherwise (unknown names included).

        A hash is verified under ``reserve()`` (``guard.Reservation``: ended by ``failed()`` or
        ``release()``), in a task of its own: a client that goes away stops neither the check
        nor the count of its failure. Requests with the same credentials while it runs wait
        for its result instead of running another.
        """
        stored = self.hashes.get(name)
        key = self.cache.key(name, stored or self.unknown_user_hash, password)
        if stored is not None and self.cache.hit(key):
            return name
        running = self._running.get(key)
        if running is None:
            reservation = reserve()
            running = self._running[key] = asyncio.ensure_future(self._verify(key, stored, password, reservation))
            running.add_done_callback(functools.partial(self._done, key, reservation))
        await asyncio.shield(running)
        return name

    async def _verify(self, key: tuple[str, str, bytes], stored: Optional[str], password: bytes, reservation: Any) -> None:
        ok = await run_verification(verify, stored or self.unknown_user_hash, password) and stored is not None
        metrics.AUTH_PASSWORD_CHECKS.labels("ok" if ok else "failed").inc()
        if not ok:
            await reservation.failed()
            raise BadCredentials(ERR_BAD_PASSWORD)
        self.cache.add(key)
        reservation.release()

    def _done(self, key: tuple[str, str, bytes], reservation: Any, task: asyncio.Future) -> None:
        self._running.pop(key, None)
        reservation.release()  # when the check never ended itself (busy, or cancelled at shutdown)
        if not task.cancelled():
            task.exception()  # retrieved: every request waiting for it may be gone


class _Unreserved:
    async def failed(self) -> None:
        pass

    def release(self) -> None:
        pass


_UNRESERVED = _Unreserved()
