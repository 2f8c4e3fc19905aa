"""physician geocode retry: attempts, next try and last error, as patients have

Revision ID: 0006_physician_geocode_retry
Revises: 0005_unmatched_leads_index
Create Date: 2026-11-25 13:00:00

Hand-written. A physician saved or imported while the geocoder was down stays pending and
the geocode_retry job tries again with backoff, giving up (and telling the admins) after the
last attempt. Plain ADD COLUMN on both databases: no table rebuild on SQLite, so the R*Tree
triggers on physicians (0003) stay in place.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_physician_geocode_retry'
down_revision = '0005_unmatched_leads_index'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('physicians', sa.Column('geocode_attempts', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('physicians', sa.Column('geocode_next_at', sa.DateTime(), nullable=True))
    op.add_column('physicians', sa.Column('geocode_error', sa.String(length=300), nullable=True))
    op.create_index('ix_physicians_geocode_next_at', 'physicians', ['geocode_next_at'])


def downgrade():
    op.drop_index('ix_physicians_geocode_next_at', table_name='physicians')
    # SQLite 3.35+ drops columns in place; the R*Tree triggers do not read these columns.
    op.drop_column('physicians', 'geocode_error')
    op.drop_column('physicians', 'geocode_next_at')
    op.drop_column('physicians', 'geocode_attempts')
