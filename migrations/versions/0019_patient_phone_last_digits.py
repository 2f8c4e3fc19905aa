"""patient phone last digits: the queue finds a patient by the last digits of their phone number

Revision ID: 0019_patient_phone_last_digits
Revises: 0018_webhook_source_unique_names
Create Date: 2026-12-03 14:00:00

Hand-written. A specialist searching "0142" or "555-0142" (a voicemail, a patient who gives only the
end of their number) was told to type the full number: a match on the end of ``patients.phone`` could
not use ``ix_patients_phone``. This indexes the last four characters of the stored E.164 number; the
queue looks those up and checks longer endings on the few rows found (crm/services/leads_query.py
``PHONE_LAST4``, whose expression must stay the same as this one's for either database to use it).
"""
from alembic import op
import sqlalchemy as sa


revision = '0019_patient_phone_last_digits'
down_revision = '0018_webhook_source_unique_names'
branch_labels = None
depends_on = None

INDEX = 'ix_patients_phone_last4'


def upgrade():
    op.create_index(INDEX, 'patients', [sa.text('substr(phone, length(phone) - 3)')])


def downgrade():
    op.drop_index(INDEX, table_name='patients')
