"""appointment ics sequence: the iCalendar SEQUENCE last sent for an appointment

Revision ID: 0015_appointment_ics_sequence
Revises: 0014_test_delivery_leads
Create Date: 2026-12-03 07:20:00

Hand-written. A rescheduled appointment is sent again under the same UID with a higher SEQUENCE
(RFC 5546), so the patient's calendar moves the event instead of adding a second one; its
cancellation goes one higher again. Existing appointments were sent with SEQUENCE 0.
"""
from alembic import op
import sqlalchemy as sa


revision = '0015_appointment_ics_sequence'
down_revision = '0014_test_delivery_leads'
branch_labels = None
depends_on = None


def upgrade():
    # A plain ADD COLUMN on both databases (a batch "move and copy" would drop the appointments'
    # report triggers on SQLite).
    op.add_column('appointments', sa.Column('ics_sequence', sa.Integer(), nullable=False, server_default='0'))


def downgrade():
    op.drop_column('appointments', 'ics_sequence')
