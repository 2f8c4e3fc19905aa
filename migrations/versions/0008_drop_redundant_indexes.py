"""drop redundant indexes: three indexes every new patient and lead paid for and no query needs

Revision ID: 0008_drop_redundant_indexes
Revises: 0007_report_rollups
Create Date: 2026-11-30 20:50:00

Hand-written. Each index is one more B-tree that every intake delivery writes (and, on SQLite
with two web workers, re-reads: a connection drops its page cache whenever another process has
committed). Measured with two processes delivering into one SQLite file, these three cost about
8 % of the CPU per delivery (docs/intake.md). None of them is needed:

- ix_leads_patient_id (patient_id): ix_leads_patient_condition starts with patient_id;
- ix_leads_created_at (created_at): ix_leads_report starts with created_at;
- ix_patients_last_name_first_name: searches use lower(last_name), lower(first_name)
  (ix_patients_lower_last_name) and nothing sorts or filters on the plain columns.
"""
from alembic import op


revision = '0008_drop_redundant_indexes'
down_revision = '0007_report_rollups'
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index('ix_leads_patient_id', table_name='leads')
    op.drop_index('ix_leads_created_at', table_name='leads')
    op.drop_index('ix_patients_last_name_first_name', table_name='patients')


def downgrade():
    op.create_index('ix_patients_last_name_first_name', 'patients', ['last_name', 'first_name'])
    op.create_index('ix_leads_created_at', 'leads', ['created_at'])
    op.create_index('ix_leads_patient_id', 'leads', ['patient_id'])
