"""What many tests share: the routes, the test host's credentials, the plugin's rows as stored, the
replay command, dead letters as the hook keeps them, and the bound a push must return within."""

from __future__ import annotations

import contextlib
import os
import typing as t
import uuid

import pytest
import sqlalchemy as sa

from flowpilot_analytics.timeutil import as_utc

from .host import NOW, db

BASE = "/api/v1/analytics/flowpilot"
ESCALATIONS = BASE + "/escalations"
HANDOFFS = BASE + "/escalations/handoffs"
PSA = BASE + "/psa-metrics"
OPENAPI = BASE + "/openapi.json"


def as_user(account: int, role: str = "engineer", user: int = 1) -> dict[str, str]:
    """Headers the test host's identity loader reads."""
    return {"X-Account": str(account), "X-Role": role, "X-User": str(user)}


def activity_rows() -> list[dict[str, t.Any]]:
    """The committed rows of ``psa_activity_logs`` (another connection's view), ``created_at`` as
    aware UTC."""
    table = db.metadata.tables["psa_activity_logs"]
    with db.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    for row in rows:
        row["created_at"] = as_utc(row["created_at"])
    return rows


def unavailable(what: str, exc: BaseException) -> t.NoReturn:
    """Locally a missing service skips; in CI it fails, so a green run always means both databases
    ran."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but unreachable: {exc}")
    pytest.skip(f"{what} unreachable: {exc}")


DEMO_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "demo"
)


def load_demo_module(name: str) -> t.Any:
    """A module of the demo host (``examples/demo/<name>.py``), which is not an installed
    package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"flowpilot_demo_{name}", os.path.join(DEMO_DIR, f"{name}.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install_telemetry_sdk() -> None:
    """The OpenTelemetry SDK with in-memory readers, as a host configures it: once per process,
    first."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[METRIC_READER]))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SPAN_EXPORTER))
        trace.set_tracer_provider(provider)


def _telemetry_sinks() -> tuple[t.Any, t.Any]:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemoryMetricReader(), InMemorySpanExporter()


METRIC_READER, SPAN_EXPORTER = _telemetry_sinks()


#: A push with the database locked or hung returns within the hook timeout (250 ms by default); this
#: bound is far above it, to stay quiet on a loaded machine, and far below a stall (a lock held 5 s,
#: a hung server).
HOOK_BOUND_SECONDS = 1.5
#: The test host gives the hook 5 s; the tests of the deadline use the default.
DEFAULT_TIMEOUT = {"FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS": 250}


def replay(app: t.Any) -> t.Any:
    """``flask flowpilot-analytics replay-activities`` on ``app``, through Flask's CLI runner."""
    return app.test_cli_runner().invoke(args=["flowpilot-analytics", "replay-activities"])


def dead_letter_entries(count: int) -> list[dict[str, t.Any]]:
    """Dead letters as the hook keeps them: half with an external id, half without (nothing but the
    key to tell retries apart)."""
    return [
        {
            "account_id": 1 + i % 3,
            "session_id": i,
            "activity_type": ("note_posted", "time_entry_posted")[i % 2],
            "psa_ticket_id": "T",
            "external_id": f"E-{i}" if i % 4 < 2 else None,
            "minutes": None if i % 2 == 0 else float(i % 50),
            "created_at": NOW,
            "idempotency_key": f"key-{i:05d}",
        }
        for i in range(count)
    ]


@contextlib.contextmanager
def throwaway_database(admin_url: str, prefix: str) -> t.Iterator[str]:
    """A PostgreSQL database of its own on the shared server (its URL), dropped afterwards with its
    connections cut; an unreachable server skips (fails in CI)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable("PostgreSQL", exc)
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def journal_entry(key: str, **changes: t.Any) -> dict[str, t.Any]:
    """A dead letter as the hook journals it, under idempotency key ``key``."""
    return {
        "account_id": 1,
        "session_id": 7,
        "activity_type": "time_entry_posted",
        "psa_ticket_id": "T-1",
        "external_id": f"X-{key}",
        "minutes": 15.0,
        "created_at": NOW,
        "idempotency_key": key,
        **changes,
    }
