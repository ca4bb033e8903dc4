"""Every ``FLOWPILOT_ANALYTICS_*`` setting: its name, its default, and :class:`Settings`, the typed, frozen
value built once per app at ``init_app`` (validated, normalised) that every module reads settings from.

The configuration docs are generated from :data:`SETTINGS`, so the names, defaults and meanings are
written once, here.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import re
import typing as t
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

import limits
import limits.storage

PREFIX = "FLOWPILOT_ANALYTICS_"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One ``FLOWPILOT_ANALYTICS_*`` key: its default and what it means (for the docs)."""

    key: str
    default: t.Any
    doc: str


#: Logical table name -> the host's default table name.
DEFAULT_TABLES: Mapping[str, str] = MappingProxyType(
    {"sessions": "ai_sessions", "steps": "ai_session_steps", "handoffs": "session_handoffs"}
)
#: The columns the plugin reads from each host table (logical names).
HOST_COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "sessions": ("id", "account_id", "created_at", "psa_ticket_id"),
        "steps": ("id", "account_id", "session_id", "created_at"),
        "handoffs": ("id", "account_id", "session_id", "created_at", "claimed_at"),
    }
)
#: Columns used only by optional features, read when the host has them (``group_by=engineer``).
OPTIONAL_HOST_COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType({"handoffs": ("claimed_by",)})
#: Each report route's minimum role by default.
DEFAULT_ROUTE_ROLES: Mapping[str, str] = MappingProxyType({"escalations": "engineer", "psa_metrics": "team_admin"})
DEAD_LETTER_FILENAME = "flowpilot_analytics_dead_letters.jsonl"
ID_TYPES = ("integer", "string", "uuid")
#: What ``CACHE_STORAGE_URI`` may name: process memory, or Redis (a server, over TLS, on a socket, through
#: Sentinel, or a Cluster), each spoken by the plugin's own client.
CACHE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_NOT_A_URI = "is not a URI of the form scheme://…"

