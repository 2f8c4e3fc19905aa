"""login throttles: failed sign-ins counted per email, whether or not an account has it

Revision ID: 0011_login_throttles
Revises: 0010_condition_former_slugs
Create Date: 2026-12-01 23:30:00

Hand-written. A real account's failures used to be counted on its user row (never forgotten) and an
unknown email's in the rate-limit store (forgotten after the window, and per worker with the memory
store): five failures spread over an hour locked a real account and not an unknown email, which
told which emails have accounts (SPEC 12). Both are now counted here, the same way.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011_login_throttles'
down_revision = '0010_condition_former_slugs'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'login_throttles',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('window_started_at', sa.DateTime(), nullable=True),
        sa.Column('locked_until', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_login_throttles')),
    )


def downgrade():
    op.drop_table('login_throttles')
