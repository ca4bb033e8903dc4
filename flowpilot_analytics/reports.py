"""The report routes, each declared once, and the reports they compute for the routes and the CLI
alike.

:data:`REPORT_ROUTES` is the one place a report route is declared (path, role, rate limit, argument
and response schemas, compute, CSV export, command); the blueprint, the per-app argument schemas,
the rate limits, the OpenAPI paths and the report commands are derived from it. Adding a report
means one declaration plus its compute function.

Nothing here defines a metric (:mod:`.escalations` and :mod:`.psa_metrics` do): a report picks the
window, runs the prepared statements for the account and assembles its body as dataclasses that the
response schemas dump as they are. Errors are the domain's (:mod:`.errors`).
"""

from __future__ import annotations

import dataclasses
import decimal
import logging
import typing as t
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature, SignatureExpired
from marshmallow import Schema

from . import savings, schemas
from .baselines import StoredSample
from .calendars import Calendar, StoredVersion
from .errors import Conflict, InvalidQuery, NotFound
from .escalations import (
    METRIC_DEFINITION,
    ClockedHandoffs,
    Distribution,
    EngineerId,
    EscalationResult,
    Escalations,
    Group,
    HandoffItem,
    HandoffRow,
    Row,
    Statement,
    Target,
    bucket_index,
    distribution,
    engineer_order,
    fold_clocked,
    measure_business,
    no_client_column,
    target_params,
    unsupported_grouping,
)
from .identity import AccountId, UserId
from .periods import Window, previous_window
from .psa_metrics import Funnel, PsaMetrics, PsaResult, TimeEntries, technician_order
from .replica import Reads
from .schemas import (
    Args,
    CalendarQuery,
    Cursor,
    EscalationQuery,
    HandoffQuery,
    NewBaseline,
    NewCalendarVersion,
    NoArgs,
    PsaQuery,
    SampleRef,
    SavingsQuery,
    TrendQuery,
)
from .state import AnalyticsState
from .timeutil import Expr, local_days

logger = logging.getLogger(__name__)

#: Most handoffs one drill-down page examines. A bucket filter that
#: matches little would otherwise scan the whole window for one page;
#: past this the page ends early (even empty) with a ``next_cursor``.
MAX_SCAN_ROWS = 5000
#: Rows fetched per statement while scanning a bucket-filtered drill-down or a CSV export.
SCAN_CHUNK = 500

Q = t.TypeVar("Q", bound=Args)


@dataclass(frozen=True)
class ReportContext:
    """One report's run: the app's state, whose data and who asks (no user on the command line), the
    one "now" it is computed at (the window's end and the response target's cutoff), and, with a
    read replica, the record of its reads that decides whether its answer may be cached."""

    state: AnalyticsState
    account_id: AccountId
    user_id: UserId | None
    now: datetime
    reads: Reads | None = None
    #: One client's sessions only (``client=``), as the client column holds it; ``None``: all.
    client_id: object = None

    @classmethod
    def start(
        cls, state: AnalyticsState, account_id: AccountId, user_id: UserId | None = None
    ) -> ReportContext:
        """A report for ``account_id`` at the app's current time."""
        return cls(state, account_id, user_id, state.clock(), state.reads())

    def read(self, statement: Statement, window: Window, **params: object) -> list[Row]:
        """The rows of one statement over the account's ``window``."""
        return self.read_all([statement], window, **params)[0]

    def read_all(
        self, statements: t.Sequence[Statement], window: Window, **params: object
    ) -> list[list[Row]]:
        """The rows of each statement over the account's ``window``, in one short transaction."""
        bound = {
            "account_id": self.account_id,
            "window_start": window.start,
            "window_end": window.end,
            **params,
        }
        if self.client_id is not None:
            bound["client_id"] = self.client_id
        return self.state.read_all(statements, bound, self.reads)

    def for_client(self, client: str | None) -> ReportContext:
        """This report for one client's sessions (``client=``), the value checked against the
        host's column; ``None``: the whole account."""
        if client is None:
            return self
        tables = self.state.prepared().tables
        if not tables.has_client:
            raise no_client_column("client=", "unsupported_filter", tables.sessions.fullname)
        column = tables.sessions.c.client_id
        return dataclasses.replace(self, client_id=client_value(column, client))

    def escalations(self) -> Escalations:
        """The escalation metric's statements for this report's scope (the account, or a client)."""
        prepared = self.state.prepared()
        if self.client_id is None:
            return prepared.escalations
        assert prepared.client_escalations is not None  # for_client checked the column
        return prepared.client_escalations

    def psa_metrics(self) -> PsaMetrics:
        """The PSA metric's statements for this report's scope (the account, or a client)."""
        prepared = self.state.prepared()
        if self.client_id is None:
            return prepared.psa_metrics
        assert prepared.client_psa_metrics is not None
        return prepared.client_psa_metrics

    def calendars(self) -> tuple[Calendar, dict[str, Calendar]]:
        """The calendar the report measures on and the clients' own (by the client's id as text):
        for one client with versions of its own, that client's, alone; else the account's, and each
        client's for its sessions. Without an applicable version, the ``409 no_business_hours``
        error (raised before any other read)."""
        own, clients = self.state.calendars(self.account_id, self.reads)
        if self.client_id is not None:
            own, clients = clients.get(str(self.client_id), own), {}
        if own is None:
            raise no_business_hours(self.state.settings.route_roles["business_hours_write"])
        return own, clients


