"""``flask flowpilot-analytics ...``: operator commands, on the blueprint so they exist only where
it is registered.

Domain errors become click usage errors here, in one place (:func:`_reporting`).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import re
import sys
import typing as t
from concurrent.futures import Future, wait

import click
import sqlalchemy as sa
from flask import Blueprint
from marshmallow import Schema, ValidationError, fields, missing, validate

from . import reports, telemetry
from .activities import error_text
from .baselines import MAX_SAMPLES_PER_REQUEST
from .business_hours import CalendarError, holiday_span, holidays_from_ics
from .config import HOST_COLUMNS, Settings
from .deadletter import DeadLetterStore, replay_one
from .deadline import DeadlineRunner
from .errors import AnalyticsError
from .identity import AccountId
from .reports import ReportContext, Route
from .schemas import (
    BaselineBody,
    BaselineSampleBody,
    BusinessHoursVersions,
    CalendarQuery,
    CalendarVersionBody,
    NewBaseline,
    NewCalendarVersion,
    Query,
    flat_columns,
    flat_values,
)
from .state import AnalyticsState, current_state
from .storage import is_redis, redact, redact_uri
from .tables import OPTIONAL_INDEXES, RECOMMENDED_INDEXES, split_name
from .web import schema_problem


class Wanted(t.NamedTuple):
    """An index the plugin's queries (or its exactly-once rule) need: leading columns, and whether
    unique."""

    columns: list[str]
    unique: bool = False


def _covered(wanted: Wanted, indexes: t.Sequence[t.Mapping[str, t.Any]]) -> str | None:
    """The name of an existing index that serves ``wanted``: the same leading columns, or for a
    unique one exactly the same columns and unique."""
    for index in indexes:
        columns = list(index.get("column_names") or [])
        if wanted.unique and (columns != wanted.columns or not index.get("unique")):
            continue
        if columns[: len(wanted.columns)] == wanted.columns:
            return str(index.get("name"))
    return None


def _existing_indexes(
    inspector: sa.Inspector, name: str, schema: str | None
) -> list[dict[str, t.Any]]:
    """Indexes and unique constraints, as indexes."""
    indexes: list[dict[str, t.Any]] = [dict(i) for i in inspector.get_indexes(name, schema=schema)]
    indexes += [
        {"name": c.get("name"), "column_names": c.get("column_names"), "unique": True}
        for c in inspector.get_unique_constraints(name, schema=schema)
    ]
    return indexes


def _create_index(target: sa.Engine, table: sa.Table, name: str, wanted: Wanted) -> str:
    index = sa.Index(
        name,
        *(table.c[c] for c in wanted.columns),
        unique=wanted.unique,
        postgresql_concurrently=target.dialect.name == "postgresql",
    )
    return str(sa.schema.CreateIndex(index).compile(dialect=target.dialect)).strip()


def _check_host_table(
    target: sa.Engine, settings: Settings, logical: str, lines: list[str], fixes: list[str]
) -> None:
    schema, name = split_name(settings.tables[logical])
    label = settings.tables[logical]
    inspector = sa.inspect(target)
    if not inspector.has_table(name, schema=schema):
        lines.append(f"MISSING table {label} ({logical}; map it with FLOWPILOT_ANALYTICS_TABLES)")
        return
    wanted = [
        Wanted([settings.host_column(logical, c) for c in cols])
        for cols in RECOMMENDED_INDEXES[logical]
    ]
    needed = {c for w in wanted for c in w.columns} | {
        settings.host_column(logical, c) for c in HOST_COLUMNS[logical]
    }
    present = {c["name"] for c in inspector.get_columns(name, schema=schema)}
    absent = sorted(needed - present)
    for cols in OPTIONAL_INDEXES.get(logical, ()):  # for an optional column the host has
        columns = [settings.host_column(logical, c) for c in cols]
        if set(columns) <= present:
            wanted.append(Wanted(columns))
    if absent:
        lines.append(
            f"MISSING columns {label}: {', '.join(absent)} "
            f"(map them with FLOWPILOT_ANALYTICS_COLUMNS)"
        )
        return
    existing = _existing_indexes(inspector, name, schema)
    for want in wanted:
        found = _covered(want, existing)
        if found:
            lines.append(f"ok      {label} ({', '.join(want.columns)}): {found}")
            continue
        lines.append(f"MISSING index {label} ({', '.join(want.columns)})")
        table = sa.Table(name, sa.MetaData(), *(sa.Column(c) for c in want.columns), schema=schema)
        fixes.append(_create_index(target, table, f"ix_{name}_{'_'.join(want.columns)}"[:63], want))


def _check_plugin_table(
    target: sa.Engine, table: sa.Table, lines: list[str], fixes: list[str]
) -> None:
    label = f"{table.schema}.{table.name}" if table.schema else table.name
    inspector = sa.inspect(target)
    if not inspector.has_table(table.name, schema=table.schema):
        lines.append(f"MISSING table {label} (plugin)")
        fixes += ddl_statements(table, target.dialect)
        return
    present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
    added = [
        c for c in table.columns if c.name not in present
    ]  # an older version's table: the upgrade path
    if added:
        lines.append(
            f"MISSING columns {label}: {', '.join(c.name for c in added)} "
            f"(upgrade: run the statements below)"
        )
        fixes += [
            f"ALTER TABLE {label} ADD COLUMN "
            f"{str(sa.schema.CreateColumn(c).compile(dialect=target.dialect)).strip()}"
            for c in added
        ]
    existing = _existing_indexes(inspector, table.name, table.schema)
    for index in sorted(table.indexes, key=lambda i: i.name or ""):
        want = Wanted([c.name for c in index.columns], bool(index.unique))
        found = _covered(want, existing)
        if found:
            lines.append(
                f"ok      {label} ({', '.join(want.columns)}{', unique' if want.unique else ''}): "
                f"{found}"
            )
            continue
        lines.append(
            f"MISSING {'unique ' if want.unique else ''}index {label} ({', '.join(want.columns)})"
        )
        detached = table.to_metadata(sa.MetaData())  # never add an index to the host's metadata
        fixes.append(_create_index(target, detached, str(index.name), want))


def diagnose(
    engine: sa.Engine,
    settings: Settings,
    plugin_tables: t.Sequence[sa.Table],
    write_engine: sa.Engine,
    *,
    host_tables: bool = True,
    own_tables: bool = True,
) -> tuple[list[str], list[str]]:
    """Check the host's tables (read engine) and the plugin's own (primary), each unless told not
    to (its database is down); return (report lines, statements)."""
    lines: list[str] = []
    fixes: list[str] = []
    for logical in settings.tables if host_tables else ():
        _check_host_table(engine, settings, logical, lines, fixes)
    for table in plugin_tables if own_tables else ():
        _check_plugin_table(write_engine, table, lines, fixes)
    return lines, fixes


# -- doctor: the services the plugin depends on ----------------------------------------------------

#: Seconds ``doctor`` waits by default for the databases and storages (all asked at once).
CHECK_SECONDS = 5.0
#: Said of a storage in process memory, which has nothing to reach.
IN_PROCESS = "in this process, nothing to reach (no network check)"


class Service(t.NamedTuple):
    """One service ``doctor`` asks: how it is named (credentials masked), the call that asks it
    (returns what it answered, raises when it does not), and what to do when it is down."""

    label: str
    ask: t.Callable[[], str]
    remedy: str
    #: The URI whose credentials an error's text is cleaned of before it is printed.
    uri: str


def _database_uri(engine: sa.Engine) -> str:
    """The engine's URL with its password, for :func:`~.storage.redact` and
    :func:`~.storage.redact_uri` (never printed as it is)."""
    return engine.url.render_as_string(hide_password=False)


def _ask_database(engine: sa.Engine) -> t.Callable[[], str]:
    def ask() -> str:
        with engine.connect() as connection:
            connection.execute(sa.select(sa.literal(1))).scalar()
        return "answers SELECT 1"

    return ask


def _database_services(state: AnalyticsState) -> dict[str, Service]:
    """The primary (``"write"``) and, with ``FLOWPILOT_ANALYTICS_BIND``, the read bind
    (``"read"``)."""
    primary = state.write_engine
    uri = _database_uri(primary)
    bind = state.settings.bind
    reads = "" if bind is not None else "; reports read it too"
    services = {
        "write": Service(
            f"database {redact_uri(uri)} (primary: the hook's writes{reads})",
            _ask_database(primary),
            "the hook dead-letters what it cannot write"
            + (" and reports answer 503" if bind is None else "")
            + " until it answers: check the server and SQLALCHEMY_DATABASE_URI",
            uri,
        )
    }
    if bind is not None:
        engine = state.read_engine
        uri = _database_uri(engine)
        services["read"] = Service(
            f"read bind {bind!r} {redact_uri(uri)} (reports)",
            _ask_database(engine),
            f"reports answer 503 until it answers: check the server and "
            f"SQLALCHEMY_BINDS[{bind!r}] (or unset FLOWPILOT_ANALYTICS_BIND to read the primary)",
            uri,
        )
    return services


def _cache_service(state: AnalyticsState) -> Service:
    cache = state.cache
    uri = cache.storage_uri

    def ask() -> str:
        if cache.ttl <= 0:
            return "not used, the cache is off (FLOWPILOT_ANALYTICS_CACHE_TTL = 0): not checked"
        if not is_redis(uri):
            return IN_PROCESS
        cache.ping()
        return "answers PING"

    return Service(
        f"cache storage {redact_uri(uri)}",
        ask,
        "requests are answered uncached until it answers: start it, or fix "
        "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI",
        uri,
    )


def _limits_service(state: AnalyticsState) -> Service:
    limits = state.limits
    uri = limits.storage_uri

    def ask() -> str:
        if limits.in_process:
            return f"{IN_PROCESS}; each worker counts its own calls"
        if not limits.check():
            raise ConnectionError("no answer to its health check (a PING for Redis)")
        return "answers its health check"

    if limits.host_storage:
        label, setting = (
            "rate-limit storage of the host's Flask-Limiter",
            "the host limiter's storage",
        )
    else:
        label = f"rate-limit storage {redact_uri(uri)}"
        setting = (
            "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI (or RATELIMIT_STORAGE_URI, which it falls "
            "back to)"
        )
    return Service(
        label,
        ask,
        f"limits are counted per process until it answers: start it, or fix {setting}",
        uri,
    )


def check_services(services: t.Mapping[str, Service], timeout: float) -> set[str]:
    """Ask every service at once, on daemon threads, and wait at most ``timeout`` seconds in all (a
    black-holed host cannot hold ``doctor``); print a line for each; return the names of those
    down."""
    runner = DeadlineRunner(max_threads=len(services), name="flowpilot-analytics-doctor")
    asked: dict[str, Future[str]] = {name: runner.submit(s.ask) for name, s in services.items()}
    wait(asked.values(), timeout=timeout)
    down: set[str] = set()
    for name, service in services.items():
        future = asked[name]
        if not future.done():
            problem = f"no answer within {timeout:g} s"
        elif future.exception() is None:
            click.echo(f"ok      {service.label}: {future.result()}")
            continue
        else:
            text = error_text(t.cast(BaseException, future.exception()))
            problem = redact(text, service.uri).rstrip(" .")
        down.add(name)
        click.echo(f"DOWN    {service.label}: {problem}; {service.remedy}")
    return down


def ddl_statements(table: sa.Table, dialect: sa.Dialect) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements for ``table`` in ``dialect``."""
    statements = [str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()]
    statements += [
        str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip()
        for index in sorted(table.indexes, key=lambda i: i.name or "")
    ]
    return statements


