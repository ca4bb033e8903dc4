"""Who is calling: the :class:`Identity` a host's loader returns, and the role ladder check."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from .errors import Forbidden, NotSignedIn

#: An account's id as the host keeps it (a number, text or a UUID), only ever passed along.
AccountId: t.TypeAlias = object
#: A user's id as the host keeps it.
UserId: t.TypeAlias = object


@dataclass(frozen=True)
class Identity:
    """The caller as the host knows it. The account scopes every query; nothing else does."""

    user_id: t.Any
    account_id: t.Any
    role: str


class IdentityLike(t.Protocol):
    """Any object with the three attributes works; :class:`Identity` is the ready-made one."""

    user_id: t.Any
    account_id: t.Any
    role: str


def require_role(
    identity: IdentityLike | None, ladder: t.Sequence[str], minimum: str
) -> IdentityLike:
    """Return the identity when its role is at least ``minimum`` on ``ladder``; raise
    :class:`~.errors.NotSignedIn` or :class:`~.errors.Forbidden` otherwise."""
    if identity is None:
        raise NotSignedIn("Sign in to see analytics.")
    for attribute in ("user_id", "account_id", "role"):
        if getattr(identity, attribute, None) is None:
            raise NotSignedIn(f"The identity has no {attribute}.")
    role = identity.role
    allowed = {"allowed_roles": list(ladder[ladder.index(minimum) :])}
    if role not in ladder:
        raise Forbidden(
            f"Role {role!r} is not one of {list(ladder)}.", code="unknown_role", details=allowed
        )
    if ladder.index(role) < ladder.index(minimum):
        raise Forbidden(f"This report needs the role {minimum!r} or above.", details=allowed)
    return identity