SETTINGS: tuple[Setting, ...] = (
    Setting("URL_PREFIX", "/api/v1", "Where the blueprint mounts; routes live under `<prefix>/analytics/flowpilot/`."),
    Setting(
        "CLOCK_SKEW_SECONDS",
        0,
        "A step up to this many seconds *before* the claim still counts as the first action (its delta floors "
        "at 0); 0-86400.",
    ),
    Setting("ROLES", ("viewer", "engineer", "team_admin", "admin"), "The role ladder, lowest first."),
    Setting(
        "ROUTE_ROLES",
        {},
        "Minimum role per route, merged over `escalations: engineer`, `psa_metrics: team_admin` (the drill-down "
        "and the trend follow `escalations`).",
    ),
    Setting(
        "TABLES",
        {},
        "Host table names, merged over `sessions: ai_sessions`, `steps: ai_session_steps`, "
        "`handoffs: session_handoffs`; `schema.table` works.",
    ),
    Setting("COLUMNS", {}, 'Host column names as `{"<table>.<column>": "name"}`.'),
    Setting("PSA_METRICS_LIMIT", "15 per minute", "Per-user rate limit of psa-metrics (`limits` notation)."),
    Setting("ESCALATIONS_LIMIT", "120 per minute", "Per-user rate limit of escalations."),
    Setting("HANDOFFS_LIMIT", "120 per minute", "Per-user rate limit of the drill-down (JSON and CSV)."),
    Setting(
        "RATELIMIT_STORAGE_URI",
        None,
        "Storage of the plugin's limiter: any URI of a synchronous storage of the `limits` package whose client "
        "is installed (`memory://`, `redis://…`, `rediss://…`, `redis+unix://…`, `redis+sentinel://…`, "
        "`redis+cluster://…`, `memcached://…`, `mongodb://…`); `None` uses the host's `RATELIMIT_STORAGE_URI`, "
        "then `memory://`. Anything else stops `init_app`.",
    ),
    Setting("CACHE_TTL", 60, "Seconds an answer is reused for the same account and parameters; `0` turns caching off."),
    Setting(
        "CACHE_STORAGE_URI",
        "memory://",
        "Where cached answers live: `memory://` (per process) or, shared by every worker, `redis://…`, "
        "`rediss://…`, `redis+unix:///path.sock`, `redis+sentinel://[[user]:password@]host:port[,…]/service` or "
        "`redis+cluster://[[user]:password@]host:port[,…]`. Any other URI stops `init_app`.",
    ),
    Setting("CACHE_MAX_BYTES", 32 * 1024 * 1024, "Bound of the in-process cache in bytes, per process."),
    Setting("VARY_HEADERS", ("Authorization", "Cookie"), "Request headers that carry credentials, named in `Vary`."),
    Setting(
        "CURSOR_SECRET",
        None,
        "Key that signs drill-down cursors; `None` uses the app's `SECRET_KEY` (one of the two is required), "
        "and then cursors signed with a key of `SECRET_KEY_FALLBACKS` are accepted too (key rotation).",
    ),
    Setting(
        "CURSOR_MAX_AGE",
        86400,
        "Seconds a drill-down `next_cursor` stays valid after it was issued; an older one is a 400 that says it "
        "expired (start again from the first page).",
    ),
    Setting(
        "HOOK_TIMEOUT_MS",
        250,
        "Longest a push waits for its activity to be recorded, in milliseconds; past it the activity is dead-lettered.",
    ),
    Setting("BIND", None, "`SQLALCHEMY_BINDS` key analytics reads go to (a read replica); `None` reads the primary."),
    Setting(
        "DEAD_LETTER_PATH",
        None,
        "JSON-lines file for activities the hook could not write; `None` = "
        f"`<instance folder>/{DEAD_LETTER_FILENAME}`.",
    ),
    Setting(
        "DEAD_LETTER_TABLE",
        None,
        "Keep dead letters in this table (created by `db.create_all()`) instead of the file; `None` = the file.",
    ),
    Setting(
        "BUCKET_EDGES_SECONDS",
        (60, 300, 900, 3600, 14400),
        "Edges of the escalation `distribution` buckets, increasing seconds.",
    ),
    Setting("MAX_RANGE_DAYS", 366, "Longest `since`/`until` range, in days."),
    Setting(
        "TARGET_SECONDS",
        None,
        "Response target, in seconds from claim to first action (at most 7 days), reported as `target` on the "
        "escalation reports when a request gives no `target_seconds`; `None` = no target.",
    ),
    Setting(
        "TENANT_SETTING",
        None,
        "PostgreSQL setting (e.g. `app.current_account_id`) set transaction-locally to the account before every "
        "plugin read and write (row-level security); `None` = off.",
    ),
    Setting("ACTIVITY_TABLE", "psa_activity_logs", "Name of the table the plugin owns."),
    Setting("ID_TYPE", "integer", "Type of `account_id`/`session_id` in that table: `integer`, `string` or `uuid`."),
)
DEFAULTS: Mapping[str, t.Any] = MappingProxyType({PREFIX + s.key: s.default for s in SETTINGS})

#: Keys earlier versions read, and what replaces each: a host that still sets one gets a startup error.
REMOVED: Mapping[str, str] = MappingProxyType(
    {
        PREFIX + "PSA_SERVICE_METHODS": "pass methods= to analytics.wrap_psa_service(service, methods={...}) instead",
        PREFIX + "SQLITE_TEXT_OFFSETS": (
            "SQLite timestamps are always compared as the UTC text SQLAlchemy's DateTime writes; store "
            "timestamps through SQLAlchemy (naive UTC or aware) and remove the setting"
        ),
    }
)


