"""appointment outcome asked: a visit that passed without an outcome is asked about once

Revision ID: 0020_appointment_outcome_asked
Revises: 0019_patient_phone_last_digits
Create Date: 2026-12-03 14:40:00

Hand-written. The ``visit_outcomes`` job gives a booked lead whose visit passed without an outcome a
call follow-up asking for it (crm/services/booking.py ``plan_outcome_follow_ups``). It claims the
appointment by setting ``outcome_asked_at`` (so it asks once, whatever becomes of that follow-up) and
keeps the follow-up's id in ``outcome_follow_up_id`` (recording the outcome closes it). The id has no
foreign-key constraint: on SQLite adding one means copying the table, which would drop the report
triggers on appointments (migration 0007). ``ix_appointments_outcome_due`` holds only the live
appointments not asked about yet, so the job's look-up reads those few, not the whole history.
Existing rows: NULL; the job looks back 30 days at most, so older unrecorded visits are not asked about.
"""
from alembic import op
import sqlalchemy as sa


revision = '0020_appointment_outcome_asked'
down_revision = '0019_patient_phone_last_digits'
branch_labels = None
depends_on = None

WAITING = "status IN ('booked', 'confirmed') AND outcome_asked_at IS NULL"


def upgrade():
    op.add_column('appointments', sa.Column('outcome_asked_at', sa.DateTime(), nullable=True))
    op.add_column('appointments', sa.Column('outcome_follow_up_id', sa.Integer(), nullable=True))
    op.create_index('ix_appointments_outcome_due', 'appointments', ['starts_at'],
                    postgresql_where=sa.text(WAITING), sqlite_where=sa.text(WAITING))


def downgrade():
    op.drop_index('ix_appointments_outcome_due', table_name='appointments')
    op.drop_column('appointments', 'outcome_follow_up_id')
    op.drop_column('appointments', 'outcome_asked_at')
