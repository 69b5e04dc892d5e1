"""Where a deployment's one rollout state and its per-step figures live.

``RedisStore`` when ``[throttle] storage`` is Redis (every worker and host
shares it): the state is one JSON value replaced by a compare-and-set script on
its ``version``, figures are hashes summed with ``HINCRBY``, and the decider
holds a short lease (``SET NX PX``). When the primary has replicas (Sentinel,
Cluster, any replicated Redis), a state write returns only once one replica
acknowledged it (``WAIT``), so a failover does not lose a transition the
deployment has already acted on. ``FileStore`` otherwise: one JSON file
beside the config (``NAME.rollout.json``), changed under an ``fcntl`` lock and
replaced atomically, for the workers of one host. Calls block: the manager
runs them in a thread, the CLI directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

logger = logging.getLogger("stackgate.rollout")

REPLICA_WAIT_MS = 1000
"""How long a state write waits for a replica's acknowledgement (Redis with replicas) before it goes on without."""
WINDOW_TTL_SECONDS = 7 * 24 * 3600
"""Figures of a step window are kept this long after their last update (Redis)."""
KEEP_WINDOWS = 8
"""Windows kept per route in the file store (the newest)."""

_CAS = """
local current = redis.call('get', KEYS[1])
local version = 0
if current then version = tonumber(cjson.decode(current)['version']) or 0 end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('set', KEYS[1], ARGV[2])
return 1
"""
_LEASE = """
local holder = redis.call('get', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class StoreError(Exception):
    """The state store cannot be reached or read."""


class RedisStore:
    def __init__(self, url: str, prefix: str = "stackgate") -> None:
        self.url = url
        self.prefix = prefix
        self.where = "redis " + url.partition("://")[2].rpartition("@")[2]
        """Where the state is, for messages: host, port and database, never the credentials."""
        self._client: Any = None
        self._pid = 0

    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():  # never share a connection across a fork
            self._client, self._pid = _redis_client(self.url), os.getpid()
        return self._client

    def _key(self, route: str, part: str) -> str:
        return f"{self.prefix}:rollout:{{{route}}}:{part}"  # one hash tag per route (Cluster)

    def _call(self, fn: Any) -> Any:
        import redis

        try:
            return fn(self.client())
        except redis.RedisError as exc:
            self._client = None
            raise StoreError(f"{self.where}: {exc}") from None

    def load(self, route: str) -> Optional[dict]:
        raw = self._call(lambda c: c.get(self._key(route, "state")))
        return json.loads(raw) if raw else None

    def save(self, route: str, expected_version: int, state: dict) -> bool:
        """Compare-and-set on ``version``; with replicas, wait (``REPLICA_WAIT_MS`` at most) until one has the write.

        Redis replicates asynchronously: a write the primary acknowledged but had not yet sent on is lost
        if the primary dies and a replica takes over. ``WAIT 1`` on the connection that wrote closes that
        gap for the state (figures and the lease are not waited for). Without replicas, no wait.
        """
        key = self._key(route, "state")
        body = json.dumps(state, separators=(",", ":"))

        def run(client: Any) -> tuple[bool, Optional[int]]:
            node = _primary_for(client, key)
            if not int(node.info("replication").get("connected_slaves", 0)):
                return bool(node.eval(_CAS, 1, key, expected_version, body)), None
            pipe = node.pipeline(transaction=False)  # one connection: WAIT waits for this connection's writes
            pipe.eval(_CAS, 1, key, expected_version, body)
            pipe.wait(1, REPLICA_WAIT_MS)
            saved, acknowledged = pipe.execute()
            return bool(saved), int(acknowledged)

        saved, acknowledged = self._call(run)
        if saved and acknowledged == 0:
            logger.warning(
                f"rollout state of route {route} (version {state.get('version')}) written on the primary of {self.where}, "
                f"not acknowledged by a replica within {REPLICA_WAIT_MS} ms: a failover now may lose it "
                "(every gateway worker that read it writes it back)",
                extra={"route": route, "store": self.where},
            )
        return saved

    def add(self, route: str, windows: dict[str, dict[str, int]]) -> None:
        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for window, figures in windows.items():
                key = self._key(route, "w:" + window)
                for name, amount in figures.items():
                    pipe.hincrby(key, name, amount)
                pipe.expire(key, WINDOW_TTL_SECONDS)
            pipe.execute()

        if windows:
            self._call(run)

    def figures(self, route: str, window: str) -> dict[str, int]:
        raw = self._call(lambda c: c.hgetall(self._key(route, "w:" + window)))
        return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}

    def lease(self, route: str, owner: str, seconds: float) -> bool:
        return bool(self._call(lambda c: c.eval(_LEASE, 1, self._key(route, "lease"), owner, int(seconds * 1000))))


def _primary_for(client: Any, key: str) -> Any:
    """A client of the one server that holds ``key``: in a Cluster, the primary of its slot; else ``client``."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


