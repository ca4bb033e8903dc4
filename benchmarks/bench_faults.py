"""The fault figures of issue 17 (items 3, 8, 9) from one run: the closing note's table.

A report, not a test: it runs the fault suite's own scenarios (``tests/test_kills.py``,
``tests/test_faults.py``) and prints each one's line whether its assertion holds or not; it always
exits 0.

    .venv/bin/python benchmarks/bench_faults.py [--kills N] [--seconds S] [--seed S]
        [--skip-postgres]

Random kills (SIGKILL at seeded random moments, the pusher restarted each time) on PostgreSQL
healthy, on PostgreSQL with the activity table locked by a "migration", and on a SQLite file; then
the push budget with the database hung, the tables locked, and 64 threads dead-lettering; then RSS
while the database hangs. PostgreSQL at ``FPA_BENCH_PG`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432``), in databases it creates and drops.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import sys
import tempfile
import typing as t
import uuid

import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@contextlib.contextmanager
def database(server: str) -> t.Iterator[str]:
    """A database of its own on ``server``, dropped afterwards (connections cut)."""
    name = f"fpa_bench_faults_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def report(scenario: t.Callable[..., None], *args: t.Any) -> None:
    """Run one scenario of the suite; its figures are printed by the scenario itself, an assertion
    noted."""
    try:
        scenario(*args)
    except AssertionError as exc:
        first = next(iter(str(exc).splitlines()), "")
        print(f"  ^ fails its assertion{': ' + first[:200] if first else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=10, help="kills per scenario (default 10)")
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="a scenario's kills stop after this long"
    )
    parser.add_argument("--seed", default="17")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    quiet = logging.getLogger(
        "flowpilot_analytics"
    )  # the hook's ERROR per dead letter is expected here
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    os.environ["FPA_KILLS"], os.environ["FPA_KILL_SEED"] = str(args.kills), args.seed
    from tests import (
        test_faults,
        test_kills,
    )  # after the environment: they read the kills and the seed

    test_kills.SCENARIO_SECONDS = args.seconds
    server = os.environ.get("FPA_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")

    print(
        f"== random kills: SIGKILL after {test_kills.KILL_DELAY[0]}-{test_kills.KILL_DELAY[1]} s, "
        f"seed {args.seed}"
    )
    outcomes = []
    scenarios: list[tuple[str, t.Callable[[str], t.ContextManager[t.Any]]]] = [
        ("sqlite file", lambda uri: contextlib.nullcontext())
    ]
    if not args.skip_postgres:
        scenarios = [
            ("postgresql, healthy", lambda uri: contextlib.nullcontext()),
            ("postgresql, table locked by a migration", test_kills.TableLockedByMigration),
            *scenarios,
        ]
    for fault, during in scenarios:
        with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
            if fault.startswith("postgresql"):
                uri = stack.enter_context(database(server))
            else:
                uri = f"sqlite:///{os.path.join(folder, 'host.db')}"
            outcome = test_kills.kill_randomly(fault, uri, folder, lambda: during(uri))  # noqa: B023
            outcomes.append(outcome)
            print(outcome.line(), flush=True)

    print(
        f"\n== push budget: HOOK_TIMEOUT_MS={test_faults.BUDGET_MS}, ceiling "
        f"{test_faults.CEILING_MS} ms"
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp = pathlib.Path(folder)
        if not args.skip_postgres:
            with database(server) as uri:
                (tmp / "hung").mkdir()
                report(
                    test_faults.test_push_budget_with_the_database_hung_and_the_pushed_object_expired,
                    uri,
                    tmp / "hung",
                )
            for n, locked in enumerate(
                [("psa_activity_logs",), ("psa_activity_logs", "ai_sessions")]
            ):
                with database(server) as uri:
                    (tmp / f"locked{n}").mkdir()
                    report(
                        test_faults.test_push_budget_with_the_tables_locked_by_a_migration,
                        uri,
                        tmp / f"locked{n}",
                        locked,
                    )
        (tmp / "threads").mkdir()
        report(
            test_faults.test_push_budget_with_64_threads_while_the_dead_letter_lock_is_held,
            tmp / "threads",
        )

    print("\n== memory while the database hangs")
    with tempfile.TemporaryDirectory() as folder:
        report(test_kills.test_memory_stays_flat_while_the_database_hangs, pathlib.Path(folder))

    print("\n== closing note")
    print(
        "| fault | pushes accepted | rows after replay | lost | doubled | max push latency "
        "| in flight at a kill (of them lost) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        print(
            f"| {o.fault} ({o.kills} x SIGKILL) | {len(o.accepted)} | {len(o.rows)} | {o.lost} | "
            f"{o.doubled} | {o.max_latency_ms:.0f} ms | {len(o.in_flight)} ({o.lost_in_flight}) |"
        )


if __name__ == "__main__":
    main()
