"""Every ``FLOWPILOT_ANALYTICS_*`` setting: its name, its default, and :class:`Settings`, the typed,
frozen value built once per app at ``init_app`` (validated, normalised) that every module reads
settings from.

The configuration docs are generated from :data:`SETTINGS`, so the names, defaults and meanings are
written once, here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
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
OPTIONAL_HOST_COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"handoffs": ("claimed_by",), "sessions": ("client_id",)}
)
#: Each report route's minimum role by default.
DEFAULT_ROUTE_ROLES: Mapping[str, str] = MappingProxyType(
    {"escalations": "engineer", "psa_metrics": "team_admin"}
)
#: Route-role keys whose minimum, unless the host sets it, is that of another key: reading the
#: calendar follows the escalation report, adding a version follows the PSA report (``team_admin``
#: by default), so a host's own role ladder keeps working unchanged.
ROUTE_ROLE_FOLLOWS: Mapping[str, str] = MappingProxyType(
    {
        "business_hours": "escalations",
        "business_hours_write": "psa_metrics",
        "baseline": "psa_metrics",
        "baseline_write": "psa_metrics",
        "savings": "psa_metrics",
    }
)
DEAD_LETTER_FILENAME = "flowpilot_analytics_dead_letters.jsonl"
ID_TYPES = ("integer", "string", "uuid")
#: What ``CACHE_STORAGE_URI`` may name: process memory, or Redis (a server, over TLS, on a socket,
#: through Sentinel, or a Cluster), each spoken by the plugin's own client.
CACHE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_NOT_A_URI = "is not a URI of the form scheme://…"


@dataclasses.dataclass(frozen=True)
class Context:
    """What a setting's check may read besides its own value: its key (for messages), the app's
    whole config, its instance folder, and the fields checked before it."""

    key: str
    config: Mapping[str, object]
    instance_path: str
    checked: Mapping[str, object]


#: A setting's check: the value given (or a copy of the default) -> the normalised value, or
#: ``ValueError`` naming the key.
Check = t.Callable[[t.Any, Context], object]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One ``FLOWPILOT_ANALYTICS_*`` key, declared once: its :class:`Settings` field, default, check
    and doc."""

    key: str
    field: str
    default: object
    check: Check
    doc: str


