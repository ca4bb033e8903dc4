"""Who is calling: the :class:`Identity` a host's loader returns, and the role ladder check."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from .errors import ApiError


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


def require_role(identity: IdentityLike | None, ladder: t.Sequence[str], minimum: str) -> IdentityLike:
    """Return the identity when its role is at least ``minimum`` on ``ladder``; raise 401/403 otherwise."""
    if identity is None:
        raise ApiError(401, "unauthenticated", "Sign in to see analytics.")
    for attribute in ("user_id", "account_id", "role"):
        if getattr(identity, attribute, None) is None:
            raise ApiError(401, "unauthenticated", f"The identity has no {attribute}.")
    role = identity.role
    if role not in ladder:
        raise ApiError(403, "unknown_role", f"Role {role!r} is not one of {list(ladder)}.",
                       details={"allowed_roles": list(ladder[ladder.index(minimum):])})
    if ladder.index(role) < ladder.index(minimum):
        raise ApiError(403, "forbidden", f"This report needs the role {minimum!r} or above.",
                       details={"allowed_roles": list(ladder[ladder.index(minimum):])})
    return identity