def settings_table() -> str:
    """The configuration reference as a Markdown table (the docs are generated from :data:`SETTINGS`)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        rows.append(f"| `{PREFIX}{setting.key}` | `{setting.default!r}` | {setting.doc} |")
    return "\n".join(rows) + "\n"


def apply_defaults(config: t.MutableMapping[str, t.Any]) -> None:
    """Fill every unset key with a copy of its default, as Flask extensions do (no two apps share one object)."""
    for key, default in DEFAULTS.items():
        config.setdefault(key, copy.deepcopy(default))


def _key(name: str) -> str:
    return PREFIX + name


def _is_number(value: t.Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _whole(config: Mapping[str, t.Any], name: str, minimum: int) -> int:
    value = config[_key(name)]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{_key(name)} must be a whole number >= {minimum}, got {value!r}")
    return value


def _limit(config: Mapping[str, t.Any], name: str) -> str:
    value = config[_key(name)]
    try:
        limits.parse(value)
    except (ValueError, TypeError):
        raise ValueError(f"{_key(name)} = {value!r} is not a rate limit such as '15 per minute'") from None
    return str(value)


def _optional_text(config: Mapping[str, t.Any], name: str) -> str | None:
    value = config[_key(name)]
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{_key(name)} must be a non-empty string or None, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    """One app's settings, checked and normalised; the only way the plugin reads its configuration."""

    url_prefix: str
    clock_skew_seconds: float
    roles: tuple[str, ...]
    route_roles: Mapping[str, str]
    tables: Mapping[str, str]
    columns: Mapping[str, str]
    psa_metrics_limit: str
    escalations_limit: str
    handoffs_limit: str
    ratelimit_storage_uri: str
    cache_ttl: int
    cache_storage_uri: str
    cache_max_bytes: int
    vary_headers: tuple[str, ...]
    cursor_secret: str | bytes = dataclasses.field(repr=False)
    #: Older keys that still verify cursors (``SECRET_KEY_FALLBACKS`` when ``cursor_secret`` is ``SECRET_KEY``).
    cursor_fallbacks: tuple[str | bytes, ...] = dataclasses.field(repr=False)
    cursor_max_age: int
    hook_timeout_ms: int
    bind: str | None
    dead_letter_path: str
    dead_letter_table: str | None
    bucket_edges: tuple[float, ...]
    max_range_days: int
    target_seconds: float | None
    tenant_setting: str | None
    activity_table: str
    id_type: str

    @classmethod
    def from_config(cls, config: Mapping[str, t.Any], instance_path: str = ".") -> Settings:
        """Read every key (the defaults deep-copied for unset ones) and refuse what would only fail later."""
        removed = [f"{key}: {why}" for key, why in REMOVED.items() if key in config]
        if removed:
            raise ValueError("Settings that no longer exist: " + "; ".join(removed))
        values = {
            key: copy.deepcopy(config[key]) if key in config else copy.deepcopy(default)
            for key, default in DEFAULTS.items()
        }
        checked: dict[str, t.Any] = {
            "url_prefix": _url_prefix(values),
            "clock_skew_seconds": _skew(values),
            "roles": (roles := _roles(values)),
            "route_roles": _route_roles(values, roles),
            "tables": _tables(values),
            "columns": _columns(values),
            "psa_metrics_limit": _limit(values, "PSA_METRICS_LIMIT"),
            "escalations_limit": _limit(values, "ESCALATIONS_LIMIT"),
            "handoffs_limit": _limit(values, "HANDOFFS_LIMIT"),
            "ratelimit_storage_uri": _ratelimit_uri(values, config),
            "cache_ttl": _whole(values, "CACHE_TTL", 0),
            "cache_storage_uri": _cache_uri(values),
            "cache_max_bytes": _whole(values, "CACHE_MAX_BYTES", 1),
            "vary_headers": _vary(values),
            "cursor_max_age": _whole(values, "CURSOR_MAX_AGE", 1),
            "hook_timeout_ms": _whole(values, "HOOK_TIMEOUT_MS", 1),
            "bind": _bind(values, config),
            "dead_letter_path": _optional_text(values, "DEAD_LETTER_PATH")
            or os.path.join(instance_path, DEAD_LETTER_FILENAME),
            "dead_letter_table": _optional_text(values, "DEAD_LETTER_TABLE"),
            "bucket_edges": _edges(values),
            "max_range_days": _whole(values, "MAX_RANGE_DAYS", 1),
            "target_seconds": _target(values),
            "tenant_setting": _tenant(values),
            "activity_table": _optional_text(values, "ACTIVITY_TABLE") or "psa_activity_logs",
            "id_type": _id_type(values),
        }
        secret, fallbacks = _secret(values, config)  # last: other mistakes are named first
        return cls(**checked, cursor_secret=secret, cursor_fallbacks=fallbacks)

    def host_column(self, table: str, column: str) -> str:
        """The host's name for a logical column."""
        return self.columns.get(f"{table}.{column}", column)


def _url_prefix(values: Mapping[str, t.Any]) -> str:
    prefix = values[_key("URL_PREFIX")]
    if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
        raise ValueError(f"{_key('URL_PREFIX')} must be a path starting with '/', got {prefix!r}")
    return prefix


