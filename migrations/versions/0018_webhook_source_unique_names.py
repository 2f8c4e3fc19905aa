"""webhook source unique names: no two sources share a name, ignoring case

Revision ID: 0018_webhook_source_unique_names
Revises: 0017_outbox_retry_schedule
Create Date: 2026-12-03 13:30:00

Hand-written. ``crm/services/sources.py`` refused a second source with a name in use, but only by
looking first: two admins (or a provisioning script run twice at once) adding the same name at the
same instant could both succeed. A unique index on ``lower(name)`` makes the database refuse the second.

Sources made before the check existed may already share a name ("Clinic site" twice, slugs
``clinic-site`` and ``clinic-site-2``): the oldest keeps its name and each later one gets its slug
added, "Clinic site (clinic-site-2)", so nothing breaks and the admin can tell them apart. On SQLite
``lower()`` is the app's Unicode-aware one (migration 0009), as in the service's own check.
"""
from alembic import op
import sqlalchemy as sa


revision = '0018_webhook_source_unique_names'
down_revision = '0017_outbox_retry_schedule'
branch_labels = None
depends_on = None

INDEX = 'ix_webhook_sources_lower_name'
NAME_LENGTH = 120


def _rename_duplicates(conn):
    def fold(name):
        return conn.execute(sa.text("SELECT lower(:name)"), {"name": name}).scalar()

    rows = conn.execute(sa.text("SELECT id, name, slug, lower(name) FROM webhook_sources ORDER BY id")).all()
    taken = set()
    for source_id, name, slug, folded in rows:
        if folded in taken:
            base = name
            for suffix in (f" ({slug})", f" ({slug}, #{source_id})"):
                name = base[:NAME_LENGTH - len(suffix)] + suffix
                if fold(name) not in taken:
                    break
            conn.execute(sa.text("UPDATE webhook_sources SET name = :name WHERE id = :id"),
                         {"name": name, "id": source_id})
            folded = fold(name)
        taken.add(folded)


def upgrade():
    _rename_duplicates(op.get_bind())
    op.create_index(INDEX, 'webhook_sources', [sa.text('lower(name)')], unique=True)


def downgrade():
    # The renamed duplicates keep their new names: they were two sources all along.
    op.drop_index(INDEX, table_name='webhook_sources')
