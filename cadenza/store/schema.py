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
    # A contact's timeline in time order; `name` rides along so that counting a contact's
    # events of some names in a window (conditions, scores) never reads the wide rows.
    sa.Index("ix_events_contact_id_timestamp_name", "contact_id", "timestamp", "name"),
    # Covering for "which contacts did X since T": segment counts, scoring and model features
    # read the contact ids from the index alone, never the wide event rows.
    sa.Index("ix_events_name_timestamp_contact_id", "name", "timestamp", "contact_id"),
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
    sa.Column("permissions", JSON, nullable=True,
              doc="admin keys: permission patterns granted (null: everything, as before)"),
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

# --- journeys: the spec (versions) and the run (enrollments) ---------------------------------

journeys = sa.Table(
    "journeys",
    metadata,
    _id(),
    sa.Column("key", sa.String(128), nullable=False, unique=True, doc="the journey's slug"),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False,
              doc="draft (never published), live, paused, archived"),
    sa.Column("live_version_id", Id, nullable=True, doc="the version new entries go to"),
    sa.Column("shadow_version_id", Id, nullable=True, doc="a version running in shadow"),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

journey_versions = sa.Table(
    "journey_versions",
    metadata,
    _id(),
    sa.Column("journey_id", Id, sa.ForeignKey("journeys.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, doc="draft or published (immutable)"),
    sa.Column("definition", JSON, nullable=False, doc="the journey file, as JSON"),
    sa.Column("content_hash", sa.String(64), nullable=True,
              doc="sha256 of the canonical definition, set on publish"),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("published_at", Ms, nullable=True),
    sa.UniqueConstraint("journey_id", "number"),
)

PARTITIONS = 64
"""Contacts hash into this many partitions (`contact_id % PARTITIONS`), which engine workers
lease; rows that follow a contact carry theirs in `part`. Fixed for the life of a database."""

enrollments = sa.Table(
    "enrollments",
    metadata,
    _id(),
    sa.Column("journey_id", Id, sa.ForeignKey("journeys.id"), nullable=False),
    sa.Column("version_id", Id, sa.ForeignKey("journey_versions.id"), nullable=False),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("part", sa.Integer, nullable=False, doc="contact partition, leased by workers"),
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
    sa.Column("node", sa.String(128), nullable=False, doc="the step the contact is at"),
    sa.Column("status", sa.String(16), nullable=False,
              doc="ready (run `node` when due), waiting (in wait step `node`: resume when due or "
                  "on its event), completed, exited, failed"),
    sa.Column("wake_at", Ms, nullable=True, doc="when the step is due; null waits for an event"),
    sa.Column("wait_event", sa.String(256), nullable=True, doc="event name a wait_for expects"),
    sa.Column("wait_key", sa.String(512), nullable=True,
              doc="the entry event's key value a keyed wait_for expects"),
    sa.Column("seq", sa.Integer, nullable=False, default=0,
              doc="steps run so far; part of every idempotency key and the optimistic check"),
    sa.Column("context", JSON, nullable=False, default=dict,
              doc="entry event or API payload, split variants"),
    sa.Column("active_slot", sa.Integer, nullable=True,
              doc="0 while active when only one active enrollment is allowed; null otherwise"),
    sa.Column("entry_key", sa.String(256), nullable=True,
              doc="what caused the entry (an event id, a date occurrence): enters once"),
    sa.Column("entered_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("ended_at", Ms, nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True, doc="completed, exited:<goal>, failed"),
    # Contact first: these two also serve every "enrollments of these contacts" lookup.
    sa.UniqueConstraint("contact_id", "journey_id", "shadow", "active_slot"),
    sa.UniqueConstraint("contact_id", "journey_id", "shadow", "entry_key"),
    # The timer index: only rows that are due to run at some time.
    sa.Index("ix_enrollments_due", "wake_at",
             sqlite_where=sa.text("status IN ('ready', 'waiting') AND wake_at IS NOT NULL"),
             postgresql_where=sa.text("status IN ('ready', 'waiting') AND wake_at IS NOT NULL")),
)

journey_history = sa.Table(
    "journey_history",
    metadata,
    # No foreign keys on this log (nor on the outbox): checking three parents for every row
    # costs the engine a third of its write time; rows are only written next to the
    # enrollment they describe, in the same transaction.
    sa.Column("enrollment_id", Id, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, doc="the enrollment's seq when the pass began"),
    sa.Column("contact_id", Id, nullable=False),
    sa.Column("version_id", Id, nullable=False),
    sa.Column("at", Ms, nullable=False),
    sa.Column("cause", sa.String(32), nullable=False,
              doc="entry, timer, event, timeout, goal, migrate, api"),
    sa.Column("steps", JSON, nullable=False,
              doc="[[node, outcome, details], ...] run in this pass, in order"),
    sqlite_with_rowid=False,  # one b-tree keyed by (enrollment, seq), no second index
)

journey_step_stats = sa.Table(
    "journey_step_stats",
    metadata,
    sa.Column("version_id", Id, sa.ForeignKey("journey_versions.id"), primary_key=True),
    sa.Column("shadow", sa.Boolean, primary_key=True),
    sa.Column("node", sa.String(128), primary_key=True),
    sa.Column("entered", sa.BigInteger, nullable=False, default=0),
    sa.Column("departed", sa.BigInteger, nullable=False, default=0),
)

journey_edge_stats = sa.Table(
    "journey_edge_stats",
    metadata,
    sa.Column("version_id", Id, sa.ForeignKey("journey_versions.id"), primary_key=True),
    sa.Column("shadow", sa.Boolean, primary_key=True),
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("target", sa.String(128), primary_key=True, doc="a step, or '$end'/'$exit'"),
    sa.Column("count", sa.BigInteger, nullable=False, default=0),
)

conversions = sa.Table(
    "conversions",
    metadata,
    _id(),
    sa.Column("enrollment_id", Id, sa.ForeignKey("enrollments.id"), nullable=False),
    sa.Column("journey_id", Id, sa.ForeignKey("journeys.id"), nullable=False),
    sa.Column("version_id", Id, sa.ForeignKey("journey_versions.id"), nullable=False),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
    sa.Column("goal", sa.String(128), nullable=False),
    sa.Column("event_id", Id, nullable=True),
    sa.Column("at", Ms, nullable=False),
    sa.UniqueConstraint("enrollment_id", "goal"),
    sa.Index("ix_conversions_journey_id_at", "journey_id", "at"),
)

contact_tags = sa.Table(
    "contact_tags",
    metadata,
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("tag", sa.String(128), primary_key=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Index("ix_contact_tags_tag", "tag"),
)

# --- side effects: the outbox and what it delivers to ----------------------------------------

outbox = sa.Table(
    "outbox",
    metadata,
    _id(),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("contact_id", Id, nullable=False),
    sa.Column("enrollment_id", Id, nullable=True),
    sa.Column("journey_id", Id, nullable=True),
    sa.Column("version_id", Id, nullable=True),
    sa.Column("node", sa.String(128), nullable=True),
    sa.Column("part", sa.Integer, nullable=False),
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("template", sa.String(128), nullable=True),
    sa.Column("payload", JSON, nullable=False, default=dict,
              doc="step parameters and the entry context the message may use"),
    sa.Column("status", sa.String(16), nullable=False,
              doc="pending, sending, sent, shadowed, dead, cancelled"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", Ms, nullable=False),
    sa.Column("claimed_until", Ms, nullable=True, doc="a sending row's claim expires then"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("provider_ref", sa.String(256), nullable=True, doc="the provider's message id"),
    sa.Column("rendered", JSON, nullable=True, doc="what was (or in shadow, would be) sent"),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("sent_at", Ms, nullable=True),
    sa.Column("purpose", sa.String(64), nullable=True,
              doc="consent purpose the message was sent under (marketing, transactional, ...)"),
    sa.Index("ix_outbox_contact_id", "contact_id"),
    sa.Index("ix_outbox_contact_sent", "contact_id", "channel", "sent_at"),
    sa.Index("ix_outbox_provider_ref", "provider_ref"),
    sa.Index("ix_outbox_ready", "next_attempt_at",
             sqlite_where=sa.text("status IN ('pending', 'sending')"),
             postgresql_where=sa.text("status IN ('pending', 'sending')")),
    sa.Index("ix_outbox_dead", "status", sqlite_where=sa.text("status = 'dead'"),
             postgresql_where=sa.text("status = 'dead'")),
)

templates = sa.Table(
    "templates",
    metadata,
    _id(),
    sa.Column("key", sa.String(128), nullable=False, unique=True),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("subject", sa.Text, nullable=False, default=""),
    sa.Column("body", sa.Text, nullable=False, doc="Jinja2 source, rendered in the sandbox"),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("preheader", sa.Text, nullable=False, default="", server_default=""),
    sa.Column("text", sa.Text, nullable=True, doc="text part source; generated when absent"),
    sa.Column("format", sa.String(16), nullable=False, default="jinja", server_default="jinja",
              doc="body source: jinja (HTML or text) or mjml"),
    sa.Column("compiled", sa.Text, nullable=True,
              doc="the body after layout (MJML) and CSS inlining; still a Jinja2 source"),
    sa.Column("locales", JSON, nullable=True,
              doc="locale -> {subject, preheader, body, text, compiled}"),
    sa.Column("purpose", sa.String(64), nullable=False, default="marketing",
              server_default="marketing", doc="consent purpose; transactional skips caps"),
    sa.Column("sender", sa.String(64), nullable=True, doc="sender identity key"),
)

template_snippets = sa.Table(
    "template_snippets",
    metadata,
    _id(),
    sa.Column("key", sa.String(128), nullable=False, unique=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

sender_identities = sa.Table(
    "sender_identities",
    metadata,
    _id(),
    sa.Column("key", sa.String(64), nullable=False, unique=True),
    sa.Column("from_address", sa.String(320), nullable=False),
    sa.Column("reply_to", sa.String(320), nullable=True),
    sa.Column("list_id", sa.String(256), nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

test_addresses = sa.Table(
    "test_addresses",
    metadata,
    _id(),
    sa.Column("address", sa.String(320), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(128), nullable=True, doc="pending verification"),
    sa.Column("verified_at", Ms, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
)

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    _id(),
    sa.Column("key", sa.String(64), nullable=False, unique=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=False, doc="Standard Webhooks signing secret"),
    sa.Column("headers", JSON, nullable=False, default=dict),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

topics = sa.Table(
    "topics",
    metadata,
    _id(),
    sa.Column("key", sa.String(64), nullable=False, unique=True, doc="a consent purpose"),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("channel", sa.String(32), nullable=False, default="email"),
    sa.Column("created_at", Ms, nullable=False),
)

send_policies = sa.Table(
    "send_policies",
    metadata,
    sa.Column("scope", sa.String(160), primary_key=True,
              doc="'workspace' or 'journey:<key>'"),
    sa.Column("config", JSON, nullable=False, doc="frequency caps and quiet hours"),
    sa.Column("updated_at", Ms, nullable=False),
)

soft_bounces = sa.Table(
    "soft_bounces",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    _id(),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("journey_id", Id, nullable=True),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False, default="default"),
    sa.Column("status", sa.String(16), nullable=False, doc="open, done"),
    sa.Column("details", JSON, nullable=False, default=dict),
    sa.Column("due_at", Ms, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("done_at", Ms, nullable=True),
    sa.Index("ix_tasks_queue_status", "queue", "status"),
)

# --- workers: partition leases and event cursors ---------------------------------------------

engine_leases = sa.Table(
    "engine_leases",
    metadata,
    sa.Column("part", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(128), nullable=True),
    sa.Column("token", sa.BigInteger, nullable=False, default=0,
              doc="fencing token: raised on every takeover, checked at every commit"),
    sa.Column("expires_at", Ms, nullable=False, default=0),
)

engine_cursors = sa.Table(
    "engine_cursors",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True,
              doc="events:<part> (event log read up to), scan:... (date and schedule windows), "
                  "worker:<owner> (heartbeat: position is its expiry)"),
    sa.Column("position", sa.BigInteger, nullable=False, doc="last event id processed"),
    sa.Column("updated_at", Ms, nullable=False),
)

# --- segments (issue 6; migration 0004) ------------------------------------------------------

segments = sa.Table(
    "segments",
    metadata,
    _id(),
    sa.Column("key", sa.String(128), nullable=False, unique=True, doc="slug used in conditions"),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("kind", sa.String(16), nullable=False, doc="dynamic or static"),
    sa.Column("definition", JSON, nullable=True, doc="the condition (dynamic segments)"),
    sa.Column("depends_on", JSON, nullable=False, default=list,
              doc="keys of the segments its condition references"),
    sa.Column("status", sa.String(16), nullable=False, default="active",
              doc="active or archived"),
    sa.Column("member_count", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("recomputed_at", Ms, nullable=True),
)

segment_members = sa.Table(
    "segment_members",
    metadata,
    sa.Column("segment_id", Id, sa.ForeignKey("segments.id"), primary_key=True),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("since", Ms, nullable=False),
    sa.Column("source", sa.String(16), nullable=False, doc="rule, upload or api"),
    sa.Index("ix_segment_members_contact_id", "contact_id"),
)

segment_history = sa.Table(
    "segment_history",
    metadata,
    _id(),
    sa.Column("segment_id", Id, sa.ForeignKey("segments.id"), nullable=False),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("change", sa.String(8), nullable=False, doc="entered or exited"),
    sa.Column("cause", sa.String(16), nullable=False,
              doc="event, change, recompute, upload, api, edit"),
    sa.Column("at", Ms, nullable=False),
    sa.Index("ix_segment_history_segment_id_at", "segment_id", "at"),
    sa.Index("ix_segment_history_contact_id_at", "contact_id", "at"),
)

segment_recomputes = sa.Table(
    "segment_recomputes",
    metadata,
    _id(),
    sa.Column("segment_id", Id, sa.ForeignKey("segments.id"), nullable=False),
    sa.Column("started_at", Ms, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("members", sa.BigInteger, nullable=False),
    sa.Column("entered", sa.BigInteger, nullable=False, doc="drift: members real time missed"),
    sa.Column("exited", sa.BigInteger, nullable=False, doc="drift: members real time kept"),
    sa.Index("ix_segment_recomputes_segment_id_started_at", "segment_id", "started_at"),
)

contact_changes = sa.Table(
    "contact_changes",
    metadata,
    sa.Column("consumer", sa.String(32), primary_key=True,
              doc="who re-evaluates the contact: segments, scores, ..."),
    sa.Column("contact_id", Id, primary_key=True),
    sa.Column("part", sa.Integer, nullable=False, doc="the contact's engine partition"),
    sa.Column("at", Ms, nullable=False),
    sa.Index("ix_contact_changes_consumer_part", "consumer", "part"),
)

# --- lead scoring (issue 6; migration 0005) --------------------------------------------------

score_models = sa.Table(
    "score_models",
    metadata,
    _id(),
    sa.Column("key", sa.String(128), nullable=False, unique=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, doc="rules, predictive or matrix"),
    sa.Column("definition", JSON, nullable=False, default=dict,
              doc="rules, caps, half-life, grade bands / training spec / matrix axes"),
    sa.Column("status", sa.String(16), nullable=False, default="active"),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("scored_at", Ms, nullable=True),
)

contact_scores = sa.Table(
    "contact_scores",
    metadata,
    sa.Column("model_id", Id, sa.ForeignKey("score_models.id"), primary_key=True),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("score", sa.Float, nullable=False, doc="the value conditions compare"),
    sa.Column("grade", sa.String(16), nullable=True),
    sa.Column("explanation", JSON, nullable=False, default=dict),
    sa.Column("as_of", Ms, nullable=False, doc="when the score was last computed or decayed"),
    sa.Index("ix_contact_scores_model_id_score", "model_id", "score"),
    sa.Index("ix_contact_scores_contact_id", "contact_id"),
)

score_ledger = sa.Table(
    "score_ledger",
    metadata,
    sa.Column("model_id", Id, sa.ForeignKey("score_models.id"), primary_key=True),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("rule", sa.String(128), primary_key=True),
    sa.Column("period", sa.BigInteger, primary_key=True, autoincrement=False,
              doc="the rule's cap period the event falls in (0 for a rule without a cap)"),
    sa.Column("event_id", Id, primary_key=True, autoincrement=False),
    sa.Column("points", sa.Float, nullable=False, doc="per occurrence, before caps and decay"),
    sa.Column("at", Ms, nullable=False, doc="the event's timestamp"),
    # Stored in key order (no rowid on SQLite): a full scoring round reads a model's events
    # grouped by contact, rule and period without sorting them.
    sqlite_with_rowid=False,
)

# --- predictive models (issue 6; migration 0006) ---------------------------------------------

model_versions = sa.Table(
    "model_versions",
    metadata,
    _id(),
    sa.Column("model_id", Id, sa.ForeignKey("score_models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False,
              doc="candidate, live, retired or refused"),
    sa.Column("spec", JSON, nullable=False, default=dict, doc="outcome, horizon, features"),
    sa.Column("metrics", JSON, nullable=False, default=dict,
              doc="holdout AUC, calibration, lift by decile"),
    sa.Column("artifact", sa.LargeBinary, nullable=True, doc="the fitted model"),
    sa.Column("rows", sa.BigInteger, nullable=False, default=0),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("trained_at", Ms, nullable=False),
    sa.Column("promoted_at", Ms, nullable=True),
    sa.UniqueConstraint("model_id", "version"),
)

# --- lifecycle stages and routing (issue 6; migration 0007) ----------------------------------

lifecycle_stages = sa.Table(
    "lifecycle_stages",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("rules", JSON, nullable=False, default=list, doc="transition rules into it"),
    sa.Column("routes", sa.Boolean, nullable=False, default=False,
              doc="entering it routes the contact to a sales rep"),
    sa.Column("updated_at", Ms, nullable=False),
)

contact_stages = sa.Table(
    "contact_stages",
    metadata,
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("stage", sa.String(64), nullable=False),
    sa.Column("since", Ms, nullable=False),
    sa.Index("ix_contact_stages_stage", "stage"),
)

stage_history = sa.Table(
    "stage_history",
    metadata,
    _id(),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("from_stage", sa.String(64), nullable=True),
    sa.Column("to_stage", sa.String(64), nullable=False),
    sa.Column("cause", sa.String(32), nullable=False, doc="rule, score, api, import, ..."),
    sa.Column("detail", JSON, nullable=False, default=dict),
    sa.Column("at", Ms, nullable=False),
    sa.Index("ix_stage_history_contact_id_at", "contact_id", "at"),
)

sales_reps = sa.Table(
    "sales_reps",
    metadata,
    _id(),
    sa.Column("key", sa.String(128), nullable=False, unique=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("weight", sa.Integer, nullable=False, default=1),
    sa.Column("capacity", sa.Integer, nullable=True, doc="open assignments at most"),
    sa.Column("attributes", JSON, nullable=False, default=dict, doc="territory, team, ..."),
    sa.Column("status", sa.String(16), nullable=False, default="active",
              doc="active, away or inactive"),
    sa.Column("away_until", Ms, nullable=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

routing_rules = sa.Table(
    "routing_rules",
    metadata,
    _id(),
    sa.Column("key", sa.String(128), nullable=False, unique=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("definition", JSON, nullable=False, default=dict,
              doc="condition, strategy, reps, SLA, escalation"),
    sa.Column("cursor", sa.BigInteger, nullable=False, default=0, doc="round-robin position"),
    sa.Column("updated_at", Ms, nullable=False),
)

ACTIVE_ASSIGNMENT_SQL = "status IN ('open', 'touched', 'escalated', 'unassigned')"
"""Assignments that still hold their contact (one per contact at most)."""

lead_assignments = sa.Table(
    "lead_assignments",
    metadata,
    _id(),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id"), nullable=False),
    sa.Column("rep_id", Id, sa.ForeignKey("sales_reps.id"), nullable=True),
    sa.Column("rule", sa.String(128), nullable=True),
    sa.Column("status", sa.String(16), nullable=False,
              doc="open, touched, escalated, reassigned, unassigned or closed"),
    sa.Column("reason", JSON, nullable=False, default=dict, doc="why this rep"),
    sa.Column("assigned_at", Ms, nullable=False),
    sa.Column("sla_due_at", Ms, nullable=True),
    sa.Column("touched_at", Ms, nullable=True),
    sa.Column("closed_at", Ms, nullable=True),
    sa.Column("previous_id", Id, nullable=True, doc="the assignment this one reassigned"),
    sa.Index("ix_lead_assignments_rep_id_status", "rep_id", "status"),
    sa.Index("ix_lead_assignments_status_sla_due_at", "status", "sla_due_at"),
    sa.Index("ix_lead_assignments_contact_id", "contact_id"),
    # At most one active assignment per contact, enforced by the database.
    sa.Index("ux_lead_assignments_active", "contact_id", unique=True,
             sqlite_where=sa.text(ACTIVE_ASSIGNMENT_SQL),
             postgresql_where=sa.text(ACTIVE_ASSIGNMENT_SQL)),
)

# --- governance: the audit trail (issue 7; migration 0008) ----------------------------------

audit_log = sa.Table(
    "audit_log",
    metadata,
    _id(),
    sa.Column("at", Ms, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False, doc="user:<name>, key:<prefix>, system"),
    sa.Column("action", sa.String(64), nullable=False, doc="e.g. journey.publish"),
    sa.Column("object_type", sa.String(64), nullable=False),
    sa.Column("object_key", sa.String(256), nullable=False),
    sa.Column("details", JSON, nullable=False, default=dict),
    sa.Column("details_hash", sa.String(64), nullable=False,
              doc="sha256 of the details as first written (kept when they are redacted)"),
    sa.Column("prev_hash", sa.String(64), nullable=False, unique=True,
              doc="the previous entry's hash: unique, so the chain cannot fork"),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Index("ix_audit_log_object_type_object_key", "object_type", "object_key"),
    sa.Index("ix_audit_log_at", "at"),
)

users = sa.Table(
    "users",
    metadata,
    _id(),
    sa.Column("username", sa.String(128), nullable=False, unique=True),
    sa.Column("email", sa.String(320), nullable=True, unique=True),
    sa.Column("name", sa.String(256), nullable=False, default=""),
    sa.Column("password_hash", sa.String(256), nullable=False, doc="argon2id"),
    sa.Column("roles", JSON, nullable=False, default=list),
    sa.Column("status", sa.String(16), nullable=False, default="active",
              doc="active or disabled"),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("last_login_at", Ms, nullable=True),
)

roles = sa.Table(
    "roles",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("permissions", JSON, nullable=False, default=list),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("updated_at", Ms, nullable=False),
)

user_sessions = sa.Table(
    "user_sessions",
    metadata,
    _id(),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("expires_at", Ms, nullable=False),
    sa.Column("last_seen_at", Ms, nullable=False),
    sa.Column("revoked_at", Ms, nullable=True),
    sa.Index("ix_user_sessions_user_id", "user_id"),
)

password_resets = sa.Table(
    "password_resets",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("expires_at", Ms, nullable=False),
    sa.Column("used_at", Ms, nullable=True),
)

workspace_flags = sa.Table(
    "workspace_flags",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True, doc="e.g. sends_stopped"),
    sa.Column("value", JSON, nullable=False, default=dict),
    sa.Column("updated_at", Ms, nullable=False),
    sa.Column("updated_by", sa.String(256), nullable=False),
)