def _whole(minimum: int) -> Check:
    """A check for a whole number at least ``minimum``."""

    def check(value: object, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{ctx.key} must be a whole number >= {minimum}, got {value!r}")
        return value

    return check


def _whole_between(minimum: int, maximum: int) -> Check:
    """A check for a whole number in ``[minimum, maximum]``."""

    def check(value: object, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ValueError(
                f"{ctx.key} must be a whole number from {minimum} to {maximum}, got {value!r}"
            )
        return value

    return check


def _optional_text(value: object, ctx: Context) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{ctx.key} must be a non-empty string or None, got {value!r}")
    return value


def _text(default: str) -> Check:
    """A check for a non-empty string, ``None`` meaning ``default``."""

    def check(value: object, ctx: Context) -> str:
        return _optional_text(value, ctx) or default

    return check


def _dead_letter_path(value: object, ctx: Context) -> str:
    return _optional_text(value, ctx) or os.path.join(ctx.instance_path, DEAD_LETTER_FILENAME)


def _limits(value: object, ctx: Context) -> Mapping[str, str]:
    """Per-route rate limits given by the host (``limits`` notation); the routes declare the
    defaults and ``init_app`` refuses a key no route declares."""
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{ctx.key} must be a mapping of route limit keys to limits, "
            f"e.g. {{'psa_metrics': '15/minute'}}"
        )
    checked: dict[str, str] = {}
    for name, limit in value.items():
        try:
            parsed = limits.parse_many(limit)
        except (ValueError, TypeError):
            raise ValueError(
                f"{ctx.key}[{name!r}] = {limit!r} is not a rate limit such as '15 per minute'"
            ) from None
        if len(parsed) != 1:
            raise ValueError(
                f"{ctx.key}[{name!r}] = {limit!r} gives {len(parsed)} limits: "
                "one rate limit per key"
            )
        if parsed[0].amount < 1:
            raise ValueError(f"{ctx.key}[{name!r}] = {limit!r} allows no request: the amount is 0")
        checked[str(name)] = str(limit)
    return MappingProxyType(checked)


def _is_number(value: object) -> t.TypeGuard[int | float]:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _url_prefix(prefix: object, ctx: Context) -> str:
    if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
        raise ValueError(f"{ctx.key} must be a path starting with '/', got {prefix!r}")
    return prefix


def _skew(skew: object, ctx: Context) -> float:
    if not _is_number(skew) or not 0 <= skew <= 86400:
        raise ValueError(f"{ctx.key} must be a number of seconds from 0 to 86400")
    return float(skew)


def _roles(roles: t.Any, ctx: Context) -> tuple[str, ...]:
    if (
        isinstance(roles, str)
        or not roles
        or len(set(roles)) != len(roles)
        or not all(isinstance(r, str) for r in roles)
    ):
        raise ValueError(f"{ctx.key} must be a non-empty list of distinct role names")
    return tuple(roles)


def _mapping(value: object, ctx: Context) -> dict[str, object]:
    """A setting's mapping, refused naming the key when it is not one."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{ctx.key} must be a mapping, got a {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _merged_over(
    defaults: Mapping[str, str], noun: str, value: object, ctx: Context
) -> dict[str, str]:
    """The host's mapping over ``defaults``; a key they lack is refused, naming them."""
    given = _mapping(value, ctx)
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(
            f"{ctx.key} has unknown {noun} {sorted(unknown)}; known: {sorted(defaults)}"
        )
    return {**defaults, **{k: str(v) for k, v in given.items()}}


def _route_roles(value: object, ctx: Context) -> Mapping[str, str]:
    known = {**DEFAULT_ROUTE_ROLES, **dict.fromkeys(ROUTE_ROLE_FOLLOWS, "")}
    merged = _merged_over(known, "routes", value, ctx)
    for key, leader in ROUTE_ROLE_FOLLOWS.items():
        merged[key] = merged[key] or merged[leader]
    roles = t.cast("tuple[str, ...]", ctx.checked["roles"])
    for route, minimum in merged.items():
        if minimum not in roles:
            raise ValueError(
                f"{ctx.key}[{route!r}] = {minimum!r} is not in {PREFIX}ROLES {list(roles)}"
            )
    return MappingProxyType(merged)


def _tables(value: object, ctx: Context) -> Mapping[str, str]:
    return MappingProxyType(_merged_over(DEFAULT_TABLES, "keys", value, ctx))


def _columns(value: object, ctx: Context) -> Mapping[str, str]:
    given = _mapping(value, ctx)
    for key in given:
        table, _, column = str(key).partition(".")
        if column not in HOST_COLUMNS.get(table, ()) + OPTIONAL_HOST_COLUMNS.get(table, ()):
            raise ValueError(
                f"{ctx.key} key {key!r} is not '<table>.<column>' of {dict(HOST_COLUMNS)}"
            )
    return MappingProxyType({str(k): str(v) for k, v in given.items()})


def _vary(vary: t.Any, ctx: Context) -> tuple[str, ...]:
    if isinstance(vary, str) or not all(isinstance(h, str) and h.strip() for h in vary):
        raise ValueError(
            f"{ctx.key} must be a list of header names, e.g. ['Authorization', 'Cookie']"
        )
    return tuple(vary)


def _secret(config: Mapping[str, t.Any]) -> tuple[str | bytes, tuple[str | bytes, ...]]:
    """The key that signs cursors, ``SECRET_KEY``, and the older ones that still verify them,
    ``SECRET_KEY_FALLBACKS`` (Flask's key rotation)."""
    secret = config.get("SECRET_KEY")
    if not secret or not isinstance(secret, (str, bytes)):
        raise ValueError("flowpilot_analytics signs drill-down cursors: set the app's SECRET_KEY")
    fallbacks = config.get("SECRET_KEY_FALLBACKS") or ()
    if not isinstance(fallbacks, (list, tuple)) or not all(
        isinstance(k, (str, bytes)) and k for k in fallbacks
    ):
        raise ValueError(
            "SECRET_KEY_FALLBACKS must be a list of the previous secret keys "
            "(non-empty str or bytes)"
        )
    return secret, tuple(fallbacks)


@dataclasses.dataclass(frozen=True)
class RedisNodes:
    """A ``redis+sentinel://`` or ``redis+cluster://`` URI, read: credentials, ``(host, port)``
    nodes, service."""

    username: str | None
    password: str | None = dataclasses.field(repr=False)
    nodes: tuple[tuple[str, int], ...]
    service: str | None


def redis_nodes(uri: str) -> RedisNodes:
    """Read ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service`` (the form the
    ``limits`` package reads too) or ``redis+cluster://[[user]:password@]host:port[,host:port…]``.

    :raises ValueError: saying what is wrong, never quoting the URI (it may hold a password).
    """
    kind, _, rest = uri.partition("://")
    userinfo, _, location = rest.rpartition("@")
    example = (
        "host:port,host:port/mymaster" if kind.endswith("+sentinel") else "host:port,host:port"
    )
    if "?" in location or "#" in location:
        raise ValueError(
            f"{kind}:// takes no query options (form: {kind}://[[user]:password@]{example})"
        )
    netloc, _, path = location.partition("/")
    nodes = []
    for node in netloc.split(","):
        host, colon, port = node.strip().rpartition(":")
        if not colon or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{kind}:// needs every node as host:port "
                f"(form: {kind}://[[user]:password@]{example})"
            )
        nodes.append((host.strip("[]"), int(port)))
    service = unquote(path.strip("/")) or None
    if kind.endswith("+sentinel") and (service is None or "/" in path.strip("/")):
        raise ValueError(f"{kind}:// needs the service name as its path, e.g. {kind}://{example}")
    if kind.endswith("+cluster") and service is not None:
        raise ValueError(f"{kind}:// takes no path (form: {kind}://[[user]:password@]{example})")
    user, colon, password = userinfo.partition(":")
    return RedisNodes(
        unquote(user) or None,
        unquote(password) if colon and password else None,
        tuple(nodes),
        service,
    )


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
    """What keeps a Redis URI of scheme ``kind`` from being used, or ``None``; never quotes the
    URI."""
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
    unreadable = (
        f"{kind}:// has a host or port that does not read (host:port, a port from 1 to 65535)"
    )
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