def _skew(values: Mapping[str, t.Any]) -> float:
    skew = values[_key("CLOCK_SKEW_SECONDS")]
    if not _is_number(skew) or not 0 <= skew <= 86400:
        raise ValueError(f"{_key('CLOCK_SKEW_SECONDS')} must be a number of seconds from 0 to 86400")
    return float(skew)


def _roles(values: Mapping[str, t.Any]) -> tuple[str, ...]:
    roles = values[_key("ROLES")]
    if (
        isinstance(roles, str)
        or not roles
        or len(set(roles)) != len(roles)
        or not all(isinstance(r, str) for r in roles)
    ):
        raise ValueError(f"{_key('ROLES')} must be a non-empty list of distinct role names")
    return tuple(roles)


def _route_roles(values: Mapping[str, t.Any], roles: tuple[str, ...]) -> Mapping[str, str]:
    given = dict(values[_key("ROUTE_ROLES")])
    unknown = set(given) - set(DEFAULT_ROUTE_ROLES)
    if unknown:
        raise ValueError(
            f"{_key('ROUTE_ROLES')} has unknown routes {sorted(unknown)}; known: {sorted(DEFAULT_ROUTE_ROLES)}"
        )
    merged = {**DEFAULT_ROUTE_ROLES, **given}
    for route, minimum in merged.items():
        if minimum not in roles:
            raise ValueError(f"{_key('ROUTE_ROLES')}[{route!r}] = {minimum!r} is not in {_key('ROLES')} {list(roles)}")
    return MappingProxyType(merged)


def _tables(values: Mapping[str, t.Any]) -> Mapping[str, str]:
    given = dict(values[_key("TABLES")])
    unknown = set(given) - set(DEFAULT_TABLES)
    if unknown:
        raise ValueError(f"{_key('TABLES')} has unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_TABLES)}")
    return MappingProxyType({**DEFAULT_TABLES, **given})


def _columns(values: Mapping[str, t.Any]) -> Mapping[str, str]:
    given = dict(values[_key("COLUMNS")])
    for key in given:
        table, _, column = str(key).partition(".")
        if column not in HOST_COLUMNS.get(table, ()) + OPTIONAL_HOST_COLUMNS.get(table, ()):
            raise ValueError(f"{_key('COLUMNS')} key {key!r} is not '<table>.<column>' of {dict(HOST_COLUMNS)}")
    return MappingProxyType({str(k): str(v) for k, v in given.items()})


def _vary(values: Mapping[str, t.Any]) -> tuple[str, ...]:
    vary = values[_key("VARY_HEADERS")]
    if isinstance(vary, str) or not all(isinstance(h, str) and h.strip() for h in vary):
        raise ValueError(f"{_key('VARY_HEADERS')} must be a list of header names, e.g. ['Authorization', 'Cookie']")
    return tuple(vary)


def _secret(values: Mapping[str, t.Any], config: Mapping[str, t.Any]) -> tuple[str | bytes, tuple[str | bytes, ...]]:
    """The key that signs cursors, and the older ones that still verify them: ``SECRET_KEY_FALLBACKS`` (Flask's
    key rotation) when the key is ``SECRET_KEY``; none when ``CURSOR_SECRET`` is set."""
    own = values[_key("CURSOR_SECRET")]
    secret = own or config.get("SECRET_KEY")
    if not secret or not isinstance(secret, (str, bytes)):
        raise ValueError(f"flowpilot_analytics signs drill-down cursors: set SECRET_KEY or {_key('CURSOR_SECRET')}")
    if own:
        return secret, ()
    fallbacks = config.get("SECRET_KEY_FALLBACKS") or ()
    if not isinstance(fallbacks, (list, tuple)) or not all(isinstance(k, (str, bytes)) and k for k in fallbacks):
        raise ValueError("SECRET_KEY_FALLBACKS must be a list of the previous secret keys (non-empty str or bytes)")
    return secret, tuple(fallbacks)


@dataclasses.dataclass(frozen=True)
class RedisNodes:
    """A ``redis+sentinel://`` or ``redis+cluster://`` URI, read: credentials, ``(host, port)`` nodes, service."""

    username: str | None
    password: str | None = dataclasses.field(repr=False)
    nodes: tuple[tuple[str, int], ...]
    service: str | None


