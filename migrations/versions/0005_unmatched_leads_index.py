"""unmatched leads index: the enrich_new job finds leads intake stored but nobody matched yet

Revision ID: 0005_unmatched_leads_index
Revises: 0004_report_indexes
Create Date: 2026-11-25 13:00:00

Hand-written. Intake no longer enriches inside the request; the enrich_new job polls every
few seconds for open leads with matched_at IS NULL. A partial index keeps that poll to the
handful of fresh leads instead of a scan of every lead (same SQL on SQLite and PostgreSQL).
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_unmatched_leads_index'
down_revision = '0004_report_indexes'
branch_labels = None
depends_on = None

WHERE = "matched_at IS NULL"


def upgrade():
    op.create_index(
        'ix_leads_unmatched', 'leads', ['id'],
        postgresql_where=sa.text(WHERE), sqlite_where=sa.text(WHERE),
    )


def downgrade():
    op.drop_index('ix_leads_unmatched', table_name='leads')
