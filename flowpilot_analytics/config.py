"""Every ``FLOWPILOT_ANALYTICS_*`` setting, its default, and the checks run at ``init_app``.

One place for the names keeps the README's configuration table and the code in step.
"""

from __future__ import annotations

import copy
import typing as t

import limits

PREFIX = "FLOWPILOT_ANALYTICS_"

#: Where the blueprint mounts; routes live under ``<prefix>/analytics/flowpilot/``.
URL_PREFIX = PREFIX + "URL_PREFIX"
#: Seconds a step may precede ``claimed_at`` and still count as the first action (clock drift).
CLOCK_SKEW_SECONDS = PREFIX + "CLOCK_SKEW_SECONDS"
#: Ordered role ladder, lowest first.
ROLES = PREFIX + "ROLES"
#: Minimum role per route, by route name.
ROUTE_ROLES = PREFIX + "ROUTE_ROLES"
#: Logical table name -> the host's table name.
TABLES = PREFIX + "TABLES"
#: ``"<logical table>.<logical column>"`` -> the host's column name.
COLUMNS = PREFIX + "COLUMNS"
#: Per-user limit strings (Flask-Limiter / ``limits`` notation) for each report route.
PSA_METRICS_LIMIT = PREFIX + "PSA_METRICS_LIMIT"
ESCALATIONS_LIMIT = PREFIX + "ESCALATIONS_LIMIT"
HANDOFFS_LIMIT = PREFIX + "HANDOFFS_LIMIT"
#: Storage for the plugin's own limiter; ``None`` falls back to ``RATELIMIT_STORAGE_URI``.
RATELIMIT_STORAGE_URI = PREFIX + "RATELIMIT_STORAGE_URI"
#: Seconds a computed response is reused for the same account and parameters; 0 turns caching off.
CACHE_TTL = PREFIX + "CACHE_TTL"
#: Where cached responses live: ``memory://`` (per process) or ``redis://...`` (shared). ``None``: the
#: plugin's rate-limit storage when that is Redis, else ``memory://``.
CACHE_STORAGE_URI = PREFIX + "CACHE_STORAGE_URI"
#: Upper bound, in bytes, of the in-process response cache (each worker process has its own).
CACHE_MAX_BYTES = PREFIX + "CACHE_MAX_BYTES"
#: Request headers that carry the caller's credentials; JSON answers name them in ``Vary``.
VARY_HEADERS = PREFIX + "VARY_HEADERS"
#: Key that signs drill-down cursors; ``None`` uses the app's ``SECRET_KEY``. One of the two is required.
CURSOR_SECRET = PREFIX + "CURSOR_SECRET"
#: Longest a push may wait for its activity to be recorded, in milliseconds; past it the activity is
#: kept as a dead letter (lock and statement timeouts on PostgreSQL, busy timeout on SQLite).
HOOK_TIMEOUT_MS = PREFIX + "HOOK_TIMEOUT_MS"
#: Flask-SQLAlchemy bind key analytics reads go to (a read replica); ``None`` reads from the primary.
BIND = PREFIX + "BIND"
#: JSON-lines file where the hook keeps activities it could not write; default in the app's instance folder.
DEAD_LETTER_PATH = PREFIX + "DEAD_LETTER_PATH"
DEAD_LETTER_FILENAME = "flowpilot_analytics_dead_letters.jsonl"
#: Keep dead letters in this table (created by ``db.create_all()``) instead of the file; ``None`` = the file.
DEAD_LETTER_TABLE = PREFIX + "DEAD_LETTER_TABLE"
#: Edges (seconds) of the time-to-first-action distribution buckets, ascending.
BUCKET_EDGES_SECONDS = PREFIX + "BUCKET_EDGES_SECONDS"
#: Longest ``since``/``until`` range accepted, in days.
MAX_RANGE_DAYS = PREFIX + "MAX_RANGE_DAYS"
#: SQLite only: whether stored timestamp text may carry UTC offsets (``…+02:00``) or other ISO spellings.
#: ``False`` (default) compares the text itself: exact and index-friendly for what SQLAlchemy's DateTime
#: writes (``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC; SQLAlchemy drops offsets itself). ``True`` compares
#: through ``julianday()``, right for any ISO text, but slower (no index range on the timestamps).
SQLITE_TEXT_OFFSETS = PREFIX + "SQLITE_TEXT_OFFSETS"
#: PostgreSQL row-level security: a setting name (e.g. ``app.current_account_id``) the plugin sets,
#: transaction-local, to the caller's account before every read and write; ``None`` = off.
TENANT_SETTING = PREFIX + "TENANT_SETTING"
#: Name of the table the plugin owns.
ACTIVITY_TABLE = PREFIX + "ACTIVITY_TABLE"
#: Type of ``account_id`` / ``session_id`` in the plugin's table: ``integer``, ``string`` or ``uuid``.
ID_TYPE = PREFIX + "ID_TYPE"
#: Method names that :meth:`FlowpilotAnalytics.wrap_psa_service` wraps, by activity type.
PSA_SERVICE_METHODS = PREFIX + "PSA_SERVICE_METHODS"