def _cache_uri(value: object, ctx: Context) -> str:
    """``CACHE_STORAGE_URI``, refused at start unless the cache can use it (it never falls back to
    memory)."""
    uri = _optional_text(value, ctx) or "memory://"
    kind = _scheme(uri)
    supported = ", ".join(f"{scheme}://" for scheme in CACHE_SCHEMES)
    if kind not in CACHE_SCHEMES:
        given = (
            f"has the scheme {kind}://, which the cache does not support" if kind else _NOT_A_URI
        )
        raise ValueError(f"{ctx.key} {given}; supported: {supported}")
    problem = _memory_problem(uri) if kind == "memory" else _redis_problem(uri, kind)
    if problem:
        raise ValueError(f"{ctx.key}: {problem}")
    return uri


def _memory_problem(uri: str) -> str | None:
    return None if uri == "memory://" else "memory:// takes nothing after it"


def _limits_storages() -> dict[str, type[limits.storage.Storage]]:
    """The schemes of the ``limits`` package's synchronous storages (the limiter cannot use its
    async ones)."""
    found: dict[str, type[limits.storage.Storage]] = {}
    pending = list(limits.storage.Storage.__subclasses__())
    while pending:
        storage = pending.pop()
        pending.extend(storage.__subclasses__())
        schemes = vars(storage).get("STORAGE_SCHEME") or []
        for name in [schemes] if isinstance(schemes, str) else schemes:
            found[name] = storage
    return found


