"""Contacts: identities and merges, attributes and declared fields, companies, consent,
suppression, and the read side (profile, search)."""

from cadenza.contacts.consent import (
    CHANNELS,
    ConsentChange,
    ConsentStatus,
    SuppressionReason,
    check_channel,
    is_suppressed,
    normalize_address,
    parse_status,
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
from cadenza.contacts.queries import (
    consent_history,
    get_company,
    get_profile,
    live_contact_id,
    search_contacts,
)
from cadenza.contacts.service import ContactService
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
    "ContactService",
    "FieldRegistry",
    "FieldSpec",
    "ProfileUpdate",
    "Resolution",
    "SuppressionReason",
    "apply_company_updates",
    "apply_profile_updates",
    "check_channel",
    "consent_history",
    "declare_field",
    "drop_field",
    "get_company",
    "get_profile",
    "is_suppressed",
    "list_fields",
    "live_contact_id",
    "merge_contacts",
    "normalize_address",
    "normalize_email",
    "normalize_phone",
    "parse_status",
    "record_consent",
    "register_merge_table",
    "resolve",
    "search_contacts",
    "suppress",
    "unsuppress",
]