def _session_facts(
    state: AnalyticsState, connection: sa.Connection, session_id: t.Any
) -> dict[str, t.Any]:
    """The account and ticket of a host session, read from its row (nothing when there is no such
    row)."""
    sessions = state.prepared().tables.sessions
    with connection.begin():
        row = connection.execute(
            sa.select(sessions.c.account_id, sessions.c.psa_ticket_id).where(
                sessions.c.id == session_id
            )
        ).first()
    if row is None:
        return {}
    ticket = row.psa_ticket_id
    return {"account_id": row.account_id, "psa_ticket_id": None if ticket is None else str(ticket)}


def _dead_letter_counts(store: DeadLetterStore) -> tuple[int | None, int | None]:
    """(dead letters waiting, torn lines found); ``None`` when the store cannot be read (said so, no
    traceback)."""
    try:
        return len(store.pending()), store.torn()
    except Exception as exc:  # e.g. a missing dead-letter table, or a link at the file's path
        click.echo(f"UNREADABLE dead letters in {store.location}: {exc.__class__.__name__}")
        return None, None


def _warn_set_aside(store: DeadLetterStore) -> None:
    """What replays set aside: a warning that says what to do (exit status unchanged)."""
    try:
        aside = store.rejected()
    except Exception as exc:
        click.echo(
            f"UNREADABLE set-aside dead letters in {store.rejected_location}: "
            f"{exc.__class__.__name__}"
        )
        return
    if aside.total:
        click.echo(
            f"WARNING {aside.entries} entries that can never be written and {aside.torn} torn "
            f"lines set aside in {store.rejected_location}: inspect them there (each has its "
            "reason); they are never replayed automatically (after fixing the cause: "
            "`flask flowpilot-analytics replay-activities --retry-rejected`)"
        )