def client_value(column: Expr, text: str) -> object:
    """A ``client=`` value as the client column holds it (integers within 64 bits, text within the
    column's length), or a 400 naming ``client``: a value the column cannot hold never reaches the
    database."""
    try:
        python_type: type | None = column.type.python_type
    except NotImplementedError:
        python_type = None
    if python_type is int:
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit() and -(2**63) <= int(text) < 2**63:
            return int(text)
        raise InvalidQuery.field("client", "Not a client id: this host's client ids are integers.")
    length = getattr(column.type, "length", None)
    if length is not None and len(text) > length:
        raise InvalidQuery.field("client", f"Not a client id: at most {length} characters.")
    if python_type is uuid.UUID:
        try:
            return uuid.UUID(text)
        except ValueError:
            raise InvalidQuery.field("client", "Not a client id: this host's are UUIDs.") from None
    if python_type in (float, decimal.Decimal):  # a numeric column: a finite number, as text
        try:
            number = decimal.Decimal(text)
        except decimal.InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise InvalidQuery.field("client", "Not a client id: this host's are numbers.")
        return number if python_type is decimal.Decimal else float(number)
    return text


def no_business_hours(minimum_role: str) -> Conflict:
    """The error of ``clock=business`` for an account with no business-hours version."""
    return Conflict(
        "This account has no business hours yet, so nothing can be measured on the business "
        f"clock: POST a calendar version to business-hours (role {minimum_role} or above) or use "
        "clock=wall.",
        code="no_business_hours",
        details={"route": "business-hours"},
    )


@dataclass(frozen=True)
class BusinessHoursUsed:
    """``business_hours`` of a business-clock report: the versions its handoffs were measured on."""

    version_ids: tuple[int, ...]


class _Clocked:
    """The handoffs of one report on the business clock: the calendar, read once, and every version
    its handoffs used (``None`` on the wall clock)."""

    def __init__(self, ctx: ReportContext, clock: str) -> None:
        self.ctx = ctx
        self.calendar: Calendar | None = None
        #: The clients' own calendars (by the client's id as text), for their sessions.
        self.clients: dict[str, Calendar] = {}
        if clock == "business":
            self.calendar, self.clients = ctx.calendars()
        #: The ids of the versions the handoffs were measured on.
        self.used: set[int] = set()

    def handoffs(
        self, window: Window, group: Group, tz: str | None = None, week: bool = False
    ) -> ClockedHandoffs:
        """The window's handoffs in business seconds, with their group's key; with ``tz`` (a
        trend), each claim's local day or week."""
        assert self.calendar is not None
        metric = self.ctx.escalations()
        clients = bool(self.clients)
        if tz is None:
            rows = self.ctx.read(metric.per_handoff_statement(group, None, clients), window)
        else:
            statement = metric.per_handoff_statement(None, week, clients)
            rows = self.ctx.read(statement, window, tz=tz)
        zone = None if tz is None else ZoneInfo(tz)
        handoffs = measure_business(
            rows, self.calendar, self.ctx.now, zone=zone, week=week, clients=self.clients
        )
        self.used |= handoffs.used
        return handoffs

    def calendar_of(self, client: object) -> Calendar:
        """The calendar a handoff of ``client``'s session is measured on."""
        assert self.calendar is not None
        return self.clients.get(str(client), self.calendar) if client is not None else self.calendar

    def described(self) -> BusinessHoursUsed | None:
        if self.calendar is None:
            return None
        return BusinessHoursUsed(tuple(sorted(self.used)))


# -- escalations -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WindowFigures(EscalationResult):
    """An escalation figure over a window (``EscalationFigures``)."""

    window_start: datetime
    window_end: datetime


@dataclass(frozen=True, kw_only=True)
class EngineerFigures(EscalationResult):
    """One claimer's figure (``EngineerGroup``)."""

    engineer: EngineerId


@dataclass(frozen=True, kw_only=True)
class ClientFigures(EscalationResult):
    """One client's figure (``EngineerGroup``, keyed ``client``): ``None`` for the sessions without
    one."""

    client: object


@dataclass(frozen=True, kw_only=True)
class PointFigures(EscalationResult):
    """One local day's or ISO week's figure (``TrendPoint``)."""

    start: date


