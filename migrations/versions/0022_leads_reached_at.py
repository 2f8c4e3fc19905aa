"""leads reached at: when the patient was first reached, kept whatever the lead's status later

Revision ID: 0022_leads_reached_at
Revises: 0021_physicians_state_only
Create Date: 2026-12-03 16:00:00

Hand-written (autogenerate cannot see triggers). The /reports funnel read a lead's stage from its
current status, so a stage already reached disappeared: a patient reached and then lost as not
eligible no longer counted as contacted, and a lead booked, cancelled, lost and reopened no longer
counted as booked. ``leads.reached_at`` is set once, by the first move to contacted, booked or
completed (crm/services/workflow.py ``change_status``), and the funnel counts any lead with an
appointment as booked (crm/services/reports.py ``_stage_expr``).

* ``leads.reached_at``: a plain ADD COLUMN, filled from the timeline (the first ``status_changed``
  event to contacted, booked or completed), else, for a lead in one of those statuses now or with an
  appointment, its first contact (or its creation).
* The leads update trigger of migration 0016 is recreated with ``reached_at`` among the columns it
  watches, and ``ix_leads_report`` gains it at its end (the report scans stay index-only).
* ``report_rollup_state`` is emptied: the next refresh rebuilds every day.
"""
from alembic import op
import sqlalchemy as sa


revision = '0022_leads_reached_at'
down_revision = '0021_physicians_state_only'
branch_labels = None
depends_on = None

# As 0016 left them.
BEFORE = ('status', 'lost_reason', 'assignee_id', 'first_contact_at', 'condition_id', 'source_kind',
          'webhook_source_id', 'patient_id', 'created_at', 'sla_breached_at')
AFTER = BEFORE + ('reached_at',)
LEADS_REPORT = ['created_at', 'status', 'assignee_id', 'first_contact_at', 'lost_reason', 'condition_id',
                'source_kind', 'webhook_source_id', 'patient_id', 'is_test', 'sla_breached_at']

# Constants only below (no input reaches these statements).
# ruff: noqa: S608


def _changed(columns, distinct):
    return ' OR '.join(f'old.{c} {distinct} new.{c}' for c in columns)


def _leads_update_trigger(columns):
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute("DROP TRIGGER report_changes_leads_update ON leads")
        op.execute(f"CREATE TRIGGER report_changes_leads_update AFTER UPDATE OF {', '.join(columns)} ON leads "
                   f"FOR EACH ROW WHEN ({_changed(columns, 'IS DISTINCT FROM')}) "
                   "EXECUTE FUNCTION report_changes_lead()")
    elif dialect == 'sqlite':
        op.execute("DROP TRIGGER report_changes_leads_update")
        op.execute(f"CREATE TRIGGER report_changes_leads_update AFTER UPDATE OF {', '.join(columns)} ON leads "
                   f"WHEN {_changed(columns, 'IS NOT')} BEGIN "
                   "INSERT INTO report_changes (kind, at) VALUES ('lead', old.created_at); "
                   "INSERT INTO report_changes (kind, at) SELECT 'lead', new.created_at "
                   "WHERE new.created_at IS NOT old.created_at; END")


def upgrade():
    op.add_column('leads', sa.Column('reached_at', sa.DateTime(), nullable=True))
    to = "data->>'to'" if op.get_bind().dialect.name == 'postgresql' else "json_extract(data, '$.to')"
    op.execute(
        "UPDATE leads SET reached_at = (SELECT min(e.created_at) FROM lead_events e WHERE e.lead_id = leads.id "
        f"AND e.kind = 'status_changed' AND {to} IN ('contacted', 'booked', 'completed'))"
    )
    op.execute(
        "UPDATE leads SET reached_at = coalesce(first_contact_at, created_at) WHERE reached_at IS NULL AND "
        "(status IN ('contacted', 'booked', 'completed') "
        "OR EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = leads.id))"
    )
    _leads_update_trigger(AFTER)
    op.drop_index('ix_leads_report', table_name='leads')
    op.create_index('ix_leads_report', 'leads', LEADS_REPORT + ['reached_at'])
    op.execute("DELETE FROM report_rollup_state")


def downgrade():
    _leads_update_trigger(BEFORE)
    op.drop_index('ix_leads_report', table_name='leads')
    op.create_index('ix_leads_report', 'leads', LEADS_REPORT)
    op.drop_column('leads', 'reached_at')
    op.execute("DELETE FROM report_rollup_state")