# -- report commands: one per declared report route that names one ---------------------------------

#: Query fields the command line does not offer: it prints a table, or the JSON body with
#: ``--json``.
NOT_OPTIONS = frozenset({"format"})


def _account(state: AnalyticsState, value: str) -> AccountId:
    """The account id as the database holds it (integers unless FLOWPILOT_ANALYTICS_ID_TYPE says
    otherwise)."""
    if state.settings.id_type == "integer":
        try:
            return int(value)
        except ValueError:
            raise click.BadParameter("account ids are integers", param_hint="--account") from None
    return value


def _option(name: str, field: fields.Field[object]) -> click.Option:
    """The option of one query field: its name with dashes, its choices or number type, its
    description."""
    choices = next((v.choices for v in field.validators if isinstance(v, validate.OneOf)), None)
    kind: click.ParamType[object, str] = (
        click.Choice([str(c) for c in choices])
        if choices is not None
        else click.FLOAT
        if isinstance(field, fields.Float)
        else click.INT
        if isinstance(field, fields.Integer)
        else click.STRING
    )
    text = str(field.metadata.get("description", ""))
    default = field.metadata.get(
        "default", None if field.load_default is missing else field.load_default
    )
    if default is not None:
        text += f" Default: {default}."
    return click.Option([f"--{name.replace('_', '-')}", name], type=kind, help=text.strip())