DEFAULT_ROLES: tuple[str, ...] = ("viewer", "engineer", "team_admin", "admin")
DEFAULT_ROUTE_ROLES: dict[str, str] = {"escalations": "engineer", "psa_metrics": "team_admin"}
DEFAULT_TABLES: dict[str, str] = {
    "sessions": "ai_sessions",
    "steps": "ai_session_steps",
    "handoffs": "session_handoffs",
}
#: The columns the plugin reads from each host table (logical names).
HOST_COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": ("id", "account_id", "created_at", "psa_ticket_id"),
    "steps": ("id", "account_id", "session_id", "created_at"),
    "handoffs": ("id", "account_id", "session_id", "created_at", "claimed_at"),
}
#: Columns used only by optional features, read when the host has them (``group_by=engineer``).
OPTIONAL_HOST_COLUMNS: dict[str, tuple[str, ...]] = {"handoffs": ("claimed_by",)}
DEFAULT_PSA_SERVICE_METHODS: dict[str, str] = {
    "note_posted": "push_note",
    "time_entry_posted": "push_time_entry",
}

DEFAULTS: dict[str, t.Any] = {
    URL_PREFIX: "/api/v1",
    CLOCK_SKEW_SECONDS: 0,
    ROLES: DEFAULT_ROLES,
    ROUTE_ROLES: DEFAULT_ROUTE_ROLES,
    TABLES: {},
    COLUMNS: {},
    PSA_METRICS_LIMIT: "15 per minute",
    ESCALATIONS_LIMIT: "120 per minute",
    HANDOFFS_LIMIT: "120 per minute",
    RATELIMIT_STORAGE_URI: None,
    CACHE_TTL: 60,
    CACHE_STORAGE_URI: None,
    CACHE_MAX_BYTES: 32 * 1024 * 1024,
    VARY_HEADERS: ("Authorization", "Cookie"),
    CURSOR_SECRET: None,
    HOOK_TIMEOUT_MS: 250,
    BIND: None,
    DEAD_LETTER_PATH: None,
    DEAD_LETTER_TABLE: None,
    TENANT_SETTING: None,
    SQLITE_TEXT_OFFSETS: False,
    BUCKET_EDGES_SECONDS: (60, 300, 900, 3600, 14400),
    MAX_RANGE_DAYS: 366,
    ACTIVITY_TABLE: "psa_activity_logs",
    ID_TYPE: "integer",
    PSA_SERVICE_METHODS: DEFAULT_PSA_SERVICE_METHODS,
}


def apply_defaults(config: t.MutableMapping[str, t.Any]) -> None:
    """Fill every unset ``FLOWPILOT_ANALYTICS_*`` key, as Flask extensions do."""
    for key, value in DEFAULTS.items():
        config.setdefault(key, copy.deepcopy(value))  # no two apps share (and mutate) one default object


