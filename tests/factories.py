"""Builders for host rows, with times given as offsets from the test clock's NOW."""

from __future__ import annotations

import itertools
import typing as t
from datetime import datetime, timedelta

from .host import NOW, AISession, AISessionStep, SessionHandoff, db

_ids = itertools.count(1)


def at(seconds_ago: float = 0, *, days: float = 0, minutes: float = 0) -> datetime:
    """A naive UTC timestamp this long before NOW (the host stores naive UTC)."""
    moment = NOW - timedelta(seconds=seconds_ago, days=days, minutes=minutes)
    return moment.replace(tzinfo=None)


def session(
    account: int, created_at: datetime | None = None, *, ticket: str | None = None
) -> AISession:
    row = AISession(account_id=account, created_at=created_at or at(days=1), psa_ticket_id=ticket)
    db.session.add(row)
    db.session.flush()
    return row


def step(sess: AISession, created_at: datetime) -> AISessionStep:
    row = AISessionStep(account_id=sess.account_id, session_id=sess.id, created_at=created_at)
    db.session.add(row)
    return row


def handoff(
    sess: AISession,
    claimed_at: datetime | None,
    created_at: datetime | None = None,
    claimed_by: int | None = None,
) -> SessionHandoff:
    created = created_at or (claimed_at - timedelta(minutes=5) if claimed_at else at(days=1))
    row = SessionHandoff(
        account_id=sess.account_id,
        session_id=sess.id,
        created_at=created,
        claimed_at=claimed_at,
        claimed_by=claimed_by,
    )
    db.session.add(row)
    return row


def escalation(account: int, claimed_at: datetime, *step_delays: float) -> SessionHandoff:
    """A session with one claimed handoff and steps this many seconds after the claim."""
    sess = session(account, claimed_at - timedelta(hours=1))
    row = handoff(sess, claimed_at)
    for delay in step_delays:
        step(sess, claimed_at + timedelta(seconds=delay))
    return row


def commit() -> None:
    db.session.commit()


def activity(
    account: int,
    session_id: int | None,
    activity_type: str,
    created_at: datetime,
    minutes: float | None = None,
    external_id: str | None = None,
    user_id: str | None = None,
    billable: bool | None = None,
) -> None:
    """A row in the plugin's table, as the hook would have written it."""
    table = db.metadata.tables["psa_activity_logs"]
    db.session.execute(
        table.insert().values(
            account_id=account,
            session_id=session_id,
            activity_type=activity_type,
            created_at=created_at,
            minutes=minutes,
            external_id=external_id,
            psa_ticket_id=None,
            user_id=user_id,
            billable=billable,
        )
    )


__all__: t.Sequence[str] = ["at", "session", "step", "handoff", "escalation", "commit", "activity"]
