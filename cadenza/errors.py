"""Cadenza's error hierarchy: one root, stable codes, context as attributes.

    CadenzaError                      code
    ├── ConfigError                   config.invalid
    ├── ValidationFailed              input.invalid        (field, reason)
    │   ├── PayloadTooLarge           input.too_large
    │   └── FieldTypeMismatch         input.type_mismatch
    ├── NotFound                      not_found            (kind, key)
    ├── Conflict                      conflict
    │   ├── MergeRefused              identity.merge_refused
    │   └── IntegrityViolation        store.integrity
    ├── AuthError                     auth.invalid
    │   └── KeyRevoked                auth.revoked
    ├── Forbidden                     auth.forbidden
    ├── StoreError                    store.error
    │   └── StoreBusy                 store.busy           (retryable)
    └── ImportFailed                  import.failed

A message names what was wrong and how to fix it. Whether an error may be retried is a
property of the error (`retryable`), not of the call site. The API maps these classes to HTTP
statuses in one table (`cadenza.api.errors`).
"""

from __future__ import annotations


class CadenzaError(Exception):
    """Root of every error Cadenza raises on purpose."""

    code: str = "cadenza.error"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description: stable code, message and context."""
        return {"code": self.code, "message": self.message, **self.context()}

    def context(self) -> dict[str, object]:
        """Attributes that locate the error (field, key, ...)."""
        return {}


class ConfigError(CadenzaError):
    """A setting is missing or invalid."""

    code = "config.invalid"

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"setting {setting}: {reason}")
        self.setting = setting
        self.reason = reason

    def context(self) -> dict[str, object]:
        return {"setting": self.setting}


class ValidationFailed(CadenzaError):
    """Input was rejected; `field` is a dotted path into the input."""

    code = "input.invalid"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    def context(self) -> dict[str, object]:
        return {"field": self.field, "reason": self.reason}


class PayloadTooLarge(ValidationFailed):
    """A message or batch is over its size limit."""

    code = "input.too_large"


class FieldTypeMismatch(ValidationFailed):
    """An attribute value breaks the type declared for its field."""

    code = "input.type_mismatch"


class NotFound(CadenzaError):
    """A referenced object does not exist."""

    code = "not_found"

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key

    def context(self) -> dict[str, object]:
        return {"kind": self.kind, "key": str(self.key)}


class Conflict(CadenzaError):
    """The request contradicts the current state."""

    code = "conflict"


class MergeRefused(Conflict):
    """Two contacts cannot be merged (for example both carry different user ids)."""

    code = "identity.merge_refused"

    def __init__(self, winner: int, loser: int, reason: str) -> None:
        super().__init__(f"contacts {winner} and {loser} cannot be merged: {reason}")
        self.winner = winner
        self.loser = loser
        self.reason = reason

    def context(self) -> dict[str, object]:
        return {"contacts": [self.winner, self.loser], "reason": self.reason}


class IntegrityViolation(Conflict):
    """A write broke a database constraint (a unique key, a foreign key); nothing was written."""

    code = "store.integrity"


class AuthError(CadenzaError):
    """Credentials are missing, unknown or of the wrong kind."""

    code = "auth.invalid"


class KeyRevoked(AuthError):
    """The API key was revoked."""

    code = "auth.revoked"


class Forbidden(CadenzaError):
    """Valid credentials that do not grant this action."""

    code = "auth.forbidden"


class StoreError(CadenzaError):
    """The database failed in a way a retry will not fix."""

    code = "store.error"


class StoreBusy(StoreError):
    """The database stayed locked past the busy timeout, or a transaction lost a race."""

    code = "store.busy"
    retryable = True


class ImportFailed(CadenzaError):
    """A whole import could not run (unreadable file, missing header)."""

    code = "import.failed"