@dataclass(frozen=True, kw_only=True)
class EscalationReport(WindowFigures):
    """The body of ``GET escalations`` (``EscalationMetrics``)."""

    period: str
    metric_definition: str = METRIC_DEFINITION
    clock: str = "wall"
    business_hours: BusinessHoursUsed | None = None
    distribution: Distribution
    previous: WindowFigures | None = None
    groups: tuple[EngineerFigures | ClientFigures, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class TrendReport:
    """The body of ``GET escalations/trend`` (``EscalationTrend``)."""

    period: str
    window_start: datetime
    window_end: datetime
    timezone: str
    interval: str
    metric_definition: str = METRIC_DEFINITION
    clock: str = "wall"
    business_hours: BusinessHoursUsed | None = None
    points: tuple[PointFigures, ...]


def _target(ctx: ReportContext, seconds: float | None) -> Target | None:
    """The response target in force: the query's, else the app's setting, else none."""
    seconds = ctx.state.settings.target_seconds if seconds is None else seconds
    return None if seconds is None else Target.at(seconds, ctx.now)


def _groups(
    ctx: ReportContext, window: Window, group: Group, target: Target | None
) -> dict[EngineerId, EscalationResult]:
    metric = ctx.escalations()
    rows = ctx.read(metric.statement(group), window, **target_params(target))
    return metric.fold(rows, target)


def _overall(ctx: ReportContext, window: Window, target: Target | None) -> EscalationResult:
    metric = ctx.escalations()
    return metric.overall(ctx.read(metric.statement(None), window, **target_params(target)), target)


def _business_figures(
    clocked: _Clocked, window: Window, group: Group, target: Target | None
) -> tuple[EscalationResult, dict[EngineerId, EscalationResult]]:
    """The window's figures on the business clock, and per group (from the same rows)."""
    edges = clocked.ctx.escalations().edges
    seconds = None if target is None else target.seconds
    handoffs = clocked.handoffs(window, group)
    groups = {}
    if group is not None:
        groups = {
            engineer: fold_clocked(found, edges, seconds)
            for engineer, found in handoffs.groups(handoffs.engineers).items()
        }
    return fold_clocked(handoffs, edges, seconds), groups


def escalation_report(ctx: ReportContext, query: EscalationQuery) -> EscalationReport:
    """The escalation metric of the account (or one client) over the query's window, on the
    query's clock."""
    ctx = ctx.for_client(query.client)
    metric = ctx.escalations()
    group = query.group_by
    if group not in metric.groups:  # refused before any work
        raise unsupported_grouping(group, metric.tables.sessions.fullname)
    clocked = _Clocked(ctx, query.clock)
    window = query.span.window(ctx.now)
    target = _target(ctx, query.target_seconds)
    found: dict[EngineerId, EscalationResult] = {}
    if clocked.calendar is None:
        overall = _overall(ctx, window, target)
        if group is not None:
            found = _groups(ctx, window, group, target)
    else:
        overall, found = _business_figures(clocked, window, group, target)
    previous = None
    if query.compare == "previous":
        before = previous_window(window)
        figures = (
            _overall(ctx, before, target)
            if clocked.calendar is None
            else _business_figures(clocked, before, None, target)[0]
        )
        previous = WindowFigures(**vars(figures), window_start=before.start, window_end=before.end)
    groups: tuple[EngineerFigures | ClientFigures, ...] | None = None
    if group == "engineer":
        groups = tuple(
            EngineerFigures(**vars(found[key]), engineer=key)
            for key in sorted(found, key=engineer_order)
        )
    elif group == "client":
        groups = tuple(
            ClientFigures(**vars(found[key]), client=key)
            for key in sorted(found, key=engineer_order)
        )
    return EscalationReport(
        **vars(overall),
        window_start=window.start,
        window_end=window.end,
        period=window.period,
        clock=query.clock,
        business_hours=clocked.described(),
        distribution=distribution(overall, metric.edges),
        previous=previous,
        groups=groups,
    )


def escalation_trend(ctx: ReportContext, query: TrendQuery) -> TrendReport:
    """The escalation metric per local day or ISO week of the window, none skipped."""
    ctx = ctx.for_client(query.client)
    clocked = _Clocked(ctx, query.clock)
    window = query.span.window(ctx.now)
    target = _target(ctx, query.target_seconds)
    week = query.interval == "week"
    metric = ctx.escalations()
    zone = ZoneInfo(query.tz)
    if clocked.calendar is None:
        rows = ctx.read(metric.trend_statement(week), window, tz=query.tz, **target_params(target))
        points = metric.trend(rows, window.start, window.end, zone, week, target)
    else:
        handoffs = clocked.handoffs(window, None, tz=query.tz, week=week)
        seconds = None if target is None else target.seconds
        days = local_days(window.start, window.end, zone, week=week)
        points = metric.business_trend(handoffs, days, seconds)
    return TrendReport(
        period=window.period,
        window_start=window.start,
        window_end=window.end,
        timezone=query.tz,
        interval=query.interval,
        clock=query.clock,
        business_hours=clocked.described(),
        points=tuple(PointFigures(**vars(result), start=day) for day, result in points),
    )


# -- psa metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PsaWindow(PsaResult):
    """The PSA figures of a window (``PsaFigures``)."""

    window_start: datetime
    window_end: datetime


@dataclass(frozen=True)
class PsaClientGroup:
    """One client's figures (``PsaClientGroup``)."""

    client: object
    time_entries: TimeEntries
    funnel: Funnel


@dataclass(frozen=True)
class PsaTechnicianGroup:
    """One technician's pushes (``PsaTechnicianGroup``)."""

    technician: str | None
    notes_posted: int
    time_entries: TimeEntries


@dataclass(frozen=True, kw_only=True)
class PsaReport(PsaWindow):
    """The body of ``GET psa-metrics`` (``EnhancedPsaMetrics``)."""

    period: str
    timezone: str
    previous: PsaWindow | None = None
    groups: tuple[PsaClientGroup, ...] | tuple[PsaTechnicianGroup, ...] | None = None


def _psa(ctx: ReportContext, window: Window, zone_name: str) -> PsaResult:
    metric = ctx.psa_metrics()
    result = metric.fold(
        ctx.read_all(metric.statements, window, tz=zone_name), window, ZoneInfo(zone_name)
    )
    if result.invalid_minutes:
        logger.warning(
            "account %s has %d stored activities whose minutes are not a finite number >= 0; "
            "they are left out of the time-entry totals",
            ctx.account_id,
            result.invalid_minutes,
        )
    return result


PsaGroups: t.TypeAlias = "tuple[PsaClientGroup, ...] | tuple[PsaTechnicianGroup, ...]"


def _psa_scope(ctx: ReportContext, query: PsaQuery) -> ReportContext:
    """The report's scope (the account, or one client), its grouping refused before any work when
    the host cannot answer it."""
    ctx = ctx.for_client(query.client)
    if query.group_by == "client" and ctx.psa_metrics().client_statements is None:
        raise unsupported_grouping("client", ctx.state.prepared().tables.sessions.fullname)
    return ctx


def _psa_groups(ctx: ReportContext, group: str, window: Window, tz: str) -> PsaGroups:
    """Each client's time entries and funnel, or each technician's notes and time entries."""
    metric, zone = ctx.psa_metrics(), ZoneInfo(tz)
    if group == "client":
        statements = t.cast(t.Sequence[Statement], metric.client_statements)
        found = metric.fold_clients(ctx.read_all(statements, window, tz=tz), window, zone)
        return tuple(
            PsaClientGroup(key, found[key].time_entries, found[key].funnel)
            for key in sorted(found, key=engineer_order)
        )
    rows = ctx.read_all([metric.technician_statement], window, tz=tz)[0]
    pushed = metric.fold_technicians(rows, window, zone)
    return tuple(
        PsaTechnicianGroup(key, pushed[key].notes_posted, pushed[key].time_entries)
        for key in sorted(pushed, key=technician_order)
    )


def psa_report(ctx: ReportContext, query: PsaQuery) -> PsaReport:
    """Time entries, the documentation funnel and the daily trend of the account (or one client)
    over the window."""
    ctx = _psa_scope(ctx, query)
    window = query.span.window(ctx.now)
    result = _psa(ctx, window, query.tz)
    previous = None
    if query.compare == "previous":
        before = previous_window(window)
        previous = PsaWindow(
            **vars(_psa(ctx, before, query.tz)), window_start=before.start, window_end=before.end
        )
    groups = None
    if query.group_by is not None:
        groups = _psa_groups(ctx, query.group_by, window, query.tz)
    return PsaReport(
        **vars(result),
        window_start=window.start,
        window_end=window.end,
        period=window.period,
        timezone=query.tz,
        previous=previous,
        groups=groups,
    )


# -- the drill-down --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HandoffPageReport:
    """The body of ``GET escalations/handoffs`` (``HandoffPage``)."""

    period: str
    window_start: datetime
    window_end: datetime
    clock: str
    business_hours: BusinessHoursUsed | None
    items: tuple[HandoffItem, ...]
    next_cursor: str | None


class CursorCodec:
    """Signs ``next_cursor`` values and reads them back, refusing any this app did not issue, any
    older than ``FLOWPILOT_ANALYTICS_CURSOR_MAX_AGE``, or any whose fields do not fit the columns
    they are compared with (so they never reach the database). Signing, expiry and the caller's
    digest are :class:`~.state.CursorSigner`'s."""

    def __init__(self, state: AnalyticsState) -> None:
        self._state = state

    def encode(self, account_id: AccountId, user_id: UserId | None, row: HandoffRow) -> str:
        key = row.sort_key.isoformat() if isinstance(row.sort_key, datetime) else str(row.sort_key)
        handoff_id = row.handoff_id if isinstance(row.handoff_id, int) else str(row.handoff_id)
        payload = {"k": key, "id": handoff_id, "a": str(account_id), "u": str(user_id)}
        return self._state.cursors.dumps(payload)

    def issued_to(self, cursor: Cursor, account_id: AccountId, user_id: UserId | None) -> bool:
        """Whether ``cursor`` was returned to this caller (same account and user)."""
        return self._state.cursors.issued_to(cursor.caller, account_id, user_id)

    def decode(self, text: str) -> Cursor:
        """The cursor, or ``ValueError`` saying why not; an expired one is an
        :class:`~.errors.InvalidQuery` of its own, which tells the caller to start again from the
        first page."""
        try:
            data = self._state.cursors.loads(text)
        except SignatureExpired:
            raise InvalidQuery.field(
                "cursor",
                f"This cursor has expired (cursors are valid for {self._state.cursors.max_age} "
                "seconds): start again from the first page, without a cursor.",
                "The cursor has expired: start again from the first page.",
            ) from None
        except BadSignature:
            raise ValueError(NOT_A_CURSOR) from None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            raise ValueError(NOT_A_CURSOR)
        prepared = self._state.prepared()
        key, caller = data.get("k"), str(data["c"])
        if not isinstance(key, str) or len(key) > 64:
            raise ValueError(NOT_A_CURSOR)
        handoff_id = id_value(prepared.tables.handoffs.c.id, data.get("id"))
        if prepared.backend.timestamps_as_text:
            return Cursor(key, handoff_id, caller)
        try:
            moment = datetime.fromisoformat(key)
        except ValueError:
            raise ValueError(NOT_A_CURSOR) from None
        if not 1900 <= moment.year <= 9000:
            raise ValueError(NOT_A_CURSOR)
        return Cursor(
            moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc), handoff_id, caller
        )


