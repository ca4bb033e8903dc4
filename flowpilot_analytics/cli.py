"""``flask flowpilot-analytics ...``: operator commands, on the blueprint so they exist only where it is registered."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask import Blueprint

from .extension import current_state


def ddl_statements(table: sa.Table, dialect: sa.Dialect) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements for ``table`` in ``dialect``."""
    statements = [str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()]
    statements += [str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip()
                   for index in sorted(table.indexes, key=lambda i: i.name or "")]
    return statements


def register_commands(blueprint: Blueprint) -> None:
    """Attach the commands to the blueprint's CLI group."""

    @blueprint.cli.command("ddl")
    @click.option("--dialect", "dialect_name", default=None,
                  help="postgresql, sqlite, mysql...; default: the app's database.")
    def ddl(dialect_name: str | None) -> None:
        """Print the DDL of the plugin's own table, for hosts that manage their schema with migrations."""
        state = current_state()
        if dialect_name:
            dialect = sa.dialects.registry.load(dialect_name)()
        else:
            dialect = state.write_engine.dialect
        for statement in ddl_statements(state.activity_table, dialect):
            click.echo(statement + ";\n")
