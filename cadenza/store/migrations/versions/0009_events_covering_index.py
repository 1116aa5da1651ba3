"""events: both indexes extended to cover set queries (name, timestamp, contact_id) and
per-contact counts (contact_id, timestamp, name)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_name_timestamp_contact_id',
                              ['name', 'timestamp', 'contact_id'], unique=False)
        batch_op.drop_index('ix_events_name_timestamp')
        batch_op.create_index('ix_events_contact_id_timestamp_name',
                              ['contact_id', 'timestamp', 'name'], unique=False)
        batch_op.drop_index('ix_events_contact_id_timestamp')


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_name_timestamp', ['name', 'timestamp'], unique=False)
        batch_op.create_index('ix_events_contact_id_timestamp', ['contact_id', 'timestamp'],
                              unique=False)
        batch_op.drop_index('ix_events_contact_id_timestamp_name')
        batch_op.drop_index('ix_events_name_timestamp_contact_id')
