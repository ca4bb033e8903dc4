"""A fake PSA documentation service, shaped like the host's ``psa_documentation_service``."""

from __future__ import annotations

import itertools
import typing as t
from dataclasses import dataclass


class PsaDown(Exception):
    """What the fake raises when told to fail, standing in for a PSA API error."""


@dataclass
class TimeEntry:
    id: str
    minutes: float


class FakePsaService:
    """Returns a mapping for notes and an object for time entries, as real PSA clients differ."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, t.Any]] = []
        self.fail_with: Exception | None = None
        self.fixed_id: str | None = None
        self._ids = itertools.count(1000)

    def _next_id(self) -> str:
        return self.fixed_id or str(next(self._ids))

    def push_note(self, session: t.Any, text: str, **kw: t.Any) -> dict[str, t.Any]:
        self.calls.append(("note", text))
        if self.fail_with is not None:
            raise self.fail_with
        return {"id": self._next_id(), "text": text}

    def push_time_entry(self, session: t.Any, minutes: float, **kw: t.Any) -> TimeEntry:
        self.calls.append(("time", minutes))
        if self.fail_with is not None:
            raise self.fail_with
        return TimeEntry(id=self._next_id(), minutes=minutes)
