"""``flask flowpilot-analytics ...``: operator commands, on the blueprint so they exist only where it is registered.

Domain errors become click usage errors here, in one place (:func:`_reporting`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import typing as t

import click
import sqlalchemy as sa
from flask import Blueprint
from marshmallow import Schema, ValidationError

from . import reports
from .config import HOST_COLUMNS, Settings
from .deadletter import replay_one
from .errors import AnalyticsError
from .periods import PERIODS
from .schemas import Schemas
from .state import AnalyticsState, current_state
from .tables import RECOMMENDED_INDEXES, split_name


def _covered(wanted: list[str], indexes: t.Sequence[t.Mapping[str, t.Any]]) -> str | None:
    """The name of an existing index whose leading columns are ``wanted``, if any."""
    for index in indexes:
        if list(index.get("column_names") or [])[: len(wanted)] == wanted:
            return str(index.get("name"))
    return None


def diagnose(
    engine: sa.Engine, settings: Settings, activity_table: sa.Table, write_engine: sa.Engine
) -> tuple[list[str], list[str]]:
    """Check the host's tables and the plugin's own; return (report lines, statements to run)."""
    lines: list[str] = []
    fixes: list[str] = []
    checks: list[tuple[sa.Engine, str | None, str, list[list[str]], str]] = []
    for logical, full_name in settings.tables.items():
        schema, name = split_name(full_name)
        columns = [[settings.host_column(logical, c) for c in wanted] for wanted in RECOMMENDED_INDEXES[logical]]
        checks.append((engine, schema, name, columns, logical))
    own = [[c.name for c in index.columns] for index in activity_table.indexes]
    checks.append((write_engine, activity_table.schema, activity_table.name, own, "plugin"))
    for target, schema, name, wanted_indexes, role in checks:
        inspector = sa.inspect(target)
        label = f"{schema}.{name}" if schema else name
        if not inspector.has_table(name, schema=schema):
            lines.append(f"MISSING table {label} ({role})")
            if role == "plugin":
                fixes += ddl_statements(activity_table, target.dialect)
            continue
        present = {c["name"] for c in inspector.get_columns(name, schema=schema)}
        if role == "plugin":  # an older version's table: add what this version writes (upgrade path)
            added = [c for c in activity_table.columns if c.name not in present]
            if added:
                lines.append(
                    f"MISSING columns {label}: {', '.join(c.name for c in added)} (upgrade: run the statements below)"
                )
                fixes += [
                    f"ALTER TABLE {label} ADD COLUMN "
                    f"{str(sa.schema.CreateColumn(c).compile(dialect=target.dialect)).strip()}"
                    for c in added
                ]
        else:
            needed = {c for wanted in wanted_indexes for c in wanted}
            needed |= {settings.host_column(role, c) for c in HOST_COLUMNS[role]}
            absent = sorted(needed - present)
            if absent:
                lines.append(
                    f"MISSING columns {label}: {', '.join(absent)} (map them with FLOWPILOT_ANALYTICS_COLUMNS)"
                )
                continue
        indexes = inspector.get_indexes(name, schema=schema)
        concurrently = target.dialect.name == "postgresql"
        for wanted in wanted_indexes:
            found = _covered(wanted, indexes)
            if found:
                lines.append(f"ok      {label} ({', '.join(wanted)}): {found}")
                continue
            lines.append(f"MISSING index {label} ({', '.join(wanted)})")
            if role == "plugin":  # the declared index itself (unique where it is), on a copy of the table
                copy = activity_table.to_metadata(sa.MetaData())
                index = next(i for i in copy.indexes if [c.name for c in i.columns] == wanted)
                index.dialect_options["postgresql"]["concurrently"] = concurrently
            else:
                table = sa.Table(name, sa.MetaData(), *(sa.Column(c) for c in wanted), schema=schema)
                index = sa.Index(
                    f"ix_{name}_{'_'.join(wanted)}"[:63],
                    *(table.c[c] for c in wanted),
                    postgresql_concurrently=concurrently,
                )
            fixes.append(str(sa.schema.CreateIndex(index).compile(dialect=target.dialect)).strip())
    return lines, fixes


def ddl_statements(table: sa.Table, dialect: sa.Dialect) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements for ``table`` in ``dialect``."""
    statements = [str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()]
    statements += [
        str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip()
        for index in sorted(table.indexes, key=lambda i: i.name or "")
    ]
    return statements


def _account(state: AnalyticsState, value: str) -> t.Any:
    """The account id as the database holds it (integers unless FLOWPILOT_ANALYTICS_ID_TYPE says otherwise)."""
    if state.settings.id_type == "integer":
        try:
            return int(value)
        except ValueError:
            raise click.BadParameter("account ids are integers", param_hint="--account") from None
    return value


def _args(schema: Schema, options: dict[str, t.Any]) -> dict[str, t.Any]:
    try:
        return t.cast(dict[str, t.Any], schema.load({k: v for k, v in options.items() if v is not None}))
    except ValidationError as exc:
        raise click.UsageError(f"invalid options: {exc.normalized_messages()}") from None  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _reporting() -> t.Iterator[None]:
    """A domain error (e.g. an unsupported grouping) is a usage error on the command line."""
    try:
        yield
    except AnalyticsError as exc:
        raise click.UsageError(exc.message) from None


