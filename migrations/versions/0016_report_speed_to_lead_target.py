"""report speed to lead target: the rollups count which leads met the speed-to-lead target

Revision ID: 0016_report_speed_to_lead_target
Revises: 0015_appointment_ics_sequence
Create Date: 2026-12-03 10:00:00

Hand-written (autogenerate cannot see triggers). /reports showed speed to lead in clock time only,
nights and weekends included, while the target (SLA_MINUTES inside business hours) is what the
desk is held to: a lead that arrived on Saturday night and was called at 08:05 on Monday met it,
and read as "1 d 9 h". The funnel rollup now also groups by the target (``sla``: 0 not decided,
1 met, 2 missed, as crm.services.reports._sla_expr), and a lead's report day is marked for a
rebuild when the SLA sweep flags it (``sla_breached_at``).

* ``report_daily_leads.sla``: a plain ADD COLUMN with a server default.
* The leads update trigger is recreated with ``sla_breached_at`` among the columns it watches.
* ``ix_leads_report`` gains ``sla_breached_at`` at its end, so the report scans (live, and the
  rollups' per-day rebuilds) stay index-only with the new grouping.
* ``report_rollup_state`` is emptied: the next refresh rebuilds every day (rows written before
  this migration say 0 for every lead).
"""
from alembic import op
import sqlalchemy as sa


revision = '0016_report_speed_to_lead_target'
down_revision = '0015_appointment_ics_sequence'
branch_labels = None
depends_on = None

# As in 0007, plus sla_breached_at.
BEFORE = ('status', 'lost_reason', 'assignee_id', 'first_contact_at', 'condition_id', 'source_kind',
          'webhook_source_id', 'patient_id', 'created_at')
AFTER = BEFORE + ('sla_breached_at',)

LEADS_REPORT = ['created_at', 'status', 'assignee_id', 'first_contact_at', 'lost_reason', 'condition_id',
                'source_kind', 'webhook_source_id', 'patient_id', 'is_test']  # as 0014 left it

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
    # A plain ADD COLUMN on both databases (a batch "move and copy" is not needed and rebuilds tables).
    op.add_column('report_daily_leads', sa.Column('sla', sa.SmallInteger(), nullable=False, server_default='0'))
    _leads_update_trigger(AFTER)
    op.drop_index('ix_leads_report', table_name='leads')
    op.create_index('ix_leads_report', 'leads', LEADS_REPORT + ['sla_breached_at'])
    op.execute("DELETE FROM report_rollup_state")


def downgrade():
    _leads_update_trigger(BEFORE)
    op.drop_index('ix_leads_report', table_name='leads')
    op.create_index('ix_leads_report', 'leads', LEADS_REPORT)
    op.drop_column('report_daily_leads', 'sla')
    op.execute("DELETE FROM report_rollup_state")