def _ratelimit_uri(value: object, ctx: Context) -> str:
    """The limiter's storage URI (the plugin's setting, else the host's ``RATELIMIT_STORAGE_URI``,
    else memory), refused at start unless the ``limits`` package has a synchronous storage for it
    whose client is installed (and, for Redis, it reads as the cache's would)."""
    own = _optional_text(value, ctx)
    name, uri = (
        (ctx.key, own)
        if own
        else (
            f"RATELIMIT_STORAGE_URI (the host's, used as {ctx.key} is None)",
            ctx.config.get("RATELIMIT_STORAGE_URI") or None,
        )
    )
    if uri is None:
        return "memory://"
    if not isinstance(uri, str):
        raise ValueError(
            f"{name} must be a storage URI such as 'redis://host:6379/0', "
            f"got a {type(uri).__name__}"
        )
    storages = _limits_storages()
    kind = _scheme(uri)
    if kind not in storages:
        given = (
            f"has the scheme {kind}://, which the rate limiter "
            f"(the limits package) has no storage for"
        )
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


def _bind(bind: object, ctx: Context) -> str | None:
    binds = ctx.config.get("SQLALCHEMY_BINDS") or {}
    if bind is not None and (not isinstance(binds, Mapping) or bind not in binds):
        raise ValueError(f"{ctx.key} = {bind!r} is not a key of SQLALCHEMY_BINDS")
    return t.cast("str | None", bind)


def _edges(value: t.Any, ctx: Context) -> tuple[float, ...]:
    edges = list(value)
    valid = all(_is_number(e) and 0 < e < 10**9 for e in edges)
    if not edges or not valid or edges != sorted(set(edges)):
        raise ValueError(f"{ctx.key} must be increasing positive numbers of seconds")
    return tuple(float(e) for e in edges)


def _target(target: object, ctx: Context) -> float | None:
    if target is None:
        return None
    if not _is_number(target) or not 0 < target <= 7 * 86400:
        raise ValueError(
            f"{ctx.key} must be a number of seconds above 0 and at most 7 days, or None"
        )
    return float(target)


def _tenant(tenant: object, ctx: Context) -> str | None:
    if tenant is not None and (not isinstance(tenant, str) or "." not in tenant):
        raise ValueError(
            f"{ctx.key} must be a custom setting name with a dot, e.g. 'app.current_account_id'"
        )
    return tenant


def _id_type(id_type: object, ctx: Context) -> str:
    if id_type not in ID_TYPES:
        raise ValueError(f"{ctx.key} must be one of {list(ID_TYPES)}")
    return str(id_type)


