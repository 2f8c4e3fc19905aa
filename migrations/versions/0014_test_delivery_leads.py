"""test delivery leads: leads.is_test, kept out of every report

Revision ID: 0014_test_delivery_leads
Revises: 0013_users_must_change_password
Create Date: 2026-12-03 10:00:00

Hand-written (autogenerate cannot see triggers). An admin's "Send test delivery" on
/admin/sources/<id> goes through the real intake and makes a real lead; the admin page then flags
it ``is_test`` (crm/services/sources.py ``mark_test_lead``) and the reports leave it out
(docs/reports.md "Which leads").

* ``leads.is_test``: false for every existing lead (server default, so intake's prepared INSERTs
  need not name it).
* ``ix_leads_report`` gains ``is_test`` at its end and ``ix_appointments_starts_at_report`` gains
  ``lead_id``, so the report scans stay index-only with the new filter.
* ``ix_leads_test``: a partial index of the (few) test leads, for utilisation's "not a test
  lead's appointment" anti-join.
* A trigger marks the lead's creation day and its appointments' start days for the rollups
  (``report_changes``) when ``is_test`` changes: flagging a lead seconds after it was counted
  removes it from the rollups at the next refresh.
* Leads made by test deliveries before this migration are flagged, found through their audit rows.
"""
from alembic import op
import sqlalchemy as sa


revision = '0014_test_delivery_leads'
down_revision = '0013_users_must_change_password'
branch_labels = None
depends_on = None

LEADS_REPORT = ['created_at', 'status', 'assignee_id', 'first_contact_at', 'lost_reason', 'condition_id',
                'source_kind', 'webhook_source_id', 'patient_id']
APPOINTMENTS_REPORT = ['starts_at', 'status', 'physician_id']


def upgrade():
    # A plain ADD COLUMN on both databases (a batch "move and copy" would drop the leads triggers on SQLite).
    op.add_column('leads', sa.Column('is_test', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.drop_index('ix_leads_report', table_name='leads')
    op.create_index('ix_leads_report', 'leads', LEADS_REPORT + ['is_test'])
    op.drop_index('ix_appointments_starts_at_report', table_name='appointments')
    op.create_index('ix_appointments_starts_at_report', 'appointments', APPOINTMENTS_REPORT + ['lead_id'])
    # Each predicate as the dialect renders ``Lead.is_test`` (SQLite matches a partial index's WHERE
    # term as written: "is_test = 1", not "is_test").
    op.create_index('ix_leads_test', 'leads', ['id'], postgresql_where=sa.text('is_test'),
                    sqlite_where=sa.text('is_test = 1'))
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute("""
            CREATE FUNCTION report_changes_lead_test() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO report_changes (kind, at) VALUES ('lead', NEW.created_at);
                INSERT INTO report_changes (kind, at) SELECT 'booking', starts_at FROM appointments
                    WHERE lead_id = NEW.id;
                RETURN NULL;
            END $$
        """)
        op.execute("CREATE TRIGGER report_changes_leads_test AFTER UPDATE OF is_test ON leads "
                   "FOR EACH ROW WHEN (old.is_test IS DISTINCT FROM new.is_test) "
                   "EXECUTE FUNCTION report_changes_lead_test()")
    elif dialect == 'sqlite':
        op.execute("CREATE TRIGGER report_changes_leads_test AFTER UPDATE OF is_test ON leads "
                   "WHEN old.is_test IS NOT new.is_test BEGIN "
                   "INSERT INTO report_changes (kind, at) VALUES ('lead', new.created_at); "
                   "INSERT INTO report_changes (kind, at) SELECT 'booking', starts_at FROM appointments "
                   "WHERE lead_id = new.id; END")
    _flag_earlier_test_leads()


def _flag_earlier_test_leads():
    """Test deliveries sent before this migration: each left an audit row (``test_delivery``, the
    source's id, the webhook id), and its inbox item an ``accepted`` status when it made the lead
    (a fold into a real lead is ``resubmitted`` and stays real). Flagged through the trigger above,
    so the rollups drop them too."""
    import json

    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT object_id, detail FROM audit_log WHERE action = 'test_delivery' AND object_type = 'webhook_source'"
    )).all()
    for object_id, detail in rows:
        if isinstance(detail, str):
            try:
                detail = json.loads(detail)
            except ValueError:
                continue
        webhook_id = (detail or {}).get("webhook_id") if isinstance(detail, dict) else None
        if not webhook_id or not str(object_id or "").isdigit():
            continue
        bind.execute(
            sa.text(
                "UPDATE leads SET is_test = :yes WHERE id IN (SELECT lead_id FROM inbox_items "
                "WHERE source_id = :source AND webhook_id = :webhook AND status = 'accepted')"
            ),
            {"yes": True, "source": int(object_id), "webhook": str(webhook_id)},
        )


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute("DROP TRIGGER report_changes_leads_test ON leads")
        op.execute("DROP FUNCTION report_changes_lead_test()")
    elif dialect == 'sqlite':
        op.execute("DROP TRIGGER report_changes_leads_test")
    op.drop_index('ix_leads_test', table_name='leads')
    op.drop_index('ix_appointments_starts_at_report', table_name='appointments')
    op.create_index('ix_appointments_starts_at_report', 'appointments', APPOINTMENTS_REPORT)
    op.drop_index('ix_leads_report', table_name='leads')
    op.create_index('ix_leads_report', 'leads', LEADS_REPORT)
    op.drop_column('leads', 'is_test')
