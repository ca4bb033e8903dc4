"""``flask flowpilot-analytics ...``: operator commands, on the blueprint so they exist only where it is registered."""

from __future__ import annotations

import sys
import typing as t

import click
import sqlalchemy as sa
from flask import Blueprint

from .deadletter import replay_one
from .extension import current_state
from .tables import RECOMMENDED_INDEXES, host_column_name, host_table_names, set_tenant


def _covered(wanted: list[str], indexes: list[dict[str, t.Any]]) -> str | None:
    """The name of an existing index whose leading columns are ``wanted``, if any."""
    for index in indexes:
        if list(index.get("column_names") or [])[: len(wanted)] == wanted:
            return str(index.get("name"))
    return None


def diagnose(engine: sa.Engine, config: t.Mapping[str, t.Any], activity_table: sa.Table,
             write_engine: sa.Engine) -> tuple[list[str], list[str]]:
    """Check the host's tables and the plugin's own; return (report lines, statements to run)."""
    lines: list[str] = []
    fixes: list[str] = []
    checks: list[tuple[sa.Engine, str | None, str, list[list[str]], str]] = []
    for logical, full_name in host_table_names(config).items():
        schema, _, name = full_name.rpartition(".")
        columns = [[host_column_name(config, logical, c) for c in wanted] for wanted in RECOMMENDED_INDEXES[logical]]
        checks.append((engine, schema or None, name, columns, logical))
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
        needed = {c for wanted in wanted_indexes for c in wanted}
        if role != "plugin":
            logical_columns = {host_column_name(config, role, c) for c in _logical_columns(role)}
            needed |= logical_columns
        absent = sorted(needed - present)
        if absent:
            lines.append(f"MISSING columns {label}: {', '.join(absent)} (map them with FLOWPILOT_ANALYTICS_COLUMNS)")
            continue
        indexes = inspector.get_indexes(name, schema=schema)
        for wanted in wanted_indexes:
            found = _covered(wanted, indexes)
            if found:
                lines.append(f"ok      {label} ({', '.join(wanted)}): {found}")
                continue
            lines.append(f"MISSING index {label} ({', '.join(wanted)})")
            table = sa.Table(name, sa.MetaData(), *(sa.Column(c) for c in wanted), schema=schema)
            index_name = f"ix_{name}_{'_'.join(wanted)}"[:63]
            index = sa.Index(index_name, *(table.c[c] for c in wanted),
                             postgresql_concurrently=target.dialect.name == "postgresql")
            fixes.append(str(sa.schema.CreateIndex(index).compile(dialect=target.dialect)).strip())
    return lines, fixes


def _logical_columns(logical: str) -> tuple[str, ...]:
    from .config import HOST_COLUMNS

    return HOST_COLUMNS[logical]


def ddl_statements(table: sa.Table, dialect: sa.Dialect) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements for ``table`` in ``dialect``."""
    statements = [str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()]
    statements += [str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip()
                   for index in sorted(table.indexes, key=lambda i: i.name or "")]
    return statements


def register_commands(blueprint: Blueprint) -> None:
    """Attach the commands to the blueprint's CLI group."""

    @blueprint.cli.command("replay-activities")
    def replay_activities() -> None:
        """Write the activities the hook could not record (dead letters); safe to run again.

        Each is skipped when already present (same account, type and external id). Those that still
        fail stay in the store; the exit status is then 1.
        """
        state = current_state()
        table = state.activity_io

        def write(payload: dict[str, t.Any]) -> str:
            with state.write_engine.begin() as connection:
                set_tenant(connection, state.tenant_setting, payload["account_id"])
                return replay_one(connection, table, payload)

        report = state.dead_letters.drain(write)
        click.echo(f"dead letters in {state.dead_letters.path}: written {report.written}, "
                   f"already present {report.present}, still failing {report.failed}")
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
        lines, fixes = diagnose(state.read_engine, state.config, state.activity_table, state.write_engine)
        for line in lines:
            click.echo(line)
        if fixes:
            click.echo("\nRun these statements (PostgreSQL: CONCURRENTLY keeps the table writable):")
            for statement in fixes:
                click.echo(statement + ";")
            sys.exit(1)
        click.echo("\nEverything the plugin's queries need is in place.")

    @blueprint.cli.command("ddl")
    @click.option("--dialect", "dialect_name", default=None,
                  help="postgresql, sqlite, mysql...; default: the app's database.")
    def ddl(dialect_name: str | None) -> None:
        """Print the DDL of the plugin's own table, for hosts that manage their schema with migrations."""
        state = current_state()
        if dialect_name:
            try:
                dialect = sa.dialects.registry.load(dialect_name)()
            except sa.exc.NoSuchModuleError:
                raise click.BadParameter(f"unknown SQLAlchemy dialect {dialect_name!r}", param_hint="--dialect")
        else:
            dialect = state.write_engine.dialect
        for statement in ddl_statements(state.activity_table, dialect):
            click.echo(statement + ";\n")