NOT_A_CURSOR = "Not a cursor this API returned."


def id_value(column: Expr, value: object) -> object:
    """A cursor's id as a value of the handoffs' id column's type (integers
    within 64 bits, text within the column's length, UUIDs parsed), or
    ``ValueError``: it never reaches the database as a bad value."""
    try:
        python_type: type | None = column.type.python_type
    except NotImplementedError:
        python_type = None
    is_int = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    is_text = isinstance(value, str) and len(value) <= (
        getattr(column.type, "length", None) or 1000
    )
    if python_type is uuid.UUID and isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            raise ValueError(NOT_A_CURSOR) from None
    if (
        (python_type is int and is_int)
        or (python_type is str and is_text)
        or (python_type not in (int, str, uuid.UUID) and (is_int or is_text))
    ):
        return value
    raise ValueError(NOT_A_CURSOR)


def _scan(
    ctx: ReportContext, window: Window, after: tuple[datetime | str, object] | None, chunk: int
) -> t.Iterator[list[HandoffRow]]:
    """Every handoff in scope after the keyset ``after``, newest first, ``chunk`` rows at a time."""
    metric = ctx.escalations()
    while True:
        keyset = {} if after is None else {"after_key": after[0], "after_id": after[1]}
        statement = metric.first_page if after is None else metric.next_page
        rows = [
            HandoffRow._make(row) for row in ctx.read(statement, window, page_size=chunk, **keyset)
        ]
        if rows:
            yield rows
        if len(rows) < chunk:
            return
        after = (rows[-1].sort_key, rows[-1].handoff_id)