def redis_nodes(uri: str) -> RedisNodes:
    """Read ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service`` (the form the ``limits``
    package reads too) or ``redis+cluster://[[user]:password@]host:port[,host:port…]``.

    :raises ValueError: saying what is wrong, never quoting the URI (it may hold a password).
    """
    kind, _, rest = uri.partition("://")
    userinfo, _, location = rest.rpartition("@")
    example = "host:port,host:port/mymaster" if kind.endswith("+sentinel") else "host:port,host:port"
    if "?" in location or "#" in location:
        raise ValueError(f"{kind}:// takes no query options (form: {kind}://[[user]:password@]{example})")
    netloc, _, path = location.partition("/")
    nodes = []
    for node in netloc.split(","):
        host, colon, port = node.strip().rpartition(":")
        if not colon or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{kind}:// needs every node as host:port (form: {kind}://[[user]:password@]{example})")
        nodes.append((host.strip("[]"), int(port)))
    service = unquote(path.strip("/")) or None
    if kind.endswith("+sentinel") and (service is None or "/" in path.strip("/")):
        raise ValueError(f"{kind}:// needs the service name as its path, e.g. {kind}://{example}")
    if kind.endswith("+cluster") and service is not None:
        raise ValueError(f"{kind}:// takes no path (form: {kind}://[[user]:password@]{example})")
    user, colon, password = userinfo.partition(":")
    return RedisNodes(unquote(user) or None, unquote(password) if colon and password else None, tuple(nodes), service)


def _scheme(uri: str) -> str:
    match = _SCHEME.match(uri)
    return match.group(1) if match else ""


def _missing(module: str) -> str | None:
    """How to install ``module`` when it is missing, else ``None``."""
    if importlib.util.find_spec(module) is not None:
        return None
    extra = " (pip install 'flowpilot_analytics[redis]')" if module == "redis" else ""
    return f"needs the {module} package, which is not installed{extra}"


def _redis_problem(uri: str, kind: str) -> str | None:
    """What keeps a Redis URI of scheme ``kind`` from being used, or ``None``; never quotes the URI."""
    target = "valkey" if kind.startswith("valkey") else "redis"
    missing = _missing(target)
    if missing:
        return f"{kind}:// {missing}"
    if kind.endswith(("+sentinel", "+cluster")):
        try:
            redis_nodes(uri)
        except ValueError as exc:
            return str(exc)
        return None
    unreadable = f"{kind}:// has a host or port that does not read (host:port, a port from 1 to 65535)"
    try:
        parts = urlsplit(uri)
        if parts.port == 0:
            return unreadable
    except ValueError:  # an unclosed "[", or a port that is not a number
        return unreadable
    if kind.endswith("+unix") and not parts.path.strip("/"):
        return f"{kind}:// needs the socket's path, e.g. {kind}:///run/redis.sock"
    if not kind.endswith("+unix") and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return f"{kind}://'s path is the database number (e.g. {kind}://host:6379/0), not a name"
    if target == "redis":
        from redis import connection

        parse_url: t.Any = connection.parse_url  # untyped in redis-py
        try:
            parse_url(uri.replace("redis+unix://", "unix://", 1))
        except ValueError:
            return f"{kind}:// has a query option whose value the redis client cannot read"
    return None


def _cache_uri(values: Mapping[str, t.Any]) -> str:
    """``CACHE_STORAGE_URI``, refused at start unless the cache can use it (it never falls back to memory)."""
    uri = _optional_text(values, "CACHE_STORAGE_URI") or "memory://"
    kind = _scheme(uri)
    supported = ", ".join(f"{scheme}://" for scheme in CACHE_SCHEMES)
    if kind not in CACHE_SCHEMES:
        given = f"has the scheme {kind}://, which the cache does not support" if kind else _NOT_A_URI
        raise ValueError(f"{_key('CACHE_STORAGE_URI')} {given}; supported: {supported}")
    problem = _memory_problem(uri) if kind == "memory" else _redis_problem(uri, kind)
    if problem:
        raise ValueError(f"{_key('CACHE_STORAGE_URI')}: {problem}")
    return uri


def _memory_problem(uri: str) -> str | None:
    return None if uri == "memory://" else "memory:// takes nothing after it"


