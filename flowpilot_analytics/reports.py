"""The reports as data: what the routes serve and the CLI prints, composed from the metrics the same way for both.

Nothing here defines a metric (:mod:`.escalations` and :mod:`.psa_metrics` do); this module picks the
window, runs the prepared statements for the caller's account, and assembles the response bodies.
Errors are the domain's (:mod:`.errors`).
"""

from __future__ import annotations

import logging
import typing as t
import uuid
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature, SignatureExpired

from .errors import InvalidQuery
from .escalations import METRIC_DEFINITION, EscalationResult, HandoffRow, Target, engineer_order, target_params
from .identity import IdentityLike
from .periods import Window, previous_window, window_from_args
from .psa_metrics import PsaResult
from .state import AnalyticsState

logger = logging.getLogger(__name__)

#: Most handoffs one drill-down page examines. A bucket filter that matches little would otherwise scan
#: the whole window for one page; past this the page ends early (even empty) with a ``next_cursor``.
MAX_SCAN_ROWS = 5000
#: Rows fetched per statement while scanning a bucket-filtered drill-down or a CSV export.
SCAN_CHUNK = 500


def _params(account_id: t.Any, window: Window, **extra: t.Any) -> dict[str, t.Any]:
    return {"account_id": account_id, "window_start": window.start, "window_end": window.end, **extra}


def _window_fields(window: Window) -> dict[str, t.Any]:
    return {"window_start": window.start, "window_end": window.end}


# -- escalations ------------------------------------------------------------------------------------------


def _target(state: AnalyticsState, args: t.Mapping[str, t.Any]) -> Target | None:
    """The response target in force: the query's ``target_seconds``, else the app's setting, else none."""
    seconds = args.get("target_seconds", state.settings.target_seconds)
    return None if seconds is None else Target.at(seconds, state.clock())


def _escalation_groups(
    state: AnalyticsState, account_id: t.Any, window: Window, by_engineer: bool, target: Target | None
) -> dict[t.Any, EscalationResult]:
    metric = state.prepared().escalations
    params = {**_params(account_id, window), **target_params(target)}
    return metric.fold(state.read(metric.statement(by_engineer), params), target)


def _escalation_overall(
    state: AnalyticsState, account_id: t.Any, window: Window, target: Target | None
) -> EscalationResult:
    metric = state.prepared().escalations
    params = {**_params(account_id, window), **target_params(target)}
    return metric.overall(state.read(metric.statement(False), params), target)


