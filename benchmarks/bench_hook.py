"""What recording costs a push: the wrapped push against the bare one, on SQLite and PostgreSQL.

A report, not a test: it prints medians and ratios side by side from one run and always exits 0.
``.venv/bin/python benchmarks/bench_hook.py [--pushes N] [--skip-postgres]``; PostgreSQL at
``FPA_BENCH_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432``), in a database it
creates and drops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
import typing as t
import uuid

import sqlalchemy as sa
from flask import Flask

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flowpilot_analytics import registration
from tests import host
from tests.host import db


class BarePsa:
    """A PSA service that answers at once, so that the figures are the hook's own cost."""

    def __init__(self) -> None:
        self.n = 0

    def push_note(self, session: t.Any, text: str) -> dict[str, str]:
        self.n += 1
        return {"id": f"N-{self.n}"}

    def push_time_entry(self, session: t.Any, minutes: float) -> dict[str, str]:
        self.n += 1
        return {"id": f"T-{self.n}"}


def make_app(uri: str, dead_letters: str) -> Flask:
    """The test suite's host on ``uri``, with the hook's default timeout."""
    app = host.create_app(
        uri,
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=dead_letters,
        FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS=250,
    )
    with app.app_context():
        db.create_all(bind_key=None)
    return app


def timed(call: t.Callable[[], t.Any], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def run(label: str, uri: str, pushes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = make_app(uri, os.path.join(folder, "dead.jsonl"))
        analytics = app.extensions["test_analytics"]
        bare, wrapped = BarePsa(), analytics.wrap_psa_service(BarePsa())
        session = types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T")
        with app.app_context():

            def in_host_transaction(service: t.Any) -> t.Callable[[], t.Any]:
                def push() -> None:
                    db.session.execute(sa.text("SELECT 1"))
                    service.push_time_entry(session, 15)
                    db.session.commit()

                return push

            contenders = {
                "bare push": lambda: bare.push_time_entry(session, 15),
                "recorded push": lambda: wrapped.push_time_entry(session, 15),
                "bare push in a host transaction": in_host_transaction(bare),
                "recorded push in a host transaction": in_host_transaction(wrapped),
            }
            timed(contenders["recorded push"], 20)  # warm-up: pool, statement cache, helper thread
            results = {name: [] for name in contenders}
            for _ in range(5):  # interleaved rounds
                for name, call in contenders.items():
                    results[name] += timed(call, pushes // 5)
            rows = db.session.scalar(
                sa.select(sa.func.count()).select_from(db.metadata.tables["psa_activity_logs"])
            )
            dead = len(registration(app).dead_letters.pending())
            db.session.remove()
            db.engine.dispose()
    print(
        f"\n== {label}: {pushes} pushes per contender, {rows} rows recorded, {dead} dead letters =="
    )
    for name, samples in results.items():
        print(
            f"  {name:40s} median {statistics.median(samples):7.3f} ms   p95 "
            f"{statistics.quantiles(samples, n=20)[18]:7.3f} ms"
        )
    for setting in ("", " in a host transaction"):
        recorded = statistics.median(results[f"recorded push{setting}"])
        bare_ms = statistics.median(results[f"bare push{setting}"])
        print(f"  recording cost{setting or ''}: {recorded - bare_ms:.3f} ms per push")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pushes", type=int, default=500)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run("SQLite", f"sqlite:///{os.path.join(folder, 'hook.db')}", args.pushes)
    if args.skip_postgres:
        return
    server = os.environ.get("FPA_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
    name = f"fpa_bench_hook_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        run("PostgreSQL", f"{server}/{name}", args.pushes)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