def _describe(clocked: _Clocked, rows: list[HandoffRow]) -> list[tuple[HandoffItem, int | None]]:
    """The drill-down items of ``rows`` on the report's clock (``wall_seconds`` always wall), each
    with the position of the calendar version it was measured on (``None`` on the wall clock)."""
    edges = clocked.ctx.state.settings.bucket_edges
    items = [row.describe(edges) for row in rows]
    if clocked.calendar is None:
        return [(item, None) for item in items]
    described: list[tuple[HandoffItem, int | None]] = [(item, None) for item in items]
    by_calendar: dict[int, tuple[Calendar, list[int]]] = {}
    for index, row in enumerate(rows):
        calendar = clocked.calendar_of(row.client)
        by_calendar.setdefault(id(calendar), (calendar, []))[1].append(index)
    for calendar, positions in by_calendar.values():
        # a handoff with no action is measured over nothing: only the version it falls under counts
        measured = calendar.measure(
            [rows[p].claimed_at for p in positions],
            [rows[p].first_action_at or rows[p].claimed_at for p in positions],
        )
        for p, seconds, version in zip(positions, measured.seconds, measured.version_indexes):
            item = items[p]
            if item.seconds is not None:
                item = dataclasses.replace(
                    item, seconds=seconds, bucket=bucket_index(seconds, edges)
                )
            described[p] = (item, calendar.versions[version].id)
    return described


def _matches(item: HandoffItem, wanted: schemas.BucketFilter) -> bool:
    """Whether a drill-down item passes the bucket filter."""
    return wanted is None or item.bucket == (None if wanted == "no_action" else wanted)


def iter_handoffs(ctx: ReportContext, query: HandoffQuery) -> t.Iterator[HandoffItem]:
    """Every handoff in scope that passes the bucket filter, newest first, on the query's clock (the
    CSV export); a missing calendar is refused now, not when the first row is asked for."""
    ctx = ctx.for_client(query.client)
    clocked = _Clocked(ctx, query.clock)
    window = query.span.window(ctx.now)
    chunks = _scan(ctx, window, None, SCAN_CHUNK)
    return (
        item
        for rows in chunks
        for item, _ in _describe(clocked, rows)
        if _matches(item, query.bucket)
    )


def handoff_page(ctx: ReportContext, query: HandoffQuery) -> HandoffPageReport:
    """Up to ``limit`` handoffs behind the number and the cursor of the next page (``None`` at the
    end), on the query's clock.

    A page examines at most :data:`MAX_SCAN_ROWS` handoffs; when a bucket filter leaves it short, it
    ends early with fewer items (maybe none) and a ``next_cursor`` that continues after the last one
    examined.
    """
    ctx = ctx.for_client(query.client)
    cursors = CursorCodec(ctx.state)
    cursor = query.cursor
    if cursor is not None and not cursors.issued_to(cursor, ctx.account_id, ctx.user_id):
        raise InvalidQuery.field(
            "cursor",
            "Not a cursor this API returned to you.",
            "The cursor was issued to another user.",
        )
    clocked = _Clocked(ctx, query.clock)
    window = query.span.window(ctx.now)
    after = None if cursor is None else (cursor.key, cursor.handoff_id)
    chunk = SCAN_CHUNK if query.bucket is not None else query.limit + 1
    items: list[HandoffItem] = []
    last: HandoffRow | None = None
    exhausted = True
    scanned = 0
    for rows in _scan(ctx, window, after, chunk):
        for row, (item, version) in zip(rows, _describe(clocked, rows)):
            scanned += 1
            if _matches(item, query.bucket):
                if len(items) == query.limit:  # one more exists: the page is full
                    exhausted = False
                    break
                items.append(item)
                if version is not None:  # the versions of the items listed, no others
                    clocked.used.add(version)
            last = row
            if scanned >= MAX_SCAN_ROWS:
                exhausted = False
                break
        if not exhausted:
            break
    return HandoffPageReport(
        period=window.period,
        window_start=window.start,
        window_end=window.end,
        clock=query.clock,
        business_hours=clocked.described(),
        items=tuple(items),
        next_cursor=None
        if exhausted or last is None
        else cursors.encode(ctx.account_id, ctx.user_id, last),
    )


# -- business hours --------------------------------------------------------------------------------

#: What a report's answers may depend on besides the host's data (``ReportRoute.depends_on``).
CALENDAR = "calendar"
BASELINE = "baseline"


def _invalidate(ctx: ReportContext, changed: str, position: str | None) -> None:
    """Make the account's cached answers of every route that depends on ``changed`` unreachable,
    on every worker (the cache's generations); with a read replica, not cached again until the
    standby has replayed ``position``."""
    for route in REPORT_ROUTES:
        if changed in route.depends_on:
            ctx.state.cache.invalidate(route.endpoint, ctx.account_id, position)


@dataclass(frozen=True)
class VersionView:
    """A stored calendar version as ``StoredCalendarVersion`` dumps it."""

    id: int
    created_at: datetime
    timezone: str
    effective_from: date
    weekly: t.Mapping[str, object]
    holidays: tuple[date, ...]
    holiday_calendar: t.Mapping[str, object] | None
    client_id: str | None = None

    @classmethod
    def of(cls, stored: StoredVersion) -> VersionView:
        version = stored.version
        canonical = version.as_dict()
        return cls(
            id=stored.id,
            created_at=stored.created_at,
            timezone=version.timezone,
            effective_from=version.effective_from,
            weekly=t.cast(t.Mapping[str, object], canonical["weekly"]),
            holidays=version.holidays,
            holiday_calendar=t.cast("t.Mapping[str, object] | None", canonical["holiday_calendar"]),
            client_id=None if version.client_id is None else str(version.client_id),
        )


@dataclass(frozen=True)
class BusinessHoursListing:
    """The body of ``GET business-hours`` (``BusinessHoursVersions``)."""

    versions: tuple[VersionView, ...]
    in_effect: VersionView | None