def _flag(value: object, ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{ctx.key} must be True or False, got {value!r}")
    return value


def _openapi_security(kind: object, ctx: Context) -> Mapping[str, str]:
    """The OpenAPI security scheme of the host's sign-in: its session cookie (named by the app's
    ``SESSION_COOKIE_NAME``, which Flask-Login's session uses too) or a bearer token."""
    if kind == "cookie":
        name = ctx.config.get("SESSION_COOKIE_NAME") or "session"
        return MappingProxyType(
            {
                "type": "apiKey",
                "in": "cookie",
                "name": str(name),
                "description": "The host's signed-in session: its session cookie.",
            }
        )
    if kind == "bearer":
        return MappingProxyType(
            {
                "type": "http",
                "scheme": "bearer",
                "description": "The host's token, sent as `Authorization: Bearer <token>`.",
            }
        )
    raise ValueError(f"{ctx.key} must be 'cookie' or 'bearer', got {kind!r}")


#: Every key, declared once, in the order they are checked (a check may read the fields before it).
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "URL_PREFIX",
        "url_prefix",
        "/api/v1",
        _url_prefix,
        "Where the blueprint mounts; routes live under `<prefix>/analytics/flowpilot/`.",
    ),
    Setting(
        "CLOCK_SKEW_SECONDS",
        "clock_skew_seconds",
        0,
        _skew,
        "A step up to this many seconds *before* the claim still counts as the first action (its "
        "delta floors at 0); 0-86400.",
    ),
    Setting(
        "ROLES",
        "roles",
        ("viewer", "engineer", "team_admin", "admin"),
        _roles,
        "The role ladder, lowest first.",
    ),
    Setting(
        "ROUTE_ROLES",
        "route_roles",
        {},
        _route_roles,
        "Minimum role per route, merged over `escalations: engineer`, `psa_metrics: team_admin`; "
        "the drill-down and the trend follow `escalations`; unless set, `business_hours` (reading "
        "the calendar) follows `escalations`, and `business_hours_write` (adding a version), "
        "`baseline` (reading the stopwatch baseline), `baseline_write` (adding or deleting "
        "samples) and `savings` follow `psa_metrics`.",
    ),
    Setting(
        "TABLES",
        "tables",
        {},
        _tables,
        "Host table names, merged over `sessions: ai_sessions`, `steps: ai_session_steps`, "
        "`handoffs: session_handoffs`; `schema.table` works.",
    ),
    Setting(
        "COLUMNS", "columns", {}, _columns, 'Host column names as `{"<table>.<column>": "name"}`.'
    ),
    Setting(
        "LIMITS",
        "limits",
        {},
        _limits,
        "Per-user rate limits (`limits` notation) by route limit key, merged over "
        "`escalations: 120 per minute` (escalations and the trend, each counted apart), "
        "`escalation_handoffs: 120 per minute` (the drill-down, JSON and CSV), "
        "`psa_metrics: 15 per minute`, `business_hours: 60 per minute` (reading the calendar), "
        "`business_hours_write: 30 per minute` (adding a version), `baseline: 60 per minute`, "
        "`baseline_write: 30 per minute` (adding and deleting samples, counted apart), "
        "`savings: 30 per minute`.",
    ),
    Setting(
        "RATELIMIT_STORAGE_URI",
        "ratelimit_storage_uri",
        None,
        _ratelimit_uri,
        "Storage of the plugin's limiter: any URI of a synchronous storage of the `limits` package "
        "whose client is installed (`memory://`, `redis://…`, `rediss://…`, `redis+unix://…`, "
        "`redis+sentinel://…`, `redis+cluster://…`, `memcached://…`, `mongodb://…`); `None` uses "
        "the host's `RATELIMIT_STORAGE_URI`, then `memory://`. Anything else stops `init_app`.",
    ),
    Setting(
        "CACHE_TTL",
        "cache_ttl",
        60,
        _whole(0),
        "Seconds an answer is reused for the same account and parameters; `0` turns caching off.",
    ),
    Setting(
        "CACHE_STORAGE_URI",
        "cache_storage_uri",
        "memory://",
        _cache_uri,
        "Where cached answers live: `memory://` (per process, at most 32 MiB) or, shared by every "
        "worker, `redis://…`, `rediss://…`, `redis+unix:///path.sock`, "
        "`redis+sentinel://[[user]:password@]host:port[,…]/service` or "
        "`redis+cluster://[[user]:password@]host:port[,…]`. Any other URI stops `init_app`.",
    ),
    Setting(
        "VARY_HEADERS",
        "vary_headers",
        ("Authorization", "Cookie"),
        _vary,
        "Request headers that carry credentials, named in `Vary`.",
    ),
    Setting(
        "CURSOR_MAX_AGE",
        "cursor_max_age",
        86400,
        _whole(1),
        "Seconds a drill-down `next_cursor` stays valid after it was issued; an older one is a 400 "
        "that says it expired (start again from the first page). Cursors are signed with "
        "`SECRET_KEY`, and those signed with a key of `SECRET_KEY_FALLBACKS` are accepted too (key "
        "rotation).",
    ),
    Setting(
        "HOOK_TIMEOUT_MS",
        "hook_timeout_ms",
        250,
        _whole(1),
        "Longest a push waits for its activity to be recorded, in milliseconds; past it the "
        "activity is dead-lettered.",
    ),
    Setting(
        "BIND",
        "bind",
        None,
        _bind,
        "`SQLALCHEMY_BINDS` key analytics reads go to (a read replica); `None` reads the primary.",
    ),
    Setting(
        "DEAD_LETTER_PATH",
        "dead_letter_path",
        None,
        _dead_letter_path,
        "JSON-lines file that journals every activity and keeps those the hook could not write; "
        f"`None` = `<instance folder>/{DEAD_LETTER_FILENAME}`.",
    ),
    Setting(
        "BUCKET_EDGES_SECONDS",
        "bucket_edges",
        (60, 300, 900, 3600, 14400),
        _edges,
        "Edges of the escalation `distribution` buckets, increasing seconds.",
    ),
    Setting(
        "TARGET_SECONDS",
        "target_seconds",
        None,
        _target,
        "Response target, in seconds from claim to first action (at most 7 days), reported as "
        "`target` on the escalation reports when a request gives no `target_seconds`; `None` = no "
        "target.",
    ),
    Setting(
        "BASELINE_MIN_SAMPLES",
        "baseline_min_samples",
        20,
        _whole_between(2, 1000),
        "Least number of stopwatch baseline samples before `escalations/savings` computes a "
        "difference (and so may make a claim); 2-1000.",
    ),
    Setting(
        "TENANT_SETTING",
        "tenant_setting",
        None,
        _tenant,
        "PostgreSQL setting (e.g. `app.current_account_id`) set transaction-locally to the account "
        "before every plugin read and write (row-level security); `None` = off.",
    ),
    Setting(
        "ACTIVITY_TABLE",
        "activity_table",
        "psa_activity_logs",
        _text("psa_activity_logs"),
        "Name of the table the plugin owns.",
    ),
    Setting(
        "ID_TYPE",
        "id_type",
        "integer",
        _id_type,
        "Type of `account_id`/`session_id` in that table: `integer`, `string` or `uuid`.",
    ),
    Setting(
        "OPENAPI_SECURITY",
        "openapi_security",
        "cookie",
        _openapi_security,
        "How the OpenAPI document (`openapi.json`) says callers sign in, as the host's identity "
        "loader expects: `cookie` (the host's session cookie, named by `SESSION_COOKIE_NAME`) or "
        "`bearer` (`Authorization: Bearer <token>`). It changes only the document.",
    ),
    Setting(
        "DASHBOARD",
        "dashboard",
        False,
        _flag,
        "Serve the analytics page for team leads at `<prefix>/analytics/flowpilot/` (same role "
        "gates as the JSON routes, a strict Content-Security-Policy, the browser's session "
        "cookie) and its static files, the queue stat-card among them, under "
        "`<prefix>/analytics/flowpilot/static/`; `False` serves neither (see the dashboard page).",
    ),
)
DEFAULTS: Mapping[str, object] = MappingProxyType({PREFIX + s.key: s.default for s in SETTINGS})

