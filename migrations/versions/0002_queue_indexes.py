"""queue indexes: partial indexes for the queue views, sweeps and name search

Revision ID: 0002_queue_indexes
Revises: 0001_initial
Create Date: 2026-11-24 22:40:00

Hand-written (autogenerate cannot see partial or expression indexes). The WHERE
clauses are written exactly as crm/services/leads_query.py renders them, so both
PostgreSQL and SQLite can prove that a partial index applies to a query.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_queue_indexes'
down_revision = '0001_initial'
branch_labels = None
depends_on = None

OPEN = "status IN ('new', 'attempting', 'contacted', 'booked')"


def _partial(name, table, columns, where):
    op.create_index(name, table, columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))


def upgrade():
    # Unassigned view and "get next lead": most urgent, then oldest.
    _partial('ix_leads_unassigned_open', 'leads', [sa.text('priority DESC'), 'created_at', 'id'],
             f"assignee_id IS NULL AND {OPEN}")
    # Mine view (next follow-up first, then oldest), "due" mine-first half and the nav counts.
    # ASC puts NULLs last on PostgreSQL, exactly the view's "next_follow_up_at NULLS LAST".
    _partial('ix_leads_assignee_open', 'leads', ['assignee_id', 'next_follow_up_at', 'created_at', 'id'],
             f"assignee_id IS NOT NULL AND {OPEN}")
    # Due view: open leads by their next follow-up; assignee_id lets the "everyone else's" half
    # be filtered inside the index.
    _partial('ix_leads_open_next_follow_up', 'leads', ['next_follow_up_at', 'assignee_id'],
             f"next_follow_up_at IS NOT NULL AND {OPEN}")
    # "All" view filtered by status, newest first.
    op.create_index('ix_leads_status_created_at', 'leads', ['status', 'created_at'])
    # SLA sweep: open leads without a first contact, not flagged yet.
    _partial('ix_leads_sla_pending', 'leads', ['sla_due_at'],
             "first_contact_at IS NULL AND sla_breached_at IS NULL AND status IN ('new', 'attempting')")
    # Stale-assignment sweep.
    _partial('ix_leads_assigned_workable', 'leads', ['assigned_at'],
             "assignee_id IS NOT NULL AND status IN ('new', 'attempting', 'contacted')")
    # Unreachable sweep.
    _partial('ix_leads_attempting_first_contact', 'leads', ['first_contact_at'], "status = 'attempting'")
    # Follow-up reminders.
    _partial('ix_follow_ups_to_remind', 'follow_ups', ['due_at'], "done_at IS NULL AND reminded_at IS NULL")
    # Appointment reminders.
    _partial('ix_appointments_to_remind', 'appointments', ['starts_at'],
             "reminder_sent_at IS NULL AND status IN ('booked', 'confirmed')")
    # Name search: ranges on lower(name) on both databases.
    # (last, first): a "First Last" search filters on both inside the index, so only the matching
    # patients are read from the table; last-name prefixes alone use it too.
    op.create_index('ix_patients_lower_last_name', 'patients', [sa.text('lower(last_name)'), sa.text('lower(first_name)')])
    op.create_index('ix_patients_lower_first_name', 'patients', [sa.text('lower(first_name)')])
    # Unread notifications badge.
    _partial('ix_notifications_unread', 'notifications', ['user_id'], "read_at IS NULL")


def downgrade():
    for name, table in [
        ('ix_notifications_unread', 'notifications'),
        ('ix_patients_lower_first_name', 'patients'),
        ('ix_patients_lower_last_name', 'patients'),
        ('ix_appointments_to_remind', 'appointments'),
        ('ix_follow_ups_to_remind', 'follow_ups'),
        ('ix_leads_attempting_first_contact', 'leads'),
        ('ix_leads_assigned_workable', 'leads'),
        ('ix_leads_sla_pending', 'leads'),
        ('ix_leads_status_created_at', 'leads'),
        ('ix_leads_open_next_follow_up', 'leads'),
        ('ix_leads_assignee_open', 'leads'),
        ('ix_leads_unassigned_open', 'leads'),
    ]:
        op.drop_index(name, table_name=table)
