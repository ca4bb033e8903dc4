"""Who is calling: the :class:`Identity` a host's loader returns, and the role ladder check."""

from __future__ import annotations

import typing as t
from collections.abc import Mapping
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


FIELDS = ("user_id", "account_id", "role")


def identity_of(value: object) -> IdentityLike | None:
    """What a host's loader returned, as an identity: an object with the three attributes as it is,
    a mapping with the three keys as an :class:`Identity` (``None`` stays ``None``)."""
    if isinstance(value, Mapping):
        role = t.cast(str, value.get("role"))  # None or not text: require_role refuses it
        found = Identity(value.get("user_id"), value.get("account_id"), role)
        return t.cast(IdentityLike, found)
    return t.cast("IdentityLike | None", value)


def require_role(identity: object, ladder: t.Sequence[str], minimum: str) -> IdentityLike:
    """Return the identity (an object with the three attributes, or a mapping with the three keys)
    when its role is at least ``minimum`` on ``ladder``; raise :class:`~.errors.NotSignedIn` or
    :class:`~.errors.Forbidden` otherwise."""
    if identity is None:
        raise NotSignedIn("Sign in to see analytics.")
    found = identity_of(identity)
    for attribute in FIELDS:
        if getattr(found, attribute, None) is None:
            kind = "key" if isinstance(identity, Mapping) else "attribute"
            raise NotSignedIn(
                f"The identity (a {type(identity).__name__}) has no {attribute} {kind}, or it is "
                f"None: the identity loader must return an object with user_id, account_id and "
                f"role, or a mapping with those keys.",
                details={"missing": attribute, "identity_type": type(identity).__name__},
            )
    identity = t.cast(IdentityLike, found)
    role = identity.role
    allowed = {"allowed_roles": list(ladder[ladder.index(minimum) :])}
    if role not in ladder:
        raise Forbidden(
            f"Role {role!r} is not one of {list(ladder)}.", code="unknown_role", details=allowed
        )
    if ladder.index(role) < ladder.index(minimum):
        raise Forbidden(f"This report needs the role {minimum!r} or above.", details=allowed)
    return identity
