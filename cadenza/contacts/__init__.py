"""Contacts: identities and merges, attributes and declared fields, companies, consent,
suppression, and the read side (profile, search)."""

from cadenza.contacts.consent import (
    CHANNELS,
    ConsentChange,
    ConsentStatus,
    SuppressionReason,
    is_suppressed,
    record_consent,
    suppress,
    unsuppress,
)
from cadenza.contacts.fields import FieldRegistry, FieldSpec, declare_field, drop_field, list_fields
from cadenza.contacts.identity import (
    ANONYMOUS_ID,
    EMAIL,
    PHONE,
    USER_ID,
    Claim,
    Resolution,
    merge_contacts,
    register_merge_table,
    resolve,
)
from cadenza.contacts.normalize import normalize_email, normalize_phone
from cadenza.contacts.updates import (
    CompanyUpdate,
    ProfileUpdate,
    apply_company_updates,
    apply_profile_updates,
)

__all__ = [
    "ANONYMOUS_ID",
    "CHANNELS",
    "EMAIL",
    "PHONE",
    "USER_ID",
    "Claim",
    "CompanyUpdate",
    "ConsentChange",
    "ConsentStatus",
    "FieldRegistry",
    "FieldSpec",
    "ProfileUpdate",
    "Resolution",
    "SuppressionReason",
    "apply_company_updates",
    "apply_profile_updates",
    "declare_field",
    "drop_field",
    "is_suppressed",
    "list_fields",
    "merge_contacts",
    "normalize_email",
    "normalize_phone",
    "record_consent",
    "register_merge_table",
    "resolve",
    "suppress",
    "unsuppress",
]