def business_hours(ctx: ReportContext, args: CalendarQuery) -> BusinessHoursListing:
    """The account's own versions (or one client's) in creation order, and the one in effect at the
    report's now."""
    if args.client is None:
        calendar = ctx.state.calendar(ctx.account_id, ctx.reads)
    else:
        ctx = ctx.for_client(args.client)
        calendar = ctx.state.calendars(ctx.account_id, ctx.reads)[1].get(str(ctx.client_id))
    if calendar is None:
        return BusinessHoursListing((), None)
    in_effect = calendar.in_effect(ctx.now)
    return BusinessHoursListing(
        tuple(VersionView.of(v) for v in calendar.versions), VersionView.of(in_effect)
    )


def add_business_hours(ctx: ReportContext, args: NewCalendarVersion) -> VersionView:
    """Append a version to the account's calendar, then make every cached answer that depends on the
    calendar unreachable, on every worker (the cache's generations)."""
    version = args.version
    if version.client_id is not None:  # a client's: checked against the host's client column
        tables = ctx.state.prepared().tables
        if not tables.has_client:
            raise InvalidQuery(
                "client_id needs the sessions' client column, which this database does not have; "
                "nothing was stored.",
                code="invalid_body",
                details={"fields": {"client_id": ["This host's sessions have no client column."]}},
            )
        try:
            value = client_value(tables.sessions.c.client_id, str(version.client_id))
        except InvalidQuery:
            raise InvalidQuery(
                "The body is not valid; nothing was stored.",
                code="invalid_body",
                details={"fields": {"client_id": ["Not a client id this host's column holds."]}},
            ) from None
        if len(str(value)) > 255:
            raise InvalidQuery(
                "The body is not valid; nothing was stored.",
                code="invalid_body",
                details={"fields": {"client_id": ["At most 255 characters for a calendar."]}},
            )
        version = dataclasses.replace(version, client_id=str(value))
    stored, position = ctx.state.append_version(ctx.account_id, version, ctx.now, ctx.user_id)
    _invalidate(ctx, CALENDAR, position)
    logger.info(
        "account %s: business-hours version %s added (effective %s)",
        ctx.account_id,
        stored.id,
        stored.version.effective_from,
    )
    return VersionView.of(stored)


# -- the savings claim -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineListing:
    """The body of ``GET`` and ``POST escalations/baseline`` (``BaselineSamples``)."""

    samples: tuple[StoredSample, ...]


def baseline_samples(ctx: ReportContext, args: NoArgs) -> BaselineListing:
    """The account's stopwatch samples, oldest measurement first."""
    return BaselineListing(tuple(ctx.state.baseline(ctx.account_id, ctx.reads)))


def add_baseline(ctx: ReportContext, args: NewBaseline) -> BaselineListing:
    """Store the samples, all or none, then make the account's cached savings answers
    unreachable."""
    added, position = ctx.state.add_samples(ctx.account_id, args.samples, ctx.now, ctx.user_id)
    _invalidate(ctx, BASELINE, position)
    logger.info("account %s: %d baseline samples added", ctx.account_id, len(added))
    return BaselineListing(tuple(added))


def delete_baseline(ctx: ReportContext, args: SampleRef) -> None:
    """Delete one of the account's samples; an unknown id, or another account's, is not found."""
    found, position = (
        (False, None)
        if args.sample_id is None
        else ctx.state.delete_sample(ctx.account_id, args.sample_id)
    )
    if not found:
        raise NotFound(
            "No baseline sample of this account has that id.",
            details={"sample_id": args.sample_id},
        )
    _invalidate(ctx, BASELINE, position)


@dataclass(frozen=True)
class BaselineSummary:
    """``baseline`` of the savings report: every sample of the account, whatever the window."""

    n: int
    median_seconds: float | None
    mean_seconds: float | None
    first_measured_at: datetime | None
    last_measured_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class SavingsReport:
    """The body of ``GET escalations/savings`` (``SavingsReport``)."""

    period: str
    window_start: datetime
    window_end: datetime
    metric_definition: str = METRIC_DEFINITION
    baseline: BaselineSummary
    in_product: savings.Sample
    difference: savings.Difference | None
    extrapolated: savings.Extrapolated | None
    claim: str | None
    reason: str | None


def savings_report(ctx: ReportContext, query: SavingsQuery) -> SavingsReport:
    """The stopwatch baseline against the window's in-product time to first action (wall clock:
    the stopwatch measured wall time), and the claim they support, or why there is none."""
    window = query.span.window(ctx.now)
    samples = ctx.state.baseline(ctx.account_id, ctx.reads)
    metric = ctx.escalations()
    deltas = metric.deltas(ctx.read(metric.deltas_statement(), window))
    found = savings.savings(
        [sample.seconds for sample in samples],
        deltas,
        min_samples=ctx.state.settings.baseline_min_samples,
    )
    measured = [sample.measured_at for sample in samples]
    return SavingsReport(
        period=window.period,
        window_start=window.start,
        window_end=window.end,
        baseline=BaselineSummary(
            n=found.baseline.n,
            median_seconds=found.baseline.median_seconds,
            mean_seconds=found.baseline.mean_seconds,
            first_measured_at=min(measured, default=None),
            last_measured_at=max(measured, default=None),
        ),
        in_product=found.in_product,
        difference=found.difference,
        extrapolated=found.extrapolated,
        claim=found.claim,
        reason=found.reason,
    )


# -- CSV exports -----------------------------------------------------------------------------------


class CsvTable(t.NamedTuple):
    """A CSV export: the file name, the header, and the rows (produced while the response is
    sent)."""

    filename: str
    header: list[str]
    rows: t.Iterable[t.Sequence[object]]


