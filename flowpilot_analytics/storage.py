"""What the cache and the rate limiter share about their storage: the URI's kind, a log-safe
spelling of it, and the back-off that keeps a storage which is down from being tried on every
request."""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

#: The Redis schemes the cache and the limiter speak (each sharing one storage across workers).
REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
#: A URI inside any text: ``scheme://`` and everything up to the next white space.
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>\S*)")
#: Words that make a query parameter's name a credential (``password``, ``sentinel_password``,
#: ``pwd``, ``access_key``, ``token``, ``auth``...), matched anywhere in the name, whatever the
#: case.
_CREDENTIAL_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "cred", "sig")
MASK = "***"


def scheme(uri: str) -> str:
    """``uri``'s scheme (``redis+sentinel``), or ``""`` when it does not start with
    ``scheme://``."""
    match = _URI.match(uri)
    return match.group("scheme")[:-3] if match else ""


def is_redis(uri: str) -> bool:
    """Whether ``uri`` names a Redis storage (shared by every worker) rather than process memory."""
    return scheme(uri) in REDIS_SCHEMES


def client_options(uri: str, timeout: float = 0.5) -> dict[str, object]:
    """Keyword arguments for the client of a Redis storage: connections wait at most ``timeout``
    seconds, and a Sentinel's own connections (``sentinel_kwargs``) are not retried with back-off
    (the client asks the next sentinel instead), so a storage that is down costs a request about
    ``timeout``, not seconds."""
    if not is_redis(uri):
        return {}
    options: dict[str, object] = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if scheme(uri) == "redis+sentinel":
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options["sentinel_kwargs"] = {**options, "retry": Retry(NoBackoff(), 0)}
    return options


def _is_credential(name: str) -> bool:
    return any(word in unquote_plus(name).lower() for word in _CREDENTIAL_WORDS)


def _split(rest: str) -> tuple[str | None, str, str]:
    """A URI's part after ``scheme://`` as (userinfo or ``None``, the rest up to the query, the
    query).

    Clients take the userinfo up to the last ``@`` before the first ``/``, ``?`` or ``#``; a
    password may hold those unencoded, so this takes it up to the last ``@`` before the query, or,
    when there is none, up to the last one after a ``?`` that starts no ``name=value`` (a password
    holding ``?``): it redacts too much rather than too little.
    """
    query_at = rest.find("?")
    head = rest if query_at < 0 else rest[:query_at]
    at = head.rfind("@")
    if at < 0 and query_at >= 0 and "=" not in rest[query_at : rest.rfind("@")]:
        at = rest.rfind("@")
    userinfo, rest = (None, rest) if at < 0 else (rest[:at], rest[at + 1 :])
    query_at = rest.find("?")
    return (
        (userinfo, rest, "") if query_at < 0 else (userinfo, rest[:query_at], rest[query_at + 1 :])
    )


def _leading_userinfo(text: str) -> tuple[str, str, str] | None:
    """``text``'s ``scheme://``, userinfo and what follows its ``@``, when ``text`` starts with a
    URI whose userinfo may hold white space (``redis://default:hunter two@h/0``): the userinfo runs
    up to the last ``@`` before the first ``/``, ``?``, ``#`` or line break, so an ``@`` after one
    of those (``redis://h/0?client_name=ops@example``) is not the userinfo's."""
    match = _URI.match(text)
    if not match:
        return None
    rest = text[match.end("scheme") :]
    head = re.split(r"[/?#\r\n]", rest, maxsplit=1)[0]
    at = head.rfind("@")
    return None if at < 0 else (match.group("scheme"), rest[:at], rest[at + 1 :])


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}@" if colon else f"{MASK}@"  # a bare ``token@`` is a credential too


def _redact_one(match: re.Match[str]) -> str:
    userinfo, location, query = _split(match.group("rest"))
    text = match.group("scheme")
    if userinfo:
        text += _mask_userinfo(userinfo)
    elif userinfo is not None:
        text += "@"
    text += location
    if query or match.group("rest").endswith("?"):
        pairs = (pair.partition("=") for pair in query.split("&"))
        text += "?" + "&".join(
            f"{name}={MASK}" if eq and _is_credential(name) else name + eq + value
            for name, eq, value in pairs
        )
    return text


def redact_uri(uri: str | None) -> str:
    """A storage or database URI fit for a log (or any text holding URIs): every credential replaced
    by ``***``.

    That is the userinfo's password (``user:password@``, the user kept), a bare ``token@``, and the
    value of each query parameter whose name looks like a credential (``password``,
    ``sentinel_password``, ``token``...). When the text starts with a URI, its userinfo may hold
    white space (``redis://default:hunter two@h/0``).
    """
    text = uri or ""
    leading = _leading_userinfo(text)
    if leading and leading[1]:
        text = leading[0] + _mask_userinfo(leading[1]) + leading[2]
    return _URI.sub(_redact_one, text)


def secrets_of(uri: str | None) -> list[str]:
    """The credentials ``uri`` carries (as written and decoded), longest first: what :func:`redact`
    removes."""
    found: set[str] = set()
    leading = _leading_userinfo(uri or "")
    if leading and leading[1]:  # a userinfo holding white space, which ``_URI`` cuts
        user, colon, password = leading[1].partition(":")
        found.add(password if colon else user)
    for match in _URI.finditer(uri or ""):
        userinfo, _, query = _split(match.group("rest"))
        if userinfo:
            user, colon, password = userinfo.partition(":")
            secret = password if colon else user
            found |= {
                secret,
                re.split(r"[/?#]", secret)[0],
            }  # the part a client that cuts at "/?#" would quote
        for name, eq, value in (pair.partition("=") for pair in query.split("&")):
            if eq and _is_credential(name):
                found.add(value)
        try:
            clients_view = urlsplit(
                match.group(0)
            )  # what a client takes (it may split a password differently)
        except ValueError:  # e.g. an unclosed "[": no client reads it either
            continue
        found.add(clients_view.password or clients_view.username or "")
        found |= {value for name, value in parse_qsl(clients_view.query) if _is_credential(name)}
    found |= {decoded(secret) for secret in found for decoded in (unquote, unquote_plus)}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def redact(text: str, uri: str | None) -> str:
    """``text`` (e.g. an exception from a client of ``uri``) without any of ``uri``'s credentials in
    it."""
    for secret in secrets_of(uri):
        text = text.replace(secret, MASK)
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
            return (
                self._down_since is not None and time.monotonic() - self._down_since < self.interval
            )

    def failed(self) -> bool:
        """Record a failure; whether it is the first since the storage last worked (worth a log
        line)."""
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