def _query(schema: Schema, options: t.Mapping[str, object]) -> Query:
    try:
        return t.cast(Query, schema.load({k: v for k, v in options.items() if v is not None}))
    except ValidationError as exc:
        messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
        raise click.UsageError(f"invalid options: {messages}") from None


@contextlib.contextmanager
def _reporting() -> t.Iterator[None]:
    """A domain error (e.g. an unsupported grouping) is a usage error on the command line; a
    missing table or a database failure is a short error that says what to do, not a
    traceback."""
    try:
        yield
    except AnalyticsError as exc:
        raise click.UsageError(exc.message) from None
    except sa.exc.SQLAlchemyError as exc:
        missing = schema_problem(exc)
        if missing is not None:
            raise click.ClickException(
                f"the database has no readable {missing}: run `flask flowpilot-analytics doctor`, "
                "which prints the statements that create it"
            ) from None
        raise click.ClickException(
            f"the database failed ({exc.__class__.__name__}); nothing was changed"
        ) from None


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _print_table(rows: list[tuple[str, object]]) -> None:
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {_cell(value)}")


def _print_rows(title: str, schema: Schema, items: t.Sequence[t.Mapping[str, object]]) -> None:
    """A list of body parts as columns (nested parts flattened: ``target.attainment``)."""
    header = flat_columns(schema, ".")
    rows = [[_cell(value) for value in flat_values(schema, item)] for item in items]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    click.echo(f"\n{title}:")
    for row in [header, *rows]:
        click.echo("  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip())


def _print_body(schema: Schema, body: t.Mapping[str, object], title: str = "") -> None:
    """A body as the API returns it, for reading: its scalars as a table, then each nested part and
    each list under its name, then long texts (the metric's definition)."""
    scalars: list[tuple[str, object]] = []
    texts: list[tuple[str, str]] = []
    below: list[t.Callable[[], None]] = []
    for name, field in schema.fields.items():
        value = body.get(name)
        path = f"{title}.{name}" if title else name
        if name not in body:
            continue
        if isinstance(field, fields.Nested) and isinstance(value, t.Mapping):
            below.append(functools.partial(_print_body, field.schema, value, path))
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            items = value if isinstance(value, list) else []
            below.append(functools.partial(_print_rows, path, field.inner.schema, items))
        elif isinstance(value, str) and len(value) > 100:
            texts.append((path, value))
        else:
            scalars.append((name, value))
    if title:
        click.echo(f"\n{title}:")
    _print_table(scalars)
    for part in below:
        part()
    for name, text in texts:
        click.echo(f"\n{name}:\n{text}")


def _report_command(blueprint: Blueprint, route: Route, state: AnalyticsState) -> None:
    """``flask flowpilot-analytics <route.command>``: the route's options from its query schema."""
    args, body = route.args_schema(state), route.body()
    params = [
        click.Option(["--account"], required=True, help="The account to report on."),
        *(_option(name, field) for name, field in args.fields.items() if name not in NOT_OPTIONS),
        click.Option(
            ["--json", "as_json"],
            is_flag=True,
            help="Print the API's JSON body instead of a table.",
        ),
    ]

    def run(account: str, as_json: bool, **options: object) -> None:
        query = _query(args, options)
        with _reporting():
            context = ReportContext.start(current_state(), _account(state, account))
            dumped = body.dump(route.compute(context, query))
        if as_json:
            click.echo(json.dumps(dumped, indent=2, sort_keys=True, default=str))
        else:
            _print_body(body, dumped)

    text = f"{route.summary}, for one account: the same numbers as the API."
    blueprint.cli.command(route.command, params=params, help=text)(run)


def _read_json(file: t.IO[bytes]) -> dict[str, object]:
    try:
        data = json.loads(file.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="FILE") from None
    except RecursionError:
        raise click.BadParameter("the JSON nests too deeply", param_hint="FILE") from None
    if not isinstance(data, dict):
        raise click.BadParameter("a calendar version is a JSON object", param_hint="FILE")
    return data


def _load_version(data: t.Mapping[str, object]) -> NewCalendarVersion:
    try:
        return t.cast(NewCalendarVersion, CalendarVersionBody().load(data))
    except ValidationError as exc:
        messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
        problems = "; ".join(f"{field}: {' '.join(text)}" for field, text in messages.items())
        raise click.UsageError(f"invalid calendar version (nothing stored): {problems}") from None


def _with_feed(data: dict[str, object], feed: t.IO[bytes]) -> dict[str, object]:
    """``data`` with the all-day events of an iCalendar feed added to its holidays, over the years a
    holiday calendar is expanded for."""
    first = _load_version(data).version  # the version must be valid before its feed is read
    try:
        days = holidays_from_ics(feed.read(), *holiday_span(first.effective_from))
    except CalendarError as exc:
        raise click.BadParameter(exc.message, param_hint="--holidays-ics") from None
    given = data.get("holidays") or []
    listed = list(given) if isinstance(given, list) else []
    return {**data, "holidays": listed + [day.isoformat() for day in days]}


def _business_hours_commands(blueprint: Blueprint, state: AnalyticsState) -> None:
    """``flask flowpilot-analytics business-hours show|add``."""

    @blueprint.cli.group("business-hours")
    def business_hours() -> None:
        """An account's business-hours calendar: append-only versions (a correction is a new
        version)."""

    @business_hours.command("show")
    @click.option("--account", required=True, help="The account whose calendar to show.")
    @click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body.")
    def show(account: str, as_json: bool) -> None:
        """The account's versions in creation order, and the one in effect now."""
        with _reporting():
            context = ReportContext.start(current_state(), _account(state, account))
            dumped = BusinessHoursVersions().dump(reports.business_hours(context, CalendarQuery()))
        if as_json:
            click.echo(json.dumps(dumped, indent=2, sort_keys=True, default=str))
            return
        if not dumped["versions"]:
            click.echo(f"Account {account} has no business hours (clock=business answers 409).")
            return
        in_effect = (dumped["in_effect"] or {}).get("id")
        for version in dumped["versions"]:
            mark = "  (in effect now)" if version["id"] == in_effect else ""
            click.echo(
                f"version {version['id']}: from {version['effective_from']} in "
                f"{version['timezone']}, created {version['created_at']}{mark}"
            )
            for day, intervals in version["weekly"].items():
                shown = ", ".join(f"{start}-{end}" for start, end in intervals) or "closed"
                click.echo(f"  {day}  {shown}")
            holidays = version["holidays"]
            span = f" ({holidays[0]} .. {holidays[-1]})" if holidays else ""
            click.echo(f"  holidays: {len(holidays)}{span}")

    @business_hours.command("add")
    @click.option("--account", required=True, help="The account the version belongs to.")
    @click.argument("file", type=click.File("rb"))
    @click.option(
        "--holidays-ics",
        type=click.File("rb"),
        help="An iCalendar feed: its all-day events (recurring ones expanded) become holidays.",
    )
    def add(account: str, file: t.IO[bytes], holidays_ics: t.IO[bytes] | None) -> None:
        """Append the calendar version in FILE (JSON, as POST business-hours takes it)."""
        data = _read_json(file)
        if holidays_ics is not None:
            data = _with_feed(data, holidays_ics)
        args = _load_version(data)
        with _reporting():
            context = ReportContext.start(current_state(), _account(state, account))
            added = reports.add_business_hours(context, args)
        click.echo(
            f"added version {added.id} for account {account}: from {added.effective_from} in "
            f"{added.timezone}, {len(added.holidays)} holidays"
        )


#: A decimal number as a CSV cell holds one (no ``1_000``, ``nan`` or ``inf``).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: The columns of a baseline CSV, in order (``note`` may be left out or empty).
BASELINE_COLUMNS = ("seconds", "measured_at", "note")


def _baseline_rows(file: t.IO[str]) -> list[dict[str, object]]:
    """The samples of a baseline CSV as the route takes them; a usage error names the first bad
    line."""
    try:
        text = file.read()
    except UnicodeDecodeError as exc:
        raise click.UsageError(
            f"the file is not UTF-8 text (byte {exc.start}): save it as UTF-8 CSV; nothing stored"
        ) from None
    # the csv module splits records itself, so a quoted note keeps its line breaks
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [cell.strip() for cell in next(reader, [])]
    if tuple(header) not in (BASELINE_COLUMNS, BASELINE_COLUMNS[:2]):
        raise click.UsageError(
            f"line 1: the header must be {','.join(BASELINE_COLUMNS)} (note optional); "
            "nothing stored"
        )
    samples: list[dict[str, object]] = []
    for cells in reader:
        number = reader.line_num  # the record's last line: a quoted note may span several
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            raise click.UsageError(f"line {number}: {len(cells)} cells for {len(header)} columns")
        values = dict(zip(header, cells))
        text = values.get("seconds", "").strip()
        # a plain decimal number; anything else goes to the schema as text, which refuses it by name
        seconds: object = float(text) if _DECIMAL.fullmatch(text) else text
        note = values.get("note") or None
        sample = {"seconds": seconds, "measured_at": values.get("measured_at"), "note": note}
        try:
            BaselineSampleBody().load(sample)
        except ValidationError as exc:
            messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
            problems = "; ".join(f"{field}: {' '.join(text)}" for field, text in messages.items())
            raise click.UsageError(f"line {number}: {problems}; nothing stored") from None
        samples.append(sample)
    return samples


def _baseline_commands(blueprint: Blueprint, state: AnalyticsState) -> None:
    """``flask flowpilot-analytics baseline import``."""

    @blueprint.cli.group("baseline")
    def baseline() -> None:
        """The stopwatch baseline a savings claim is paired with."""

    @baseline.command("import")
    @click.option("--account", required=True, help="The account the samples belong to.")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    def import_samples(account: str, file: str) -> None:
        """Add the samples of a CSV with the columns seconds,measured_at,note (all or none)."""
        # newline="": the csv module sees a quoted note's line breaks as they are
        with open(file, encoding="utf-8-sig", newline="") as opened:
            samples = _baseline_rows(opened)
        if not 1 <= len(samples) <= MAX_SAMPLES_PER_REQUEST:
            raise click.UsageError(
                f"the file has {len(samples):,} samples; import 1 to {MAX_SAMPLES_PER_REQUEST:,} "
                "at a time (split a larger file); nothing stored"
            )
        try:
            args = t.cast(NewBaseline, BaselineBody().load({"samples": samples}))
        except ValidationError as exc:
            messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
            raise click.UsageError(f"invalid samples (nothing stored): {messages}") from None
        with _reporting():
            context = ReportContext.start(current_state(), _account(state, account))
            added = reports.add_baseline(context, args)
        count = len(added.samples)
        noun = "sample" if count == 1 else "samples"
        click.echo(f"imported {count} baseline {noun} for account {account}")


def register_commands(blueprint: Blueprint, state: AnalyticsState) -> None:
    """Attach the commands to the blueprint's CLI group."""
    for route in reports.REPORT_ROUTES:
        if route.command is not None:
            _report_command(blueprint, route, state)
    _business_hours_commands(blueprint, state)
    _baseline_commands(blueprint, state)

    @blueprint.cli.command("replay-activities")
    @click.option(
        "--retry-rejected",
        is_flag=True,
        help="Also try again the entries set aside as never writable (after fixing their cause).",
    )
    def replay_activities(retry_rejected: bool) -> None:
        """Write the activities the hook could not record (dead letters); safe to run again.

        Each activity is written once, by its idempotency key, however many replays run, at the same
        time or one after another. An activity kept without its account (the database did not answer
        when the hook read the pushed session) gets it from the session's row. Entries that fail in
        a way that may pass (the database down, a missing table) stay in the store; the exit status
        is then 1. Entries that can never be written (refused by the checks, the columns or a
        constraint) and torn lines are set aside in ``<file>.rejected`` with their reason and never
        replayed unless ``--retry-rejected`` says so. Refuses to run as another user than the
        store's owner.
        """
        state = current_state()
        store = state.dead_letters
        table = state.activity_io
        try:
            store.check_owner()
        except PermissionError as exc:
            click.echo(str(exc))
            sys.exit(1)

        def write(payload: dict[str, t.Any]) -> str:
            with state.write_engine.connect() as connection:
                if payload.get("account_id") is None and payload.get("session_id") is not None:
                    payload.update(_session_facts(state, connection, payload["session_id"]))
                outcome = replay_one(connection, table, state.settings.tenant_setting, payload)
            if outcome == "written":  # answers cached before it (a shared cache) no longer hold
                state.cache.invalidate("psa_metrics", payload["account_id"], None)
            telemetry.replayed.add(
                1, {"activity_type": str(payload.get("activity_type")), "outcome": outcome}
            )
            return outcome

        try:
            report = store.drain(write, retry_rejected=retry_rejected)
        except OSError as exc:  # a store file refused (a link) or unreadable: nothing was dropped
            click.echo(f"could not replay the dead letters in {store.location}: {error_text(exc)}")
            sys.exit(1)
        if report.requeued:
            click.echo(f"{report.requeued} entries set aside before were tried again")
        click.echo(
            f"dead letters in {store.location}: written {report.written}, "
            f"already present {report.present}, still failing {report.failed}, "
            f"set aside {report.rejected + report.torn}"
        )
        for error in report.errors[:10]:
            click.echo(f"  {error}")
        if report.rejected or report.torn:
            click.echo(
                f"set aside in {store.rejected_location}: {report.rejected} entries that can never "
                f"be written, {report.torn} torn lines; inspect them there (they are never "
                "replayed automatically; after fixing the cause: "
                "`flask flowpilot-analytics replay-activities --retry-rejected`)"
            )
            for reason in report.reasons[:10]:
                click.echo(f"  {reason}")
        if report.failed:
            sys.exit(1)

    @blueprint.cli.command("doctor")
    @click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=CHECK_SECONDS,
        show_default=True,
        help="Seconds to wait for the databases and storages, asked at once; one that has not "
        "answered by then is DOWN.",
    )
    def doctor(timeout: float) -> None:
        """Check what the plugin depends on and print what fixes it: the databases and storages it
        reaches, the tables and indexes its queries need, and the dead letters.

        Exit status 0: everything is in place (what replays set aside is a WARNING only, and so is
        its file being unreadable: no command can fix it, someone must read it). Exit status 1:
        something needs doing: a database or storage DOWN, a table, column or index MISSING, dead
        letters (BACKLOG) or torn lines (TORN) waiting for a replay, or an UNREADABLE dead-letter
        store. Exit status 2: the command line is wrong.
        """
        state = current_state()
        store = state.dead_letters
        databases = _database_services(state)
        services = {**databases, "cache": _cache_service(state), "limits": _limits_service(state)}
        down = check_services(services, timeout)
        read_down = ("read" if "read" in databases else "write") in down  # the host's tables
        if read_down:
            click.echo("SKIPPED the host's tables and indexes: their database is down (above)")
        if "write" in down:
            click.echo("SKIPPED the plugin's tables and indexes: the primary is down (above)")
        lines, fixes = diagnose(
            state.read_engine,
            state.settings,
            state.plugin_tables,
            state.write_engine,
            host_tables=not read_down,
            own_tables="write" not in down,
        )
        for line in lines:
            click.echo(line)
        waiting, torn = _dead_letter_counts(store)
        if waiting:
            click.echo(
                f"BACKLOG {waiting} dead letters in {store.location}: run "
                f"`flask flowpilot-analytics replay-activities`"
            )
        elif waiting == 0:
            click.echo(f"ok      no dead letters in {store.location}")
        if torn:
            click.echo(
                f"TORN    {torn} torn lines found in {store.location} (cut by a crash or a full "
                f"disk): run `flask flowpilot-analytics replay-activities`, which sets them aside "
                f"in {store.rejected_location}"
            )
        _warn_set_aside(store)
        if fixes:
            click.echo(
                "\nRun these statements (PostgreSQL: CONCURRENTLY keeps the table writable):"
            )
            for statement in fixes:
                click.echo(statement + ";")
        if down or fixes or waiting != 0 or torn != 0:
            sys.exit(1)
        click.echo("\nEverything the plugin needs is in place.")

    @blueprint.cli.command("ddl")
    @click.option(
        "--dialect",
        "dialect_name",
        default=None,
        help="postgresql, sqlite, mysql...; default: the app's database.",
    )
    def ddl(dialect_name: str | None) -> None:
        """Print the DDL of the plugin's own tables (activities, business hours), for hosts that
        manage their schema with migrations."""
        state = current_state()
        if dialect_name:
            try:
                dialect = sa.dialects.registry.load(dialect_name)()
            except sa.exc.NoSuchModuleError:
                raise click.BadParameter(
                    f"unknown SQLAlchemy dialect {dialect_name!r}", param_hint="--dialect"
                ) from None
        else:
            dialect = state.write_engine.dialect
        for table in state.plugin_tables:
            for statement in ddl_statements(table, dialect):
                click.echo(statement + ";\n")
