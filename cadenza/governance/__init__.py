"""Governance: API keys now; users, roles, audit trail and approvals later."""

from cadenza.governance.keys import (
    ApiKey,
    KeyChecker,
    KeyKind,
    create_key,
    hash_key,
    list_keys,
    revoke_key,
)

__all__ = ["ApiKey", "KeyChecker", "KeyKind", "create_key", "hash_key", "list_keys",
           "revoke_key"]
