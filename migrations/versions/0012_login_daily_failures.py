"""login daily failures: a second, 24-hour count of failed sign-ins per email

Revision ID: 0012_login_daily_failures
Revises: 0011_login_throttles
Create Date: 2026-12-02 09:30:00

Hand-written. Five failures within 15 minutes lock an email for 15 minutes, but four every
quarter of an hour (about 380 guesses a day) never did. A second count over 24 hours locks the
email for 24 hours once it reaches LOGIN_DAILY_MAX_FAILURES (README, "Signing in").
"""
from alembic import op
import sqlalchemy as sa


revision = '0012_login_daily_failures'
down_revision = '0011_login_throttles'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('login_throttles') as batch_op:
        batch_op.add_column(sa.Column('day_failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('day_started_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('login_throttles') as batch_op:
        batch_op.drop_column('day_started_at')
        batch_op.drop_column('day_failures')