def route_roles(config: t.Mapping[str, t.Any]) -> dict[str, str]:
    """Each route's minimum role: the defaults, overridden by ``FLOWPILOT_ANALYTICS_ROUTE_ROLES``."""
    return {**DEFAULT_ROUTE_ROLES, **dict(config[ROUTE_ROLES])}


def validate(config: t.Mapping[str, t.Any]) -> None:
    """Refuse settings that would only fail later, at request time."""
    roles = list(config[ROLES])
    if not roles or len(set(roles)) != len(roles):
        raise ValueError(f"{ROLES} must be a non-empty list of distinct role names")
    unknown_routes = set(config[ROUTE_ROLES]) - set(DEFAULT_ROUTE_ROLES)
    if unknown_routes:
        raise ValueError(f"{ROUTE_ROLES} has unknown routes {sorted(unknown_routes)}; "
                         f"known: {sorted(DEFAULT_ROUTE_ROLES)}")
    for route, minimum in route_roles(config).items():
        if minimum not in roles:
            raise ValueError(f"{ROUTE_ROLES}[{route!r}] = {minimum!r} is not in {ROLES} {roles}")
    skew = config[CLOCK_SKEW_SECONDS]
    if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not 0 <= skew <= 86400:
        raise ValueError(f"{CLOCK_SKEW_SECONDS} must be a number of seconds from 0 to 86400")
    for key in (CACHE_MAX_BYTES, HOOK_TIMEOUT_MS):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a whole number >= 1")
    for key in (PSA_METRICS_LIMIT, ESCALATIONS_LIMIT, HANDOFFS_LIMIT):
        try:
            limits.parse(config[key])
        except ValueError:
            raise ValueError(f"{key} = {config[key]!r} is not a rate limit such as '15 per minute'") from None
    vary = config[VARY_HEADERS]
    if isinstance(vary, str) or not all(isinstance(h, str) and h.strip() for h in vary):
        raise ValueError(f"{VARY_HEADERS} must be a list of header names, e.g. ['Authorization', 'Cookie']")
    ttl = config[CACHE_TTL]
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise ValueError(f"{CACHE_TTL} must be a whole number of seconds >= 0 (0 turns the cache off)")
    bind = config[BIND]
    if bind is not None and bind not in (config.get("SQLALCHEMY_BINDS") or {}):
        raise ValueError(f"{BIND} = {bind!r} is not a key of SQLALCHEMY_BINDS")
    edges = list(config[BUCKET_EDGES_SECONDS])
    if not edges or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e < 10**9 for e in edges) \
            or edges != sorted(set(edges)):
        raise ValueError(f"{BUCKET_EDGES_SECONDS} must be increasing positive numbers of seconds")
    days = config[MAX_RANGE_DAYS]
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"{MAX_RANGE_DAYS} must be a whole number of days >= 1")
    tenant = config[TENANT_SETTING]
    if tenant is not None and (not isinstance(tenant, str) or "." not in tenant):
        raise ValueError(f"{TENANT_SETTING} must be a custom setting name with a dot, e.g. 'app.current_account_id'")
    if config[ID_TYPE] not in ("integer", "string", "uuid"):
        raise ValueError(f"{ID_TYPE} must be 'integer', 'string' or 'uuid'")
    unknown_tables = set(config[TABLES]) - set(DEFAULT_TABLES)
    if unknown_tables:
        raise ValueError(f"{TABLES} has unknown keys {sorted(unknown_tables)}; known: {sorted(DEFAULT_TABLES)}")
    for key in config[COLUMNS]:
        table, _, column = key.partition(".")
        if column not in HOST_COLUMNS.get(table, ()) + OPTIONAL_HOST_COLUMNS.get(table, ()):
            raise ValueError(f"{COLUMNS} key {key!r} is not '<table>.<column>' of {HOST_COLUMNS}")
    if not (config[CURSOR_SECRET] or config.get("SECRET_KEY")):
        raise ValueError(f"flowpilot_analytics signs drill-down cursors: set SECRET_KEY or {CURSOR_SECRET}")
