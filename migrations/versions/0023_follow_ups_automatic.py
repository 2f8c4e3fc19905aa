"""follow ups automatic: a follow-up the system planned as a lead's default next step

Revision ID: 0023_follow_ups_automatic
Revises: 0022_leads_reached_at
Create Date: 2026-12-03 16:10:00

A worked lead left with nothing planned gets a default next step (crm/services/followups.py
``ensure_next_step``, docs/queue.md "The next step"). It is flagged, so the first follow-up a specialist
plans by hand, or the next call logged, replaces it instead of leaving two. A plain ADD COLUMN with a
server default on both databases; existing rows were all planned by hand.
"""
from alembic import op
import sqlalchemy as sa


revision = '0023_follow_ups_automatic'
down_revision = '0022_leads_reached_at'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('follow_ups', sa.Column('automatic', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    op.drop_column('follow_ups', 'automatic')
