"""Permissions and roles: what each action needs, and what each role grants.

A permission is `<object>.<verb>` (`journey.publish`, `segment.export`, `contact.erase`).
Every action in the API, CLI and dashboard names the one permission it needs; `Principal.can`
is the one place that answers. Roles are sets of permissions, with wildcards per object
(`journey.*`) and everything (`*`); the built-in roles below cannot be edited, custom roles
are rows of `roles`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cadenza.errors import Forbidden, ValidationFailed

OBJECTS: Mapping[str, tuple[str, ...]] = {
    "contact": ("read", "write", "export", "erase"),
    "event": ("read", "write"),
    "consent": ("read", "write"),
    "suppression": ("read", "write"),
    "journey": ("read", "write", "publish", "approve", "pause", "simulate"),
    "template": ("read", "write", "publish", "approve", "test_send"),
    "segment": ("read", "write", "export"),
    "score": ("read", "write", "publish", "approve"),
    "lead": ("read", "route", "touch"),
    "outbox": ("read", "replay"),
    "policy": ("read", "write"),
    "report": ("read", "export"),
    "audit": ("read", "export", "verify"),
    "user": ("read", "write"),
    "role": ("read", "write"),
    "key": ("read", "create", "revoke"),
    "connector": ("read", "write"),
    "settings": ("read", "write"),
    "sends": ("stop",),
}
"""Every object and the verbs that apply to it."""

PERMISSIONS: frozenset[str] = frozenset(f"{o}.{v}" for o, verbs in OBJECTS.items()
                                        for v in verbs)

_READ_ALL = [f"{o}.read" for o in OBJECTS if "read" in OBJECTS[o]
             and o not in ("user", "role", "key", "audit", "settings")]

BUILTIN_ROLES: Mapping[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "marketer": frozenset({*_READ_ALL, "contact.write", "event.write", "consent.write",
                           "journey.write", "journey.publish", "journey.pause",
                           "journey.simulate", "template.write", "template.publish",
                           "template.test_send", "segment.write", "segment.export",
                           "score.write", "policy.write"}),
    "analyst": frozenset({*_READ_ALL, "report.export", "segment.export", "journey.simulate"}),
    "approver": frozenset({*_READ_ALL, "journey.approve", "template.approve",
                           "score.approve", "audit.read"}),
    "support_agent": frozenset({"contact.read", "event.read", "consent.read", "consent.write",
                                "suppression.read", "suppression.write", "lead.read",
                                "lead.touch", "outbox.read"}),
    "viewer": frozenset(_READ_ALL),
}
"""Roles every workspace has; custom roles add to them."""

_ROLE_KEY = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")


def check_permission_pattern(pattern: str, where: str) -> str:
    """A permission, `<object>.*` or `*`; anything else is refused with a suggestion."""
    if pattern == "*" or pattern in PERMISSIONS:
        return pattern
    obj, _, verb = pattern.partition(".")
    if obj in OBJECTS and verb == "*":
        return pattern
    if obj in OBJECTS:
        raise ValidationFailed(where, f"{pattern!r}: {obj} has no verb {verb!r}; use one of "
                                      f"{', '.join(OBJECTS[obj])} or *")
    raise ValidationFailed(where, f"{pattern!r} is not a permission; write <object>.<verb> "
                                  f"with an object among {', '.join(sorted(OBJECTS))}")


def check_role_key(key: str, where: str = "key") -> str:
    """A role key: a lower-case slug."""
    if not isinstance(key, str) or not _ROLE_KEY.match(key):
        raise ValidationFailed(where, "a role key is a lower-case slug such as 'campaign-ops' "
                                      "(letters, digits, - and _; at most 64)")
    return key


def grants(patterns: Iterable[str], permission: str) -> bool:
    """Whether any of `patterns` grants `permission`."""
    obj = permission.partition(".")[0]
    return any(p in ("*", permission, f"{obj}.*") for p in patterns)


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user with roles, or an API key with permissions."""

    kind: str
    """'user', 'key' or 'system'."""
    name: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    """Patterns granted (the union of the roles' patterns for a user)."""
    user_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit trail names it: user:<name>, key:<prefix>, system."""
        return "system" if self.kind == "system" else f"{self.kind}:{self.name}"

    def can(self, permission: str) -> bool:
        """Whether this principal may do `permission`."""
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")  # a bug, not input
        return grants(self.permissions, permission)

    def require(self, permission: str) -> None:
        """Raise `Forbidden` naming the missing permission unless allowed."""
        if not self.can(permission):
            raise Forbidden(f"{self.actor} may not {permission.replace('.', ' ')}: the "
                            f"permission {permission!r} is not in its roles")


SYSTEM = Principal("system", "system", frozenset({"*"}))
"""Cadenza itself (scheduled jobs, the engine)."""


def role_permissions(roles: Iterable[str], custom: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """The union of the patterns of `roles` (built-in or custom)."""
    granted: set[str] = set()
    for role in roles:
        if role in BUILTIN_ROLES:
            granted |= BUILTIN_ROLES[role]
        elif role in custom:
            granted |= set(custom[role])
    return frozenset(granted)
