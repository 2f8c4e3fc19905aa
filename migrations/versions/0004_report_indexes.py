"""report indexes: covering indexes for /reports aggregates

Revision ID: 0004_report_indexes
Revises: 0003_spatial_index
Create Date: 2026-11-25 10:45:00

Hand-written. The reports group the leads created in a date range by status, assignee,
source, condition and first contact; with every column they read in one index, both
PostgreSQL and SQLite answer from the index alone (no table pages). Plain composite
indexes, so the same migration works on both databases.
"""
from alembic import op


revision = '0004_report_indexes'
down_revision = '0003_spatial_index'
branch_labels = None
depends_on = None


def upgrade():
    # Funnel, speed to lead, specialists, sources, conditions: range on created_at, the rest carried.
    op.create_index('ix_leads_report', 'leads', [
        'created_at', 'status', 'assignee_id', 'first_contact_at', 'lost_reason', 'condition_id',
        'source_kind', 'webhook_source_id', 'patient_id',
    ])
    # Leads by state: patient id -> state without reading patient rows.
    op.create_index('ix_patients_id_state', 'patients', ['id', 'state'])
    # "Has an appointment" for the leads of the range: appointments created since the range began.
    op.create_index('ix_appointments_created_at_lead', 'appointments', ['created_at', 'lead_id'])
    # Utilisation: appointments starting in the range, by physician.
    op.create_index('ix_appointments_starts_at_report', 'appointments', ['starts_at', 'status', 'physician_id'])


def downgrade():
    op.drop_index('ix_appointments_starts_at_report', table_name='appointments')
    op.drop_index('ix_appointments_created_at_lead', table_name='appointments')
    op.drop_index('ix_patients_id_state', table_name='patients')
    op.drop_index('ix_leads_report', table_name='leads')
