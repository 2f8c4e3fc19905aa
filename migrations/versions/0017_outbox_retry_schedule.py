"""outbox retry schedule: when a queued email may be tried again, or a claimed one's lease ends

Revision ID: 0017_outbox_retry_schedule
Revises: 0016_report_speed_to_lead_target
Create Date: 2026-12-03 10:20:00

Hand-written. A failed send used to be tried again on the outbox job's next run, 30 s later, so
two minutes of SMTP trouble failed every queued email for good; and a runner's claim left the row
``queued``, so a second runner could send it too. ``next_attempt_at`` is the backoff of a queued
row and the lease of a ``sending`` one (crm/services/mailer.py). Existing rows: NULL, due now.

Retries now last most of a day, so an appointment email also names its visit (``appointment_id``):
a confirmation still waiting when the visit is cancelled, moved again or past is withdrawn, not sent
late. Existing rows: NULL (not checked).
"""
import warnings

from alembic import op
import sqlalchemy as sa


revision = '0017_outbox_retry_schedule'
down_revision = '0016_report_speed_to_lead_target'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('outbox_emails', sa.Column('next_attempt_at', sa.DateTime(), nullable=True))
    # With its named foreign key: on SQLite the table is copied (it has no triggers to lose). Copying
    # reflects the tables it refers to, and SQLAlchemy warns that it skips the expression indexes
    # there (untouched): not worth a line on every first `make run`.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection of expression-based index")
        with op.batch_alter_table('outbox_emails') as batch:
            batch.add_column(sa.Column('appointment_id', sa.Integer(), nullable=True))
            batch.create_foreign_key('fk_outbox_emails_appointment_id_appointments', 'appointments',
                                     ['appointment_id'], ['id'])


def downgrade():
    # A row claimed when the schema goes back is queued again: the older code knows no "sending".
    op.execute("UPDATE outbox_emails SET status = 'queued' WHERE status = 'sending'")
    op.execute("UPDATE outbox_emails SET status = 'failed' WHERE status = 'withdrawn'")
    with op.batch_alter_table('outbox_emails') as batch:
        batch.drop_constraint('fk_outbox_emails_appointment_id_appointments', type_='foreignkey')
        batch.drop_column('appointment_id')
    op.drop_column('outbox_emails', 'next_attempt_at')
