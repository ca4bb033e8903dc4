"""OpenTelemetry metrics and spans, through the API only: no-ops until the host configures an SDK.

The plugin never sets a global provider. Instruments are made once per process from the API's global
meter and tracer, which follow the provider the host sets, even a later one. Attributes carry no
personal data: route, backend, period, interval, activity type, outcome and row counts; never note
text, never the ids of accounts or people.
"""

from __future__ import annotations

import contextlib
import time
import typing as t
import weakref

from opentelemetry import metrics, trace

NAME = "flowpilot_analytics"

_meter = metrics.get_meter(NAME)
_tracer = trace.get_tracer(NAME)

#: Activities the hook wrote (``activity_type``).
recorded = _meter.create_counter(
    f"{NAME}.activities.recorded",
    unit="{activity}",
    description="Activities the hook wrote to the activity table.",
)
#: Pushes whose activity was already there (a retried push), by ``activity_type``.
duplicates = _meter.create_counter(
    f"{NAME}.activities.duplicate",
    unit="{activity}",
    description="Pushes whose activity was already recorded (a retry).",
)
#: Activities kept as dead letters, by ``activity_type``.
dead_lettered = _meter.create_counter(
    f"{NAME}.activities.dead_lettered",
    unit="{activity}",
    description="Activities the hook could not write, kept as dead letters.",
)
#: Dead letters a replay wrote or found present, by ``activity_type`` and ``outcome``.
replayed = _meter.create_counter(
    f"{NAME}.activities.replayed",
    unit="{activity}",
    description="Dead letters replay-activities wrote (or found present).",
)
#: Activities lost to the record: unreadable pushes, or a dead-letter store that failed too.
failed = _meter.create_counter(
    f"{NAME}.activities.failed",
    unit="{activity}",
    description="Activities neither written nor kept (only an ERROR log has them).",
)
#: Seconds one report took to compute (cache misses), by ``route`` and ``backend``.
report_duration = _meter.create_histogram(
    f"{NAME}.report.duration", unit="s", description="Time to compute one report (cache misses)."
)
cache_hits = _meter.create_counter(
    f"{NAME}.cache.hits", unit="{request}", description="Report answers served from the cache."
)
cache_misses = _meter.create_counter(
    f"{NAME}.cache.misses",
    unit="{request}",
    description="Report answers computed (not in the cache).",
)
rate_limited = _meter.create_counter(
    f"{NAME}.rate_limited", unit="{request}", description="Report requests answered 429."
)


class Backlog(t.Protocol):
    """What the backlog gauge reads of a dead-letter store."""

    kind: str
    location: str

    def backlog(self) -> int | None: ...


#: Dead-letter stores to count for the backlog gauge (one per registered app), held weakly.
_backlogs: weakref.WeakSet[Backlog] = weakref.WeakSet()


def watch_backlog(store: Backlog) -> None:
    """Report ``store``'s backlog in the ``dead_letters.backlog`` gauge (file stores: a cheap local
    read)."""
    _backlogs.add(store)


def _observe_backlog(options: metrics.CallbackOptions) -> t.Iterable[metrics.Observation]:
    for store in list(_backlogs):
        try:
            count = store.backlog()
        except Exception:  # a store that cannot be read now is skipped, never breaks the exporter
            continue
        if count is not None:
            yield metrics.Observation(count, {"store": store.kind, "location": store.location})


backlog = _meter.create_observable_gauge(
    f"{NAME}.dead_letters.backlog",
    callbacks=[_observe_backlog],
    unit="{activity}",
    description="Dead letters waiting for a replay.",
)


@contextlib.contextmanager
def report_span(
    route: str, backend: str, attributes: t.Mapping[str, str | int | float | bool | None]
) -> t.Iterator[trace.Span]:
    """A span around one report's computation, and its duration in the histogram."""
    started = time.perf_counter()
    clean = {f"{NAME}.{key}": value for key, value in attributes.items() if value is not None}
    with _tracer.start_as_current_span(
        f"{NAME}.report {route}",
        attributes={f"{NAME}.route": route, "db.system": backend, **clean},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except (
            Exception
        ) as exc:  # the class only: an exception's message can hold SQL and its parameters
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise
    report_duration.record(time.perf_counter() - started, {"route": route, "backend": backend})


@contextlib.contextmanager
def record_span(activity_type: str) -> t.Iterator[trace.Span]:
    """A span around one activity's recording; the caller sets ``flowpilot_analytics.outcome``."""
    with _tracer.start_as_current_span(
        f"{NAME}.record",
        attributes={f"{NAME}.activity_type": activity_type},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span
