"""The whole schema, one module, both dialects (SQLite and PostgreSQL).

Timestamps are integers: UTC epoch milliseconds. JSON columns hold attributes, properties and
context (JSONB on PostgreSQL). Keys that the engine depends on for correctness (message ids,
identities, consent rows) are unique in the database, never only checked in memory.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite's INTEGER PRIMARY KEY is the rowid only when the type is exactly INTEGER.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ms = sa.BigInteger  # epoch milliseconds, UTC


def _id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


contacts = sa.Table(
    "contacts",
    metadata,
    _id(),
    sa.Column("email", sa.String(320), nullable=True, doc="primary email, normalised"),
    sa.Column("phone", sa.String(32), nullable=True, doc="primary phone, E.164"),
    sa.Column("user_id", sa.String(256), nullable=True, doc="the one user id, if known"),
    sa.Column("attributes", JSON, nullable=False, default=dict),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("locale", sa.String(35), nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column(
        "merged_into",
        Id,
        sa.ForeignKey("contacts.id"),
        nullable=True,
        doc="set when this contact was merged into another; the row stays as a tombstone",
    ),
    sa.Index("ix_contacts_email", "email"),
    sa.Index("ix_contacts_phone", "phone"),
    sa.Index("ix_contacts_user_id", "user_id"),
    sa.Index("ix_contacts_updated_at", "updated_at"),
)

identities = sa.Table(
    "identities",
    metadata,
    _id(),
    sa.Column("kind", sa.String(64), nullable=False, doc="user_id, anonymous_id, email, phone, "
              "or external:<system>"),
    sa.Column("value", sa.String(512), nullable=False),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("source", sa.String(64), nullable=False, default="api"),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("kind", "value"),
    sa.Index("ix_identities_contact_id", "contact_id"),
)

contact_merges = sa.Table(
    "contact_merges",
    metadata,
    _id(),
    sa.Column("winner_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("loser_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False, doc="identify, alias, import, manual"),
    sa.Column("outcome", sa.String(16), nullable=False, doc="merged, or refused (kept apart)"),
    sa.Column("identity_kind", sa.String(64), nullable=True),
    sa.Column("identity_value", sa.String(512), nullable=True),
    sa.Column("message_id", sa.String(256), nullable=True),
    sa.Column("details", JSON, nullable=False, default=dict),
    sa.Column("at", Ms, nullable=False),
    sa.Index("ix_contact_merges_winner_id", "winner_id"),
    sa.Index("ix_contact_merges_loser_id", "loser_id"),
)

fields = sa.Table(
    "fields",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("options", JSON, nullable=False, default=dict, doc="enum values, list item type"),
    sa.Column("entity", sa.String(16), nullable=False, default="contact"),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created_at", Ms, nullable=False),
)

companies = sa.Table(
    "companies",
    metadata,
    _id(),
    sa.Column("group_id", sa.String(256), nullable=False, unique=True),
    sa.Column("name", sa.String(512), nullable=True),
    sa.Column("domain", sa.String(255), nullable=True),
    sa.Column("attributes", JSON, nullable=False, default=dict),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Index("ix_companies_domain", "domain"),
)

company_members = sa.Table(
    "company_members",
    metadata,
    sa.Column("company_id", Id, sa.ForeignKey("companies.id"), primary_key=True),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_company_members_contact_id", "contact_id"),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("purpose", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, doc="opted_in, opted_out, pending"),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

consent_history = sa.Table(
    "consent_history",
    metadata,
    _id(),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("previous_status", sa.String(16), nullable=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("text_version", sa.String(128), nullable=True),
    sa.Column("ip", sa.String(45), nullable=True),
    sa.Column("at", Ms, nullable=False),
    sa.Index("ix_consent_history_contact_id_at", "contact_id", "at"),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    _id(),
    sa.Column("kind", sa.String(16), nullable=False, doc="email or phone"),
    sa.Column("address", sa.String(320), nullable=False,
              doc="normalised address, or 'sha256:<keyed hash>' once erased"),
    sa.Column("reason", sa.String(32), nullable=False,
              doc="hard_bounce, complaint, manual, erased, unsubscribed"),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("kind", "address"),
)

events = sa.Table(
    "events",
    metadata,
    _id(),
    sa.Column("message_id", sa.String(256), nullable=False),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("type", sa.String(16), nullable=False, doc="track, page, screen, identify, group, "
              "alias"),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("properties", JSON, nullable=False, default=dict),
    sa.Column("context", JSON, nullable=False, default=dict),
    sa.Column("source", sa.String(64), nullable=False, default="api"),
    sa.Column("timestamp", Ms, nullable=False, doc="when it happened, skew-corrected"),
    sa.Column("received_at", Ms, nullable=False),
    sa.UniqueConstraint("message_id"),
    sa.Index("ix_events_contact_id_timestamp", "contact_id", "timestamp"),
    sa.Index("ix_events_name_timestamp", "name", "timestamp"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    sa.Column("kind", sa.String(16), nullable=False, doc="write or admin"),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("prefix", sa.String(24), nullable=False, doc="first characters, for display"),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("revoked_at", Ms, nullable=True),
    sa.Column("last_used_at", Ms, nullable=True),
)

imports = sa.Table(
    "imports",
    metadata,
    _id(),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, doc="running, done, failed"),
    sa.Column("rows_total", sa.Integer, nullable=False, default=0),
    sa.Column("rows_created", sa.Integer, nullable=False, default=0),
    sa.Column("rows_updated", sa.Integer, nullable=False, default=0),
    sa.Column("rows_unchanged", sa.Integer, nullable=False, default=0),
    sa.Column("rows_failed", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", Ms, nullable=False),
    sa.Column("finished_at", Ms, nullable=True),
)

import_errors = sa.Table(
    "import_errors",
    metadata,
    _id(),
    sa.Column("import_id", Id, sa.ForeignKey("imports.id"), nullable=False),
    sa.Column("row", sa.Integer, nullable=False, doc="line number in the file, header is 1"),
    sa.Column("field", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("ix_import_errors_import_id", "import_id"),
)