def _redis_client(url: str) -> Any:
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    timeouts = dict(socket_timeout=2.0, socket_connect_timeout=2.0)
    scheme, _, rest = url.partition("://")
    if scheme in ("redis+sentinel", "redis+cluster"):
        auth, _, rest = rest.rpartition("@")
        hosts, _, path = rest.partition("/")
        nodes = [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in hosts.split(",")]
        password = auth.partition(":")[2] or None
        if scheme == "redis+sentinel":
            service = path.strip("/").split("/")[0]
            return Sentinel(nodes, sentinel_kwargs=timeouts, password=password, **timeouts).master_for(service)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], password=password, **timeouts)
    return redis.Redis.from_url(url.replace("redis+unix://", "unix://", 1), **timeouts)


class FileStore:
    """One JSON file for every route of one host's gateway, beside its config."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.where = f"file {self.path}"

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"routes": {}}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.where}: {exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The whole file, to change in place; written back atomically on exit."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.where}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            yield data
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
            with os.fdopen(handle, "w") as out:
                json.dump(data, out, separators=(",", ":"))
            os.replace(temporary, self.path)
        finally:
            os.close(fd)

    def _route(self, data: dict, route: str) -> dict:
        return data.setdefault("routes", {}).setdefault(route, {"state": None, "windows": {}, "lease": None})

    def load(self, route: str) -> Optional[dict]:
        return self._read().get("routes", {}).get(route, {}).get("state")

    def save(self, route: str, expected_version: int, state: dict) -> bool:
        with self._locked() as data:
            entry = self._route(data, route)
            current = entry["state"]["version"] if entry.get("state") else 0
            if current != expected_version:
                return False
            entry["state"] = state
            return True

    def add(self, route: str, windows: dict[str, dict[str, int]]) -> None:
        if not windows:
            return
        with self._locked() as data:
            kept = self._route(data, route)["windows"]
            for window, figures in windows.items():
                summed = kept.pop(window, {})  # re-inserted last: the newest stay
                for name, amount in figures.items():
                    summed[name] = summed.get(name, 0) + amount
                kept[window] = summed
            for old in list(kept)[:-KEEP_WINDOWS]:
                del kept[old]

    def figures(self, route: str, window: str) -> dict[str, int]:
        return dict(self._read().get("routes", {}).get(route, {}).get("windows", {}).get(window, {}))

    def lease(self, route: str, owner: str, seconds: float) -> bool:
        with self._locked() as data:
            entry = self._route(data, route)
            holder = entry.get("lease")
            now = time.time()
            if holder and holder[0] != owner and holder[1] > now:
                return False
            entry["lease"] = [owner, now + seconds]
            return True


def file_path(config_source: str) -> Path:
    """``NAME.rollout.json`` beside the config file ``NAME.toml``."""
    source = Path(config_source)
    return source.with_name(source.stem + ".rollout.json")


def store_for(config: Any) -> Any:
    """The store the config points at: Redis when ``[throttle] storage`` is Redis, else the file beside it."""
    throttle = config.throttle
    if throttle.storage != "memory://":
        return RedisStore(throttle.storage, throttle.key_prefix)
    source = config.source if config.source != "<memory>" else os.path.join(os.getcwd(), "config.toml")
    return FileStore(file_path(source))