def _limits_storages() -> dict[str, type[limits.storage.Storage]]:
    """The schemes of the ``limits`` package's synchronous storages (the limiter cannot use its async ones)."""
    found: dict[str, type[limits.storage.Storage]] = {}
    pending = list(limits.storage.Storage.__subclasses__())
    while pending:
        storage = pending.pop()
        pending.extend(storage.__subclasses__())
        schemes = vars(storage).get("STORAGE_SCHEME") or []
        for name in [schemes] if isinstance(schemes, str) else schemes:
            found[name] = storage
    return found


def _ratelimit_uri(values: Mapping[str, t.Any], config: Mapping[str, t.Any]) -> str:
    """The limiter's storage URI (the plugin's setting, else the host's ``RATELIMIT_STORAGE_URI``, else memory),
    refused at start unless the ``limits`` package has a synchronous storage for it whose client is installed
    (and, for Redis, it reads as the cache's would)."""
    own = _optional_text(values, "RATELIMIT_STORAGE_URI")
    name, uri = (
        (_key("RATELIMIT_STORAGE_URI"), own)
        if own
        else (
            f"RATELIMIT_STORAGE_URI (the host's, used as {_key('RATELIMIT_STORAGE_URI')} is None)",
            config.get("RATELIMIT_STORAGE_URI") or None,
        )
    )
    if uri is None:
        return "memory://"
    if not isinstance(uri, str):
        raise ValueError(f"{name} must be a storage URI such as 'redis://host:6379/0', got a {type(uri).__name__}")
    storages = _limits_storages()
    kind = _scheme(uri)
    if kind not in storages:
        given = f"has the scheme {kind}://, which the rate limiter (the limits package) has no storage for"
        supported = ", ".join(f"{scheme}://" for scheme in sorted(storages))
        raise ValueError(f"{name} {given if kind else _NOT_A_URI}; supported: {supported}")
    target = "valkey" if kind.startswith("valkey") else "redis"
    dependencies = getattr(storages[kind], "DEPENDENCIES", [])
    modules = {module.split(".")[0] for module in dependencies} - ({"redis", "valkey"} - {target})
    problem = next((f"{kind}:// {m}" for m in map(_missing, sorted(modules)) if m), None)
    if problem is None and kind == "memory":
        problem = _memory_problem(uri)
    elif problem is None and target in modules:
        problem = _redis_problem(uri, kind)
    if problem:
        raise ValueError(f"{name}: {problem}")
    return uri


def _bind(values: Mapping[str, t.Any], config: Mapping[str, t.Any]) -> str | None:
    bind = values[_key("BIND")]
    if bind is not None and bind not in (config.get("SQLALCHEMY_BINDS") or {}):
        raise ValueError(f"{_key('BIND')} = {bind!r} is not a key of SQLALCHEMY_BINDS")
    return t.cast("str | None", bind)


def _edges(values: Mapping[str, t.Any]) -> tuple[float, ...]:
    edges = list(values[_key("BUCKET_EDGES_SECONDS")])
    valid = all(_is_number(e) and 0 < e < 10**9 for e in edges)
    if not edges or not valid or edges != sorted(set(edges)):
        raise ValueError(f"{_key('BUCKET_EDGES_SECONDS')} must be increasing positive numbers of seconds")
    return tuple(float(e) for e in edges)


def _target(values: Mapping[str, t.Any]) -> float | None:
    target = values[_key("TARGET_SECONDS")]
    if target is None:
        return None
    if not _is_number(target) or not 0 < target <= 7 * 86400:
        raise ValueError(f"{_key('TARGET_SECONDS')} must be a number of seconds above 0 and at most 7 days, or None")
    return float(target)


def _tenant(values: Mapping[str, t.Any]) -> str | None:
    tenant = values[_key("TENANT_SETTING")]
    if tenant is not None and (not isinstance(tenant, str) or "." not in tenant):
        raise ValueError(
            f"{_key('TENANT_SETTING')} must be a custom setting name with a dot, e.g. 'app.current_account_id'"
        )
    return tenant


def _id_type(values: Mapping[str, t.Any]) -> str:
    id_type = values[_key("ID_TYPE")]
    if id_type not in ID_TYPES:
        raise ValueError(f"{_key('ID_TYPE')} must be one of {list(ID_TYPES)}")
    return str(id_type)