_LIMITS_INSTEAD = "use FLOWPILOT_ANALYTICS_LIMITS = {{{!r}: '…'}} instead"
#: Keys earlier versions read, and what replaces each: a host that still sets one gets a startup
#: error.
REMOVED: Mapping[str, str] = MappingProxyType(
    {
        PREFIX + "PSA_SERVICE_METHODS": (
            "pass methods= to analytics.wrap_psa_service(service, methods={...}) instead"
        ),
        PREFIX + "SQLITE_TEXT_OFFSETS": (
            "SQLite timestamps are always compared as the UTC text SQLAlchemy's DateTime writes; "
            "store timestamps through SQLAlchemy (naive UTC or aware) and remove the setting"
        ),
        PREFIX + "PSA_METRICS_LIMIT": _LIMITS_INSTEAD.format("psa_metrics"),
        PREFIX + "ESCALATIONS_LIMIT": _LIMITS_INSTEAD.format("escalations"),
        PREFIX + "HANDOFFS_LIMIT": _LIMITS_INSTEAD.format("escalation_handoffs"),
        PREFIX + "CURSOR_SECRET": (
            "drill-down cursors are signed with the app's SECRET_KEY (rotate it with "
            "SECRET_KEY_FALLBACKS); remove the setting"
        ),
        PREFIX + "CACHE_MAX_BYTES": (
            "the in-process cache is bounded at 32 MiB per process; for more, share one cache with "
            "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI = 'redis://…'"
        ),
        PREFIX + "DEAD_LETTER_TABLE": (
            "dead letters are kept in the file FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH, which also "
            "journals every activity; replay the table's rows with the version that wrote them, "
            "then remove the setting"
        ),
        PREFIX + "MAX_RANGE_DAYS": (
            "a since/until range may span at most 366 days; remove the setting"
        ),
    }
)