def _print_table(rows: list[tuple[str, t.Any]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {'-' if value is None else value}")


def _report_options(fn: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    for option in reversed(
        [
            click.option("--account", required=True, help="The account to report on."),
            click.option("--period", type=click.Choice(list(PERIODS)), help="7d, 30d or 90d (default 30d)."),
            click.option("--since", help="Start of a custom range, ISO 8601 (with --until)."),
            click.option("--until", help="End of a custom range, ISO 8601 (with --since)."),
            click.option("--compare", type=click.Choice(["previous"]), help="Add the window just before."),
            click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body instead of a table."),
        ]
    ):
        fn = option(fn)
    return fn


def register_commands(blueprint: Blueprint, schemas: Schemas) -> None:
    """Attach the commands to the blueprint's CLI group."""

    @blueprint.cli.command("escalations")
    @_report_options
    @click.option("--group-by", type=click.Choice(["engineer"]), help="Add one group per claimer.")
    def escalations_command(account: str, as_json: bool, group_by: str | None, **options: t.Any) -> None:
        """Print the escalation metric of one account, the same numbers as the API."""
        state = current_state()
        args = _args(schemas.escalation_args, {**options, "group_by": group_by})
        with _reporting():
            body = schemas.escalation_metrics.dump(reports.escalation_report(state, _account(state, account), args))
        if as_json:
            click.echo(json.dumps(body, indent=2, sort_keys=True, default=str))
            return
        _print_table(
            [
                (k, body[k])
                for k in (
                    "period",
                    "window_start",
                    "window_end",
                    "n_handoffs_claimed",
                    "n_handoffs_with_action",
                    "avg_seconds",
                    "median_seconds",
                    "p95_seconds",
                )
            ]
        )
        click.echo("\ndistribution:")
        _print_table(
            [
                (
                    f"[{b['min_seconds']:g}, {'' if b['max_seconds'] is None else format(b['max_seconds'], 'g')})",
                    b["count"],
                )
                for b in body["distribution"]["buckets"]
            ]
            + [("no action", body["distribution"]["no_action"])]
        )
        if "previous" in body:
            click.echo("\nprevious window:")
            _print_table(list(body["previous"].items()))
        for group in body.get("groups", []):
            click.echo(f"\nengineer {group['engineer']}:")
            _print_table([(k, v) for k, v in group.items() if k != "engineer"])
        click.echo("\n" + body["metric_definition"])

    @blueprint.cli.command("psa-metrics")
    @_report_options
    @click.option("--tz", default="UTC", show_default=True, help="IANA zone for the daily trend.")
    def psa_metrics_command(account: str, as_json: bool, tz: str, **options: t.Any) -> None:
        """Print the PSA metrics of one account, the same numbers as the API."""
        state = current_state()
        args = _args(schemas.psa_args, {**options, "tz": tz})
        with _reporting():
            body = schemas.psa_metrics.dump(reports.psa_report(state, _account(state, account), args))
        if as_json:
            click.echo(json.dumps(body, indent=2, sort_keys=True, default=str))
            return
        _print_table(
            [
                ("period", body["period"]),
                ("window_start", body["window_start"]),
                ("window_end", body["window_end"]),
                ("timezone", body["timezone"]),
                *((f"time_entries.{k}", v) for k, v in body["time_entries"].items()),
                *((f"funnel.{k}", v) for k, v in body["funnel"].items()),
            ]
        )
        if "previous" in body:
            click.echo("\nprevious window:")
            _print_table(
                [
                    ("window_start", body["previous"]["window_start"]),
                    *((f"funnel.{k}", v) for k, v in body["previous"]["funnel"].items()),
                ]
            )
        click.echo("\ndate        sessions  notes  time_entries  minutes")
        for row in body["daily_trend"]:
            click.echo(
                f"{row['date']}  {row['sessions']:>8}  {row['notes_posted']:>5}  {row['time_entries']:>12}  "
                f"{row['minutes']:>7g}"
            )

    @blueprint.cli.command("replay-activities")
    def replay_activities() -> None:
        """Write the activities the hook could not record (dead letters); safe to run again.

        Each activity is written once, by its idempotency key, however many replays run, at the same
        time or one after another. Entries that fail (or fail the hook's checks) stay in the store; the
        exit status is then 1.
        """
        state = current_state()
        table = state.activity_io

        def write(payload: dict[str, t.Any]) -> str:
            with state.write_engine.connect() as connection:
                return replay_one(connection, table, state.settings.tenant_setting, payload)

        report = state.dead_letters.drain(write)
        click.echo(
            f"dead letters in {state.dead_letters.location}: written {report.written}, "
            f"already present {report.present}, still failing {report.failed}"
        )
        for error in report.errors[:10]:
            click.echo(f"  {error}")
        if report.failed:
            sys.exit(1)

    @blueprint.cli.command("doctor")
    def doctor() -> None:
        """Check the tables and indexes the plugin's queries need; print the statements that fix what is missing.

        Exits with status 1 when anything is missing.
        """
        state = current_state()
        lines, fixes = diagnose(state.read_engine, state.settings, state.activity_table, state.write_engine)
        for line in lines:
            click.echo(line)
        if fixes:
            click.echo("\nRun these statements (PostgreSQL: CONCURRENTLY keeps the table writable):")
            for statement in fixes:
                click.echo(statement + ";")
            sys.exit(1)
        click.echo("\nEverything the plugin's queries need is in place.")

    @blueprint.cli.command("ddl")
    @click.option(
        "--dialect", "dialect_name", default=None, help="postgresql, sqlite, mysql...; default: the app's database."
    )
    def ddl(dialect_name: str | None) -> None:
        """Print the DDL of the plugin's own table, for hosts that manage their schema with migrations."""
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
        for statement in ddl_statements(state.activity_table, dialect):
            click.echo(statement + ";\n")
