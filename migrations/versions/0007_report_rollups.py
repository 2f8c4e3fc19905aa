"""report rollups: per-day report tables and the triggers that mark their days stale

Revision ID: 0007_report_rollups
Revises: 0006_physician_geocode_retry
Create Date: 2026-11-25 12:45:00

Hand-written (autogenerate cannot see triggers). /reports reads per-day rollups instead of
scanning every lead of the range (docs/reports.md "Rollups"):

* ``report_daily_*``: counts per local day of the desk (leads by creation day, appointments by
  start day), rebuilt by crm/services/report_rollups.py. Left empty here: the first refresh (the
  ``report_rollups`` job, the first /reports page or ``flask crm reports refresh``) builds them.
* ``report_changes``: written only by the triggers below, one row per insert, update or delete
  that can move a reported number, holding the UTC time stamp whose local day must be rebuilt
  (``lead``: a lead's created_at; ``booking``: an appointment's starts_at). Triggers see every
  write (ORM, Core bulk updates, raw SQL, COPY) in the writing transaction itself, so a refresh
  that consumes the rows a committed transaction wrote also sees that transaction's data: no
  clock, watermark or safety margin involved.

Watched: leads (insert, delete, and updates of the columns the reports group by), patients
(state, for every lead of the patient), appointments (insert, delete, status/start/physician/lead
changes: "has an appointment" for the lead's day, utilisation for the start days).
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_report_rollups'
down_revision = '0006_physician_geocode_retry'
branch_labels = None
depends_on = None

# Lead columns a report groups by; a change of any of them changes a rollup row of the lead's day.
LEAD_COLUMNS = ('status', 'lost_reason', 'assignee_id', 'first_contact_at', 'condition_id', 'source_kind',
                'webhook_source_id', 'patient_id', 'created_at')
APPOINTMENT_COLUMNS = ('status', 'starts_at', 'physician_id', 'lead_id')

# Constants only below (no input reaches these statements).
# ruff: noqa: S608


def _changed(columns, distinct):
    return ' OR '.join(f'old.{c} {distinct} new.{c}' for c in columns)


def _day_table(name, *columns):
    op.create_table(
        name,
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        *columns,
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f(f'pk_{name}')),
    )
    op.create_index(f'ix_{name}_day', name, ['day'])


def upgrade():
    _day_table(
        'report_daily_leads',
        sa.Column('assignee_id', sa.Integer(), nullable=True),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('stage', sa.SmallInteger(), nullable=False),
        sa.Column('waiting', sa.Boolean(), nullable=False),
    )
    _day_table(
        'report_daily_first_contact',
        sa.Column('assignee_id', sa.Integer(), nullable=True),
        sa.Column('bucket', sa.Integer(), nullable=False),
    )
    _day_table(
        'report_daily_sources',
        sa.Column('source_kind', sa.String(length=32), nullable=False),
        sa.Column('webhook_source_id', sa.Integer(), nullable=True),
    )
    _day_table('report_daily_conditions', sa.Column('condition_id', sa.Integer(), nullable=True))
    _day_table('report_daily_states', sa.Column('state', sa.String(length=2), nullable=True))
    _day_table('report_daily_bookings', sa.Column('physician_id', sa.Integer(), nullable=False))
    op.create_table(
        'report_changes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_report_changes')),
    )
    op.create_table(
        'report_rollup_state',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('built_at', sa.DateTime(), nullable=False),
        sa.Column('refreshed_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_report_rollup_state')),
    )
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        _postgresql_triggers()
    elif dialect == 'sqlite':
        _sqlite_triggers()


def _postgresql_triggers():
    op.execute("""
        CREATE FUNCTION report_changes_lead() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                INSERT INTO report_changes (kind, at) VALUES ('lead', OLD.created_at);
            END IF;
            IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.created_at IS DISTINCT FROM OLD.created_at) THEN
                INSERT INTO report_changes (kind, at) VALUES ('lead', NEW.created_at);
            END IF;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE FUNCTION report_changes_patient() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads WHERE patient_id = NEW.id;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE FUNCTION report_changes_appointment() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                INSERT INTO report_changes (kind, at) VALUES ('booking', OLD.starts_at);
            END IF;
            IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.starts_at IS DISTINCT FROM OLD.starts_at) THEN
                INSERT INTO report_changes (kind, at) VALUES ('booking', NEW.starts_at);
            END IF;
            IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.lead_id IS DISTINCT FROM OLD.lead_id) THEN
                INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads WHERE id = NEW.lead_id;
            END IF;
            IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND NEW.lead_id IS DISTINCT FROM OLD.lead_id) THEN
                INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads WHERE id = OLD.lead_id;
            END IF;
            RETURN NULL;
        END $$
    """)
    op.execute("CREATE TRIGGER report_changes_leads_insert_delete AFTER INSERT OR DELETE ON leads "
               "FOR EACH ROW EXECUTE FUNCTION report_changes_lead()")
    op.execute(f"CREATE TRIGGER report_changes_leads_update AFTER UPDATE OF {', '.join(LEAD_COLUMNS)} ON leads "
               f"FOR EACH ROW WHEN ({_changed(LEAD_COLUMNS, 'IS DISTINCT FROM')}) "
               "EXECUTE FUNCTION report_changes_lead()")
    op.execute("CREATE TRIGGER report_changes_patients_state AFTER UPDATE OF state ON patients "
               "FOR EACH ROW WHEN (old.state IS DISTINCT FROM new.state) EXECUTE FUNCTION report_changes_patient()")
    op.execute("CREATE TRIGGER report_changes_appointments_insert_delete AFTER INSERT OR DELETE ON appointments "
               "FOR EACH ROW EXECUTE FUNCTION report_changes_appointment()")
    op.execute(f"CREATE TRIGGER report_changes_appointments_update "
               f"AFTER UPDATE OF {', '.join(APPOINTMENT_COLUMNS)} ON appointments "
               f"FOR EACH ROW WHEN ({_changed(APPOINTMENT_COLUMNS, 'IS DISTINCT FROM')}) "
               "EXECUTE FUNCTION report_changes_appointment()")


def _sqlite_triggers():
    lead_new = "INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads WHERE id = new.lead_id;"
    lead_old = "INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads WHERE id = old.lead_id;"
    op.execute("CREATE TRIGGER report_changes_leads_insert AFTER INSERT ON leads BEGIN "
               "INSERT INTO report_changes (kind, at) VALUES ('lead', new.created_at); END")
    op.execute("CREATE TRIGGER report_changes_leads_delete AFTER DELETE ON leads BEGIN "
               "INSERT INTO report_changes (kind, at) VALUES ('lead', old.created_at); END")
    op.execute(f"CREATE TRIGGER report_changes_leads_update AFTER UPDATE OF {', '.join(LEAD_COLUMNS)} ON leads "
               f"WHEN {_changed(LEAD_COLUMNS, 'IS NOT')} BEGIN "
               "INSERT INTO report_changes (kind, at) VALUES ('lead', old.created_at); "
               "INSERT INTO report_changes (kind, at) SELECT 'lead', new.created_at "
               "WHERE new.created_at IS NOT old.created_at; END")
    op.execute("CREATE TRIGGER report_changes_patients_state AFTER UPDATE OF state ON patients "
               "WHEN old.state IS NOT new.state BEGIN "
               "INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads WHERE patient_id = new.id; "
               "END")
    op.execute("CREATE TRIGGER report_changes_appointments_insert AFTER INSERT ON appointments BEGIN "
               f"INSERT INTO report_changes (kind, at) VALUES ('booking', new.starts_at); {lead_new} END")
    op.execute("CREATE TRIGGER report_changes_appointments_delete AFTER DELETE ON appointments BEGIN "
               f"INSERT INTO report_changes (kind, at) VALUES ('booking', old.starts_at); {lead_old} END")
    op.execute(f"CREATE TRIGGER report_changes_appointments_update "
               f"AFTER UPDATE OF {', '.join(APPOINTMENT_COLUMNS)} ON appointments "
               f"WHEN {_changed(APPOINTMENT_COLUMNS, 'IS NOT')} BEGIN "
               "INSERT INTO report_changes (kind, at) VALUES ('booking', old.starts_at); "
               "INSERT INTO report_changes (kind, at) SELECT 'booking', new.starts_at "
               "WHERE new.starts_at IS NOT old.starts_at; "
               "INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads "
               "WHERE id = new.lead_id AND new.lead_id IS NOT old.lead_id; "
               "INSERT INTO report_changes (kind, at) SELECT 'lead', created_at FROM leads "
               "WHERE id = old.lead_id AND new.lead_id IS NOT old.lead_id; END")


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute("DROP TRIGGER report_changes_appointments_update ON appointments")
        op.execute("DROP TRIGGER report_changes_appointments_insert_delete ON appointments")
        op.execute("DROP TRIGGER report_changes_patients_state ON patients")
        op.execute("DROP TRIGGER report_changes_leads_update ON leads")
        op.execute("DROP TRIGGER report_changes_leads_insert_delete ON leads")
        op.execute("DROP FUNCTION report_changes_appointment()")
        op.execute("DROP FUNCTION report_changes_patient()")
        op.execute("DROP FUNCTION report_changes_lead()")
    elif dialect == 'sqlite':
        for name in ('appointments_update', 'appointments_delete', 'appointments_insert', 'patients_state',
                     'leads_update', 'leads_delete', 'leads_insert'):
            op.execute(f"DROP TRIGGER report_changes_{name}")
    op.drop_table('report_rollup_state')
    op.drop_table('report_changes')
    for name in ('bookings', 'states', 'conditions', 'sources', 'first_contact', 'leads'):
        op.drop_index(f'ix_report_daily_{name}_day', table_name=f'report_daily_{name}')
        op.drop_table(f'report_daily_{name}')
