"""Governance: API keys, users and roles, the audit trail, compliance checks, credentials at
rest and bias statistics (approvals, GDPR and the API-wide permission checks come next)."""

from cadenza.governance.audit import AuditEntry, AuditService, Head, Verification
from cadenza.governance.bias import DisparityReport, GroupDisparity, disparity
from cadenza.governance.compliance import Content, Finding, RuleSet, blocking, check_content
from cadenza.governance.keys import (
    ApiKey,
    KeyChecker,
    KeyKind,
    create_key,
    hash_key,
    list_keys,
    revoke_key,
)
from cadenza.governance.roles import BUILTIN_ROLES, PERMISSIONS, SYSTEM, Principal
from cadenza.governance.users import AttemptLimiter, Session, User, UserService
from cadenza.governance.vault import Vault

__all__ = ["BUILTIN_ROLES", "PERMISSIONS", "SYSTEM", "ApiKey", "AttemptLimiter", "AuditEntry",
           "AuditService", "Content", "DisparityReport", "Finding", "GroupDisparity", "Head",
           "KeyChecker", "KeyKind", "Principal", "RuleSet", "Session", "User", "UserService",
           "Vault", "Verification", "blocking", "check_content", "create_key", "disparity",
           "hash_key", "list_keys", "revoke_key"]
