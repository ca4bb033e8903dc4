"""Per-account response cache: in-process by default, shared across workers through Redis.

Entries are the finished JSON bodies, keyed by route, account, a per-(route, account) generation
and the validated query parameters. Bumping a generation (the hook does it when it records an
activity) makes every older entry of that account and route unreachable; they then expire by TTL.
A cache that cannot be reached behaves as a miss and logs a warning: it never fails a request.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import typing as t
from collections import OrderedDict
from urllib.parse import quote

from .config import redis_nodes
from .replica import wal_position
from .storage import Backoff, client_options, is_redis, redact, redact_uri

logger = logging.getLogger(__name__)

PREFIX = "flowpilot_analytics:cache:v4"
#: How long (seconds) Redis keeps the WAL position a standby must reach; a standby further behind
#: than this is an outage, not lag.
POSITION_SECONDS = 600
#: Bound of the in-process cache, in bytes (keys and bodies counted), per process.
MAX_BYTES = 32 * 1024 * 1024


class _MemoryBackend:
    """A thread-safe dict with expiry for one process, bounded in bytes (keys and bodies counted).

    Entries are kept in the order they were stored; with one TTL that is also the order they expire
    in, so each store first frees the expired ones at the front, then the oldest until the bound
    holds.
    """

    #: What one entry costs besides its key and body objects: the tuple, the expiry float and the
    #: ordered dict's slot and link (measured with tracemalloc on CPython 3.11: ~146 bytes).
    OVERHEAD = 160

    def __init__(self, max_bytes: int) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._max = max_bytes
        self.bytes = 0

    def _size(self, key: str, value: bytes) -> int:
        return sys.getsizeof(key) + sys.getsizeof(value) + self.OVERHEAD

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= self._size(key, value)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                self._drop(key)
                return None
            return entry[1]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        size = self._size(key, value)
        if size > self._max:  # could never fit: keep what is there
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            now = time.monotonic()
            while self._entries:
                oldest, (expires, _) = next(iter(self._entries.items()))
                if expires > now and self.bytes + size <= self._max:
                    break
                self._drop(oldest)
            self._entries[key] = (now + ttl, value)
            self.bytes += size

    def __len__(self) -> int:
        return len(self._entries)

    def generation(self, key: str) -> int:
        with self._lock:
            return self._generations.get(key, 0)

    def bump(self, key: str, position: int | None = None) -> None:
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            if (
                position is not None
            ):  # the furthest change wins, whatever order the announcements came in
                self._positions[key] = max(position, self._positions.get(key, 0))

    def position(self, key: str) -> int | None:
        with self._lock:
            return self._positions.get(key)


def redis_client(uri: str) -> t.Any:
    """A Redis client for a checked ``CACHE_STORAGE_URI``: one server
    (``redis://``, ``rediss://``, ``redis+unix://``), the master a Sentinel names
    (``redis+sentinel://``, found again after a failover), or a Cluster
    (``redis+cluster://``); with :func:`~.storage.client_options`' short timeouts."""
    import redis

    options: dict[str, t.Any] = client_options(uri)  # redis-py's keywords, of several types
    kind = uri.partition("://")[0]
    if kind not in ("redis+sentinel", "redis+cluster"):
        return redis.Redis.from_url(uri.replace("redis+unix://", "unix://", 1), **options)
    read = redis_nodes(uri)
    auth = {
        key: value
        for key, value in (("username", read.username), ("password", read.password))
        if value
    }
    if kind == "redis+cluster":
        from redis import cluster

        node: t.Any = cluster.ClusterNode  # untyped in redis-py
        nodes = [node(host, port) for host, port in read.nodes]
        return cluster.RedisCluster(startup_nodes=nodes, **{**auth, **options})
    from redis import sentinel

    sentinels: t.Any = sentinel.Sentinel  # untyped in redis-py
    own = options.pop("sentinel_kwargs")
    found = sentinels(list(read.nodes), sentinel_kwargs={**auth, **own}, **auth, **options)
    return found.master_for(read.service)


class _RedisBackend:
    """The same four operations on Redis, so that every worker sees one cache."""

    def __init__(self, uri: str) -> None:
        self._redis = redis_client(uri)

    def get(self, key: str) -> bytes | None:
        return t.cast("bytes | None", self._redis.get(key))

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self._redis.set(key, value, ex=ttl)

    def generation(self, key: str) -> int:
        return int(self._redis.get(key) or 0)

    #: Keep the larger of the stored and the given position (atomically, whatever order workers
    #: announce in).
    _KEEP_MAX = (
        "local cur = redis.call('GET', KEYS[1]) "
        "if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then "
        "redis.call('SET', KEYS[1], ARGV[1]) end "
        "redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1"
    )

    def bump(self, key: str, position: int | None = None) -> None:
        self._redis.incr(key)
        if position is not None:
            self._redis.eval(
                self._KEEP_MAX, 1, f"{key}:position", str(position), str(POSITION_SECONDS)
            )

    def position(self, key: str) -> int | None:
        value = self._redis.get(f"{key}:position")
        return None if value is None else int(value)

    def ping(self) -> None:
        self._redis.ping()


class ResponseCache:
    """What the routes use: ``lookup`` / ``store`` bodies, ``invalidate`` an account's route."""

    def __init__(
        self, ttl: int, storage_uri: str, namespace: str = "", max_bytes: int = MAX_BYTES
    ) -> None:
        self.ttl = int(ttl)
        self.max_bytes = max_bytes
        self.storage_uri = storage_uri
        #: Separates apps sharing one Redis: derived from
        #: what changes the answers (database, mapping...).
        self.namespace = namespace
        self._backend: _MemoryBackend | _RedisBackend | None = None
        #: After a storage failure, requests are answered uncached for ``backoff.interval`` seconds.
        self.backoff = Backoff()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and not self.backoff.down

    def _failed(self, exc: Exception, what: str) -> None:
        self.backoff.failed()
        logger.warning(
            "response cache unavailable at %s (%s); %s",
            redact_uri(self.storage_uri),
            redact(str(exc), self.storage_uri),
            what,
        )

    @property
    def backend(self) -> _MemoryBackend | _RedisBackend:
        if self._backend is None:
            self._backend = (
                _RedisBackend(self.storage_uri)
                if is_redis(self.storage_uri)
                else _MemoryBackend(self.max_bytes)
            )
        return self._backend

    def ping(self) -> None:
        """Send the shared storage a PING through the cache's own client (and its short timeouts);
        raises the client's error when it does not answer. The in-process storage has nothing to
        reach: nothing is sent."""
        backend = self.backend
        if isinstance(backend, _RedisBackend):
            backend.ping()

    def _generation_key(self, route: str, account_id: object) -> str:
        return f"{PREFIX}:{self.namespace}:gen:{route}:{quote(str(account_id), safe='')}"

    def key(self, route: str, account_id: object, params: t.Mapping[str, object]) -> str | None:
        """The entry's key, or ``None`` when the cache is off or unreachable."""
        if not self.enabled:
            return None
        try:
            generation = self.backend.generation(self._generation_key(route, account_id))
        except Exception as exc:
            self._failed(exc, "answering uncached")
            return None
        query = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
        return (
            f"{PREFIX}:{self.namespace}:{route}:{quote(str(account_id), safe='')}:"
            f"{generation}:{query}"
        )

    def lookup(self, key: str | None) -> bytes | None:
        if key is None:
            return None
        try:
            return self.backend.get(key)
        except Exception as exc:
            self._failed(exc, "answering uncached")
            return None

    def store(self, key: str | None, body: bytes) -> None:
        if key is None:
            return
        try:
            self.backend.set(key, body, self.ttl)
        except Exception as exc:
            self._failed(exc, "entry not stored")

    def invalidate(self, route: str, account_id: object, position: str | None = None) -> None:
        """Make the account's cached answers for ``route`` unreachable (e.g. after a new activity).
        With the primary's WAL ``position`` of the change, answers read from a standby that has not
        replayed it yet are not cached (see :meth:`required_position`)."""
        if not self.enabled:
            return
        try:
            self.backend.bump(
                self._generation_key(route, account_id),
                None if position is None else wal_position(position),
            )
        except Exception as exc:
            self._failed(exc, "could not invalidate")

    def required_position(self, route: str, account_id: object) -> int | None:
        """The WAL position a standby must have replayed for its answer to be cached, if any."""
        if not self.enabled:
            return None
        try:
            return self.backend.position(self._generation_key(route, account_id))
        except Exception as exc:
            self._failed(exc, "answering uncached")
            return None