def escalation_report(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The ``EscalationMetrics`` body for one account and validated query."""
    by_engineer = args.get("group_by") == "engineer"
    metric = state.prepared().escalations
    if by_engineer:
        metric.statement(True)  # an unsupported grouping is refused before any work
    window = window_from_args(args, state.clock())
    target = _target(state, args)
    overall = _escalation_overall(state, account_id, window, target)
    body: dict[str, t.Any] = {
        "period": window.period,
        **_window_fields(window),
        **overall.figures(),
        "metric_definition": METRIC_DEFINITION,
        "distribution": overall.distribution(metric.edges),
    }
    if args.get("compare") == "previous":
        before = previous_window(window)
        body["previous"] = {
            **_window_fields(before),
            **_escalation_overall(state, account_id, before, target).figures(),
        }
    if by_engineer:
        groups = _escalation_groups(state, account_id, window, True, target)
        body["groups"] = [
            {"engineer": engineer, **groups[engineer].figures()} for engineer in sorted(groups, key=engineer_order)
        ]
    return body


def escalation_trend(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The ``EscalationTrend`` body: the metric per local day or ISO week of the window, none skipped."""
    window = window_from_args(args, state.clock())
    target = _target(state, args)
    week = args["interval"] == "week"
    metric = state.prepared().escalations
    params = {**_params(account_id, window, tz=args["tz"]), **target_params(target)}
    rows = state.read(metric.trend_statement(week), params)
    points = metric.trend(rows, window.start, window.end, ZoneInfo(args["tz"]), week, target)
    return {
        "period": window.period,
        **_window_fields(window),
        "timezone": args["tz"],
        "interval": args["interval"],
        "metric_definition": METRIC_DEFINITION,
        "points": [{"start": day, **result.figures()} for day, result in points],
    }


# -- psa metrics ------------------------------------------------------------------------------------------


def _psa(state: AnalyticsState, account_id: t.Any, window: Window, zone_name: str) -> PsaResult:
    metric = state.prepared().psa_metrics
    rows = state.read_all(metric.statements, _params(account_id, window, tz=zone_name))
    result = metric.fold(rows, window, ZoneInfo(zone_name))
    if result.invalid_minutes:
        logger.warning(
            "account %s has %d stored activities whose minutes are not a finite number >= 0; they are "
            "left out of the time-entry totals",
            account_id,
            result.invalid_minutes,
        )
    return result


def psa_report(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The ``EnhancedPsaMetrics`` body for one account and validated query."""
    window = window_from_args(args, state.clock())
    result = _psa(state, account_id, window, args["tz"])
    body: dict[str, t.Any] = {
        "period": window.period,
        **_window_fields(window),
        "timezone": args["tz"],
        **result.figures(),
        "daily_trend": result.trend(),
    }
    if args.get("compare") == "previous":
        before = previous_window(window)
        body["previous"] = {**_window_fields(before), **_psa(state, account_id, before, args["tz"]).figures()}
    return body


# -- the drill-down ---------------------------------------------------------------------------------------


class Cursor(t.NamedTuple):
    """A decoded ``next_cursor``: the keyset of the last row examined, and the digest of whom it was issued to."""

    key: t.Any
    handoff_id: t.Any
    caller: str


class CursorCodec:
    """Signs ``next_cursor`` values and reads them back, refusing any this app did not issue, any older than
    ``FLOWPILOT_ANALYTICS_CURSOR_MAX_AGE``, or any whose fields do not fit the columns they are compared with
    (so they never reach the database). Signing, expiry and the caller's digest are :class:`~.state.CursorSigner`'s."""

    def __init__(self, state: AnalyticsState) -> None:
        self._state = state

    def encode(self, identity: IdentityLike, row: HandoffRow) -> str:
        key = row.sort_key.isoformat() if isinstance(row.sort_key, datetime) else str(row.sort_key)
        handoff_id = row.handoff_id if isinstance(row.handoff_id, int) else str(row.handoff_id)  # UUIDs as text
        return self._state.cursors.dumps(
            {"k": key, "id": handoff_id, "a": str(identity.account_id), "u": str(identity.user_id)}
        )

    def issued_to(self, cursor: Cursor, identity: IdentityLike) -> bool:
        """Whether ``cursor`` was returned to this caller (same account and user)."""
        return self._state.cursors.issued_to(cursor.caller, identity.account_id, identity.user_id)

    def decode(self, text: str) -> Cursor:
        """The cursor, or ``ValueError`` saying why not; an expired one is an :class:`~.errors.InvalidQuery`
        of its own, which tells the caller to start again from the first page."""
        try:
            data = self._state.cursors.loads(text)
        except SignatureExpired:
            raise InvalidQuery.field(
                "cursor",
                f"This cursor has expired (cursors are valid for {self._state.cursors.max_age} seconds): start "
                "again from the first page, without a cursor.",
                "The cursor has expired: start again from the first page.",
            ) from None
        except BadSignature:
            raise ValueError("Not a cursor this API returned.") from None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            raise ValueError("Not a cursor this API returned.")
        prepared = self._state.prepared()
        key, handoff_id = data.get("k"), data.get("id")
        if not isinstance(key, str) or len(key) > 64:
            raise ValueError("Not a cursor this API returned.")
        handoff_id = id_value(prepared.tables.handoffs.c.id, handoff_id)
        if prepared.backend.timestamps_as_text:
            return Cursor(key, handoff_id, data["c"])
        try:
            moment = datetime.fromisoformat(key)
        except ValueError:
            raise ValueError("Not a cursor this API returned.") from None
        if not 1900 <= moment.year <= 9000:
            raise ValueError("Not a cursor this API returned.")
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return Cursor(moment, handoff_id, data["c"])


def id_value(column: t.Any, value: t.Any) -> t.Any:
    """A cursor's id as a value of the handoffs' id column's type (integers within 64 bits, text within the
    column's length, UUIDs parsed), or ``ValueError``: it never reaches the database as a bad value."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = None
    is_int = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    is_text = isinstance(value, str) and len(value) <= (getattr(column.type, "length", None) or 1000)
    if python_type is uuid.UUID and isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            raise ValueError("Not a cursor this API returned.") from None
    if (
        (python_type is int and is_int)
        or (python_type is str and is_text)
        or (python_type not in (int, str, uuid.UUID) and (is_int or is_text))
    ):
        return value
    raise ValueError("Not a cursor this API returned.")


def _scan(
    state: AnalyticsState, account_id: t.Any, window: Window, after: tuple[t.Any, t.Any] | None, chunk: int
) -> t.Iterator[HandoffRow]:
    """Every handoff in scope after the keyset ``after``, newest first, fetched ``chunk`` rows at a time."""
    metric = state.prepared().escalations
    while True:
        params = {**_params(account_id, window), "page_size": chunk}
        if after is not None:
            params.update(after_key=after[0], after_id=after[1])
        rows = [HandoffRow._make(row) for row in state.read(metric.next_page if after else metric.first_page, params)]
        yield from rows
        if len(rows) < chunk:
            return
        after = (rows[-1].sort_key, rows[-1].handoff_id)


def _matches(item: dict[str, t.Any], wanted: t.Any) -> bool:
    """Whether a drill-down item passes the validated bucket filter (an index, ``"no_action"`` or ``None``)."""
    return wanted is None or (item["bucket"] is None if wanted == "no_action" else item["bucket"] == wanted)


def iter_handoffs(
    state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]
) -> t.Iterator[dict[str, t.Any]]:
    """Every handoff in scope that passes the bucket filter, newest first (the CSV export)."""
    edges = state.settings.bucket_edges
    window = window_from_args(args, state.clock())
    items = (row.describe(edges) for row in _scan(state, account_id, window, None, SCAN_CHUNK))
    return (item for item in items if _matches(item, args.get("bucket")))


def handoff_page(
    state: AnalyticsState, identity: IdentityLike, args: t.Mapping[str, t.Any], cursors: CursorCodec
) -> dict[str, t.Any]:
    """One ``HandoffPage``: up to ``limit`` items and the cursor of the next page (``None`` at the end).

    A page examines at most :data:`MAX_SCAN_ROWS` handoffs; when a bucket filter leaves it short, it ends
    early with fewer items (maybe none) and a ``next_cursor`` that continues after the last one examined.
    """
    cursor: Cursor | None = args.get("cursor")
    if cursor is not None and not cursors.issued_to(cursor, identity):
        raise InvalidQuery.field(
            "cursor", "Not a cursor this API returned to you.", "The cursor was issued to another user."
        )
    window = window_from_args(args, state.clock())
    edges = state.settings.bucket_edges
    limit, wanted = args["limit"], args.get("bucket")
    after = None if cursor is None else (cursor.key, cursor.handoff_id)
    items: list[dict[str, t.Any]] = []
    last: HandoffRow | None = None
    exhausted = True
    for scanned, row in enumerate(
        _scan(state, identity.account_id, window, after, SCAN_CHUNK if wanted is not None else limit + 1), start=1
    ):
        item = row.describe(edges)
        if _matches(item, wanted):
            if len(items) == limit:  # one more exists: the page is full
                exhausted = False
                break
            items.append(item)
        last = row
        if scanned >= MAX_SCAN_ROWS:
            exhausted = False
            break
    return {
        "period": window.period,
        **_window_fields(window),
        "items": items,
        "next_cursor": None if exhausted or last is None else cursors.encode(identity, last),
    }
