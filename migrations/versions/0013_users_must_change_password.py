"""users must change password: a password an admin set is replaced by the user at next sign-in

Revision ID: 0013_users_must_change_password
Revises: 0012_login_daily_failures
Create Date: 2026-12-02 09:45:00

Hand-written. An admin creates an account or resets its password and tells the user the password;
until the user chooses their own, the admin knows it. Set by those two actions, cleared by the
user's own change (crm/security.py sends a flagged user to the change page first).
"""
from alembic import op
import sqlalchemy as sa


revision = '0013_users_must_change_password'
down_revision = '0012_login_daily_failures'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users') as batch_op:
        batch_op.add_column(sa.Column('must_change_password', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table('users') as batch_op:
        batch_op.drop_column('must_change_password')
