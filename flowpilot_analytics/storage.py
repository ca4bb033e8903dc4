"""What the cache and the rate limiter share about their storage: the URI's kind, a log-safe spelling of
it, and the back-off that keeps a storage which is down from being tried on every request."""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import urlsplit

#: ``scheme://user:password@host``; the password may hold unencoded ``@`` (clients split at the last one).
_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<secret>\S*)@(?=[^@\s]*$|[^@\s]*[\s/])"
)


def is_redis(uri: str) -> bool:
    """Whether ``uri`` names a Redis storage (shared by every worker) rather than process memory."""
    return uri.startswith(("redis://", "rediss://", "redis+unix://"))


def redact_uri(uri: str | None) -> str:
    """A storage or database URI fit for a log: the password replaced by ``***``."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", uri or "")


def redact(text: str, uri: str | None) -> str:
    """``text`` (e.g. an exception from a client of ``uri``) without ``uri``'s password anywhere in it."""
    secret = urlsplit(uri or "").password
    if secret:
        text = text.replace(secret, "***")
    return redact_uri(text)


class Backoff:
    """After a failure, say "skip the storage" for ``interval`` seconds; thread-safe."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._down_since: float | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """Whether the storage failed less than ``interval`` seconds ago."""
        with self._lock:
            return self._down_since is not None and time.monotonic() - self._down_since < self.interval

    def failed(self) -> bool:
        """Record a failure; whether it is the first since the storage last worked (worth a log line)."""
        with self._lock:
            first = self._down_since is None
            self._down_since = time.monotonic()
            return first

    def worked(self) -> bool:
        """Record a success; whether the storage was down until now (worth a log line)."""
        with self._lock:
            was_down = self._down_since is not None
            self._down_since = None
            return was_down
