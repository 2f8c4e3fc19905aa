"""condition former slugs: a renamed condition page keeps answering at its old address

Revision ID: 0010_condition_former_slugs
Revises: 0009_sqlite_unicode_lower
Create Date: 2026-12-01 08:10:00

Hand-written. When an admin changes a condition's slug, the old one is kept here: links to
/conditions/<old> (the directory's buttons, search engines, bookmarks) redirect to the new page,
and a webhook payload or a physician CSV naming the old slug still maps to the condition.
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_condition_former_slugs'
down_revision = '0009_sqlite_unicode_lower'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('conditions', sa.Column('former_slugs', sa.JSON(), nullable=False, server_default='[]'))


def downgrade():
    op.drop_column('conditions', 'former_slugs')