def _dumped_table(
    filename: str, schema: Schema, first: str, label: str, parts: t.Iterable[object]
) -> CsvTable:
    """Body parts dumped by ``schema``, one row each, flattened (``target_seconds``); the ``first``
    column leads, headed ``label``."""
    columns = schemas.flat_columns(schema)
    order = [columns.index(first)] + [i for i, name in enumerate(columns) if name != first]

    def row(part: object) -> list[object]:
        values = schemas.flat_values(schema, schema.dump(part))
        return ["" if values[i] is None else values[i] for i in order]

    return CsvTable(filename, [label, *(columns[i] for i in order[1:])], (row(p) for p in parts))


def _no_comparison_as_csv(compare: str | None) -> None:
    """A CSV export has no previous window: ``compare`` is refused, never silently left out."""
    if compare is not None:
        raise InvalidQuery.field(
            "compare",
            "compare=previous has no CSV form; ask for JSON.",
            "The CSV export has no previous window.",
        )


def escalations_csv(ctx: ReportContext, query: EscalationQuery) -> CsvTable:
    """The window's figures as one row; with ``group_by``, one row per group (the group's key
    first). ``compare=previous`` has no CSV form: refused, never silently left out."""
    _no_comparison_as_csv(query.compare)
    report = escalation_report(ctx, query)
    suffix = "" if query.clock == "wall" else f"_{query.clock}"
    group = query.group_by
    if group is None:
        schema: Schema = schemas.EscalationFigures()
        return _dumped_table(
            f"escalations{suffix}.csv", schema, "window_start", "window_start", [report]
        )
    other = "client" if group == "engineer" else "engineer"
    schema = schemas.EngineerGroup(exclude=(other,))
    filename = f"escalations_by_{group}{suffix}.csv"
    return _dumped_table(filename, schema, group, group, report.groups or ())


def trend_csv(ctx: ReportContext, query: TrendQuery) -> CsvTable:
    """The trend's points, one row each."""
    points = escalation_trend(ctx, query).points
    label = f"{query.interval} ({query.tz})"
    suffix = "" if query.clock == "wall" else f"_{query.clock}"
    filename = f"escalation_trend_{query.interval}{suffix}.csv"
    return _dumped_table(filename, schemas.TrendPoint(), "start", label, points)


def psa_csv(ctx: ReportContext, query: PsaQuery) -> CsvTable:
    """The daily trend, one row per local day; with ``group_by``, one row per group (a client's time
    entries and funnel, a technician's notes and time entries). ``compare=previous`` has no CSV
    form: refused, never silently left out."""
    _no_comparison_as_csv(query.compare)
    ctx = _psa_scope(ctx, query)
    window = query.span.window(ctx.now)
    key = query.group_by
    if key is not None:  # the groups only: the window's own figures are not in this table
        schema = schemas.PsaClientGroup() if key == "client" else schemas.PsaTechnicianGroup()
        groups = _psa_groups(ctx, key, window, query.tz)
        return _dumped_table(f"psa_by_{key}.csv", schema, key, key, groups)
    days = _psa(ctx, window, query.tz).daily_trend
    label = f"date ({query.tz})"
    return _dumped_table("psa_daily_trend.csv", schemas.PsaDailyTrend(), "date", label, days)


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def handoffs_csv(ctx: ReportContext, query: HandoffQuery) -> CsvTable:
    """Every handoff that passes the bucket filter (no paging), UTC timestamps."""
    header = [
        "handoff_id",
        "session_id",
        "claimed_at_utc",
        "first_action_at_utc",
        "seconds",
        "bucket",
        "wall_seconds",
        "clock",
        "client",
    ]
    rows = (
        [
            item.handoff_id,
            item.session_id,
            _iso(item.claimed_at),
            _iso(item.first_action_at),
            "" if item.seconds is None else item.seconds,
            "no_action" if item.bucket is None else item.bucket,
            "" if item.wall_seconds is None else item.wall_seconds,
            query.clock,
            "" if item.client is None else item.client,
        ]
        for item in iter_handoffs(ctx, query)
    )
    suffix = "" if query.clock == "wall" else f"_{query.clock}"
    return CsvTable(f"escalation_handoffs{suffix}.csv", header, rows)


# -- the declarations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRoute(t.Generic[Q]):
    """One report route, declared once; everything else about it is derived from this."""

    #: Under ``<prefix>/analytics/flowpilot/``.
    path: str
    #: The Flask endpoint, and the route's cache, rate-limit counter and telemetry name.
    endpoint: str
    #: Whose minimum role it follows: a key of ``FLOWPILOT_ANALYTICS_ROUTE_ROLES``.
    role_key: str
    #: Its key in ``FLOWPILOT_ANALYTICS_LIMITS`` and the default limit (``limits`` notation).
    limit: tuple[str, str]
    #: The query's schema (its ``post_load`` returns ``Q``), as documented in OpenAPI.
    args: type[Schema]
    #: The body's schema; it dumps what ``compute`` returns.
    body: type[Schema]
    compute: t.Callable[[ReportContext, Q], object]
    summary: str
    #: The ``flask flowpilot-analytics`` command that prints it, if any.
    command: str | None = None
    #: With ``format=csv`` (or ``Accept: text/csv``): the export.
    csv: t.Callable[[ReportContext, Q], CsvTable] | None = None
    #: Answers that are the caller's own (cursors): cached per user, not per account.
    per_user: bool = False
    methods: tuple[str, ...] = ("GET",)
    #: The app's instance of ``args`` when it depends on the app (its settings, its cursor codec).
    bind_args: t.Callable[[AnalyticsState], Schema] | None = None
    #: Where ``args`` reads from: the query string, a JSON body (a write), or the path's
    #: ``<parts>``.
    source: t.Literal["query", "json", "path"] = "query"
    #: The status of a success (``201`` for a write).
    status: int = 200
    #: Whether answers are cached (a write, or a listing that must show a write at once, is not).
    cached: bool = True
    #: What stored by the plugin its answers depend on (:data:`CALENDAR`, :data:`BASELINE`): a
    #: write to it makes the account's cached answers unreachable on every worker.
    depends_on: frozenset[str] = frozenset()
    #: Methods answered with a ``405`` that says why (the route exists, the method never will).
    refused: tuple[str, ...] = ()
    refused_why: str = ""

    def args_schema(self, state: AnalyticsState) -> Schema:
        """The query schema for one app's registration."""
        return self.args() if self.bind_args is None else self.bind_args(state)