def settings_table() -> str:
    """The configuration reference as a Markdown table (the docs are generated from
    :data:`SETTINGS`)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        rows.append(f"| `{PREFIX}{setting.key}` | `{setting.default!r}` | {setting.doc} |")
    return "\n".join(rows) + "\n"


def apply_defaults(config: t.MutableMapping[str, t.Any]) -> None:
    """Fill every unset key with a copy of its default, as Flask extensions do (no two apps share
    one object)."""
    for key, default in DEFAULTS.items():
        config.setdefault(key, copy.deepcopy(default))


def _unknown_keys(config: Mapping[str, object]) -> list[str]:
    """``FLOWPILOT_ANALYTICS_*`` keys that are neither settings nor removed ones, each with the
    closest real key."""
    known = [PREFIX + s.key for s in SETTINGS]
    found = []
    for key in sorted(k for k in config if isinstance(k, str) and k.startswith(PREFIX)):
        if key not in DEFAULTS and key not in REMOVED:
            close = difflib.get_close_matches(key, known, n=1)
            found.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return found


@dataclasses.dataclass(frozen=True)
class Settings:
    """One app's settings, checked and normalised; the only way the plugin reads its configuration.

    Each field but the two cursor keys is a :data:`SETTINGS` declaration's; those come from Flask's
    own ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``.
    """

    url_prefix: str
    clock_skew_seconds: float
    roles: tuple[str, ...]
    route_roles: Mapping[str, str]
    tables: Mapping[str, str]
    columns: Mapping[str, str]
    limits: Mapping[str, str]
    ratelimit_storage_uri: str
    cache_ttl: int
    cache_storage_uri: str
    vary_headers: tuple[str, ...]
    cursor_max_age: int
    hook_timeout_ms: int
    bind: str | None
    dead_letter_path: str
    bucket_edges: tuple[float, ...]
    target_seconds: float | None
    baseline_min_samples: int
    tenant_setting: str | None
    activity_table: str
    id_type: str
    #: The OpenAPI security scheme object of the host's sign-in.
    openapi_security: Mapping[str, str]
    #: Whether the blueprint serves the analytics page and its static files.
    dashboard: bool
    #: The key that signs cursors (the app's ``SECRET_KEY``).
    cursor_secret: str | bytes = dataclasses.field(repr=False)
    #: Older keys that still verify cursors (``SECRET_KEY_FALLBACKS``).
    cursor_fallbacks: tuple[str | bytes, ...] = dataclasses.field(repr=False)

    @classmethod
    def from_config(cls, config: Mapping[str, t.Any], instance_path: str = ".") -> Settings:
        """Check every key in declaration order (copies of the defaults for unset ones); refuse
        removed and unknown keys, and whatever would only fail later, naming the key."""
        removed = [f"{key}: {why}" for key, why in REMOVED.items() if key in config]
        if removed:
            raise ValueError("Settings that no longer exist: " + "; ".join(removed))
        unknown = _unknown_keys(config)
        if unknown:
            raise ValueError("Unknown flowpilot_analytics settings: " + "; ".join(unknown))
        checked: dict[str, object] = {}
        for setting in SETTINGS:
            key = PREFIX + setting.key
            value = copy.deepcopy(config.get(key, setting.default))
            checked[setting.field] = setting.check(
                value, Context(key, config, instance_path, checked)
            )
        secret, fallbacks = _secret(config)  # last: other mistakes are named first
        return cls(
            **checked,  # type: ignore[arg-type]  # each check returns its field's type
            cursor_secret=secret,
            cursor_fallbacks=fallbacks,
        )

    def host_column(self, table: str, column: str) -> str:
        """The host's name for a logical column."""
        return self.columns.get(f"{table}.{column}", column)
