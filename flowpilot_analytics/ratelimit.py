"""Per-user rate limits for the plugin's routes, on Flask-Limiter's engine without its app-wide
hooks.

``flask_limiter.Limiter.init_app`` installs a ``before_request`` on the whole app and reads (and
writes) the host's ``RATELIMIT_*`` settings, so a plugin-owned one could limit the host's routes.
The plugin therefore drives the ``limits`` package that Flask-Limiter is built on, for its own
routes only: the same limit strings, storage URIs (``memory://``, ``redis://``,
``redis+sentinel://``...; checked at ``init_app`` by :mod:`.config`) and fixed-window strategy.
A host that passes its own ``Limiter`` shares that limiter's storage and strategy instead.
"""

from __future__ import annotations

import logging
import math
import time
import typing as t
from urllib.parse import quote

import limits
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, RateLimiter

from . import telemetry
from .errors import RateLimited
from .storage import Backoff, client_options, redact, redact_uri, scheme

if t.TYPE_CHECKING:
    from flask_limiter import Limiter

logger = logging.getLogger(__name__)

NAMESPACE = "flowpilot_analytics"


class RouteLimits:
    """The limits of one app's registration: each route's (by endpoint), how many calls, where
    counted.

    Built from the route declarations (:data:`~.reports.REPORT_ROUTES`), so no route is left
    unlimited.
    """

    def __init__(
        self, route_limits: t.Mapping[str, str], storage_uri: str, host_limiter: Limiter | None
    ) -> None:
        self.items = {route: limits.parse(value) for route, value in route_limits.items()}
        self.storage_uri = storage_uri
        self._host_limiter = host_limiter
        self._own: RateLimiter | None = None
        self._fallback = FixedWindowRateLimiter(storage_from_string("memory://"))
        #: While the storage is down, it is tried again every ``backoff.interval`` seconds.
        self.backoff = Backoff()

    @property
    def strategy(self) -> RateLimiter:
        """The host limiter's strategy when one was
        given, else the plugin's own (made on first use)."""
        if self._host_limiter is not None:
            return self._host_limiter.limiter
        if self._own is None:
            # the storage client's keywords, some not the scalars ``limits`` declares them as
            options: dict[str, t.Any] = client_options(self.storage_uri)
            self._own = FixedWindowRateLimiter(storage_from_string(self.storage_uri, **options))
        return self._own

    @property
    def host_storage(self) -> bool:
        """Whether the limits are counted in the host limiter's storage (``limiter=``) rather than
        at :attr:`storage_uri`."""
        return self._host_limiter is not None

    @property
    def in_process(self) -> bool:
        """Whether the limits are counted in this process's memory, each worker apart: there is no
        storage to reach."""
        if self._host_limiter is None:
            return scheme(self.storage_uri) == "memory"
        return isinstance(self.strategy.storage, MemoryStorage)

    def check(self) -> bool:
        """Whether the storage the limits are counted in answers now: the ``limits`` package's
        health check (a PING for Redis, with :func:`~.storage.client_options`' short timeouts);
        ``False``, never an error, when it does not answer or cannot be made."""
        try:
            return bool(self.strategy.storage.check())
        except Exception:  # each storage backend raises its own errors
            return False

    def _count(self, item: limits.RateLimitItem, ids: tuple[str, ...]) -> tuple[bool, float | None]:
        """Hit the shared storage; while it is down, a per-process fallback counts instead."""
        if not self.backoff.down:
            try:
                allowed = self.strategy.hit(item, *ids)
                reset_at = (
                    None if allowed else self.strategy.get_window_stats(item, *ids).reset_time
                )
            except Exception as exc:  # each storage backend raises its own errors
                if self.backoff.failed():
                    logger.warning(
                        "rate-limit storage %s unavailable (%s); limiting per process until it "
                        "is back",
                        redact_uri(self.storage_uri),
                        redact(str(exc), self.storage_uri),
                    )
            else:
                if self.backoff.worked():
                    logger.warning("rate-limit storage %s is back", redact_uri(self.storage_uri))
                return allowed, reset_at
        allowed = self._fallback.hit(item, *ids)
        return allowed, None if allowed else self._fallback.get_window_stats(item, *ids).reset_time

    @staticmethod
    def _identifiers(route: str, account_id: object, user_id: object) -> tuple[str, ...]:
        """The storage key's parts; ``limits`` joins them with ``/``, so each id is percent-encoded
        and no two (account, user) pairs can share a key."""
        return (NAMESPACE, route, quote(str(account_id), safe=""), quote(str(user_id), safe=""))

    def _item(self, route: str) -> limits.RateLimitItem:
        try:
            return self.items[route]
        except KeyError:
            raise KeyError(
                f"no rate limit for the route {route!r}; known: {sorted(self.items)}"
            ) from None

    def hit(self, route: str, account_id: object, user_id: object) -> None:
        """Count one call by this user; over the limit raise :class:`~.errors.RateLimited`.

        If the storage cannot be reached the limit is kept per process (in memory) and a warning
        logged; the storage is tried again every ``backoff.interval`` seconds and used once it is
        back.
        """
        item = self._item(route)
        allowed, reset_at = self._count(item, self._identifiers(route, account_id, user_id))
        if not allowed:
            retry_after = max(1, math.ceil((reset_at or time.time()) - time.time()))
            telemetry.rate_limited.add(1, {"route": route})
            raise RateLimited(str(item), retry_after)

    def reset(self, route: str, account_id: object, user_id: object) -> None:
        """Give one user their full budget back on ``route``."""
        item = self._item(route)
        ids = self._identifiers(route, account_id, user_id)
        self._fallback.clear(item, *ids)
        self.strategy.clear(item, *ids)