def _handoffs_args(state: AnalyticsState) -> Schema:
    buckets = len(state.settings.bucket_edges) + 1
    return schemas.HandoffsArgs(bucket_count=buckets, decode_cursor=CursorCodec(state).decode)


_NEVER_EDITED = ("PUT", "PATCH", "DELETE")
_APPEND_ONLY = (
    "Business-hours versions are never edited or deleted: POST a new version. It measures every "
    "claim from its effective_from on; claims before that keep the version they were measured on."
)

_NEVER_EDITED_SAMPLE = (
    "Baseline samples are deleted one at a time (DELETE escalations/baseline/<id>) and never "
    "edited: delete a wrong one and POST it again."
)

#: A declaration, whatever its query type.
Route: t.TypeAlias = "ReportRoute[t.Any]"

REPORT_ROUTES: tuple[Route, ...] = (
    ReportRoute(
        path="escalations",
        endpoint="escalations",
        role_key="escalations",
        limit=("escalations", "120 per minute"),
        args=schemas.EscalationArgs,
        body=schemas.EscalationMetrics,
        compute=escalation_report,
        csv=escalations_csv,
        summary="Time from an escalation claim to the first action after it",
        command="escalations",
        depends_on=frozenset({CALENDAR}),
    ),
    ReportRoute(
        path="escalations/trend",
        endpoint="escalation_trend",
        role_key="escalations",
        limit=("escalations", "120 per minute"),
        args=schemas.TrendArgs,
        body=schemas.EscalationTrend,
        compute=escalation_trend,
        csv=trend_csv,
        summary=(
            "The escalation metric per local day or ISO week, with attainment of a response target"
        ),
        command="escalation-trend",
        depends_on=frozenset({CALENDAR}),
    ),
    ReportRoute(
        path="escalations/handoffs",
        endpoint="escalation_handoffs",
        role_key="escalations",
        limit=("escalation_handoffs", "120 per minute"),
        args=schemas.HandoffsArgs,
        bind_args=_handoffs_args,
        body=schemas.HandoffPage,
        compute=handoff_page,
        csv=handoffs_csv,
        per_user=True,
        summary="The handoffs behind the escalation number, newest claim first (paged, or CSV)",
        depends_on=frozenset({CALENDAR}),
    ),
    ReportRoute(
        path="psa-metrics",
        endpoint="psa_metrics",
        role_key="psa_metrics",
        limit=("psa_metrics", "15 per minute"),
        args=schemas.PsaMetricsArgs,
        body=schemas.EnhancedPsaMetrics,
        compute=psa_report,
        csv=psa_csv,
        summary="Time entries, documentation funnel and daily trend",
        command="psa-metrics",
    ),
    ReportRoute(
        path="business-hours",
        endpoint="business_hours",
        role_key="business_hours",
        limit=("business_hours", "60 per minute"),
        args=schemas.BusinessHoursArgs,
        body=schemas.BusinessHoursVersions,
        compute=business_hours,
        cached=False,
        summary="The account's business-hours versions, and the one in effect now",
        refused=_NEVER_EDITED,
        refused_why=_APPEND_ONLY,
    ),
    ReportRoute(
        path="business-hours",
        endpoint="add_business_hours",
        role_key="business_hours_write",
        limit=("business_hours_write", "30 per minute"),
        args=schemas.CalendarVersionBody,
        body=schemas.StoredCalendarVersion,
        compute=add_business_hours,
        methods=("POST",),
        source="json",
        status=201,
        cached=False,
        summary="Append a business-hours version to the account's calendar (never edited)",
    ),
    ReportRoute(
        path="escalations/baseline",
        endpoint="baseline",
        role_key="baseline",
        limit=("baseline", "60 per minute"),
        args=schemas.NoArgsSchema,
        body=schemas.BaselineSamples,
        compute=baseline_samples,
        cached=False,
        summary="The account's stopwatch baseline samples, oldest measurement first",
        refused=("PUT", "PATCH", "DELETE"),
        refused_why=_NEVER_EDITED_SAMPLE,
    ),
    ReportRoute(
        path="escalations/baseline",
        endpoint="add_baseline",
        role_key="baseline_write",
        limit=("baseline_write", "30 per minute"),
        args=schemas.BaselineBody,
        body=schemas.BaselineSamples,
        compute=add_baseline,
        methods=("POST",),
        source="json",
        status=201,
        cached=False,
        summary="Add stopwatch baseline samples (1 to 1,000, all or none)",
    ),
    ReportRoute(
        path="escalations/baseline/<sample_id>",
        endpoint="delete_baseline",
        role_key="baseline_write",
        limit=("baseline_write", "30 per minute"),
        args=schemas.SampleIdArgs,
        body=schemas.BaselineSamples,
        compute=delete_baseline,
        methods=("DELETE",),
        source="path",
        status=204,
        cached=False,
        summary="Delete one stopwatch baseline sample",
    ),
    ReportRoute(
        path="escalations/savings",
        endpoint="savings",
        role_key="savings",
        limit=("savings", "30 per minute"),
        args=schemas.SavingsArgs,
        body=schemas.SavingsReport,
        compute=savings_report,
        summary=(
            "The in-product time to first action against the stopwatch baseline: the savings "
            "claim, with its interval, or why there is none"
        ),
        command="savings",
        depends_on=frozenset({BASELINE}),
    ),
)
