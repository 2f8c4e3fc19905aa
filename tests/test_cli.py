"""flask crm user create / seed / demo."""

from __future__ import annotations

import sqlalchemy as sa

from crm.models import AuditLog, Condition, Lead, Physician, StateProgram, User
from crm.models.enums import LeadStatus, Role
from crm.services.accounts import verify_password


def test_user_create_with_password_stdin(app, db):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["crm", "user", "create", "Boss@Example.com", "--role", "admin", "--password-stdin"],
        input="a long enough password\n",
    )
    assert result.exit_code == 0, result.output
    user = db.session.scalar(sa.select(User).where(User.email == "boss@example.com"))
    assert user.role == Role.ADMIN
    assert verify_password(user.password_hash, "a long enough password")
    assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "create_user"))


def test_user_create_prompts_for_password(app, db):
    result = app.test_cli_runner().invoke(
        args=["crm", "user", "create", "new@example.com"], input="another password!\nanother password!\n"
    )
    assert result.exit_code == 0, result.output
    assert db.session.scalar(sa.select(User.role).where(User.email == "new@example.com")) == Role.SPECIALIST


def test_user_create_refuses_duplicates_and_weak_passwords(app, db, specialist):
    runner = app.test_cli_runner()
    dup = runner.invoke(args=["crm", "user", "create", specialist.email, "--password-stdin"], input="long password 1\n")
    assert dup.exit_code == 1 and "already exists" in dup.output
    weak = runner.invoke(args=["crm", "user", "create", "x@example.com", "--password-stdin"], input="short\n")
    assert weak.exit_code == 1 and "at least" in weak.output
    bad = runner.invoke(args=["crm", "user", "create", "not-an-email", "--password-stdin"], input="long password 1\n")
    assert bad.exit_code == 1 and "Invalid email" in bad.output


def test_seed_loads_all_states_and_conditions_once(app, db):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["crm", "seed"]).exit_code == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StateProgram)) == 51
    conditions = db.session.scalar(sa.select(sa.func.count()).select_from(Condition))
    assert conditions >= 20
    assert db.session.scalar(sa.select(Condition).where(Condition.slug == "dystonia")).body
    # An admin's edit survives a second seed.
    fl = db.session.scalar(sa.select(StateProgram).where(StateProgram.state == "FL"))
    fl.minimum_age = 21
    db.session.commit()
    assert runner.invoke(args=["crm", "seed"]).exit_code == 0
    db.session.expire_all()
    assert db.session.scalar(sa.select(StateProgram.minimum_age).where(StateProgram.state == "FL")) == 21


def test_demo_is_idempotent_and_looks_alive(app, db):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["crm", "demo"])
    assert first.exit_code == 0, first.output
    assert "admin@example.com" in first.output and "desk-demo-2026" in first.output
    count = lambda m: db.session.scalar(sa.select(sa.func.count()).select_from(m))  # noqa: E731
    assert count(User) == 4
    assert count(Physician) == 300
    assert count(Lead) == 60
    states = db.session.scalar(sa.select(sa.func.count(sa.distinct(Physician.state))))
    assert states >= 10
    statuses = set(db.session.scalars(sa.select(Lead.status).distinct()))
    assert statuses == set(LeadStatus)
    # Every demo lead that reached the patient says when, as the workspace records it (the funnel).
    reached = sa.select(sa.func.count()).select_from(Lead).where(Lead.status.in_(["contacted", "booked", "completed"]))
    assert db.session.scalar(reached.where(Lead.reached_at.is_(None))) == 0
    # The inbox has the deliveries the leads came from, a resent one and a rejected one.
    from crm.models import InboxItem
    from crm.models.enums import InboxStatus

    accepted = db.session.scalars(sa.select(InboxItem.lead_id).where(InboxItem.status == InboxStatus.ACCEPTED))
    assert sorted(accepted) == sorted(db.session.scalars(sa.select(Lead.id)))
    inbox = {
        s: n for s, n in db.session.execute(sa.select(InboxItem.status, sa.func.count()).group_by(InboxItem.status))
    }
    assert inbox == {InboxStatus.ACCEPTED: 60, InboxStatus.DUPLICATE: 1, InboxStatus.REJECTED: 1}
    from crm.models import WebhookSource

    source = db.session.scalar(sa.select(WebhookSource))
    latest = db.session.scalar(sa.select(sa.func.max(InboxItem.received_at)).where(InboxItem.source_id == source.id))
    assert latest is not None and source.last_received_at == latest  # not "Last received: never"
    second = runner.invoke(args=["crm", "demo"])
    assert second.exit_code == 0 and "already loaded" in second.output
    assert count(Lead) == 60 and count(User) == 4 and count(InboxItem) == 62


def test_the_demo_shows_a_few_missed_speed_to_lead_targets_not_one_per_lead(app, db):
    from datetime import UTC, datetime

    from crm.services.sla import SlaConfig, sla_sweep

    assert app.test_cli_runner().invoke(args=["crm", "demo"]).exit_code == 0
    # Outside business hours the clock stops, so count what the sweep would flag on a weekday
    # afternoon and with the clock always running.
    for cfg in (SlaConfig(), SlaConfig(hours="00:00-23:59", days="mon,tue,wed,thu,fri,sat,sun")):
        breached = sla_sweep(datetime.now(UTC), cfg)["breached"]
        db.session.rollback()  # the demo itself is committed; only the sweep's marks go
        assert breached <= 3, cfg
    contacted = sa.select(sa.func.count()).select_from(Lead).where(Lead.first_contact_at.is_not(None))
    assert db.session.scalar(contacted) >= 30


def test_the_demo_history_never_happens_in_the_future(app, db):
    """A lead received minutes ago was shown assigned half an hour from now, a day-old booked lead
    called tomorrow: every demo event, follow-up note and booking is in the past."""
    from datetime import UTC, datetime

    from crm.models import Appointment, LeadEvent

    assert app.test_cli_runner().invoke(args=["crm", "demo"]).exit_code == 0
    now = datetime.now(UTC)
    latest = db.session.scalar(sa.select(sa.func.max(LeadEvent.created_at)))
    assert latest <= now
    assert db.session.scalar(sa.select(sa.func.max(Lead.assigned_at))) <= now
    assert db.session.scalar(sa.select(sa.func.max(Appointment.created_at))) <= now
    # A visit is booked before it takes place.
    for appt in db.session.scalars(sa.select(Appointment)):
        assert appt.created_at < appt.starts_at, appt.lead_id
    # Each lead's events come in order after its arrival.
    for lead in db.session.scalars(sa.select(Lead)):
        times = [e.created_at for e in sorted(lead.events, key=lambda e: e.id)]
        assert times == sorted(times) and times[0] == lead.created_at, lead.id


def test_the_demo_call_backs_fall_inside_each_patients_calling_window(app, db):
    from crm.models import FollowUp
    from crm.services.calling_window import is_allowed, window_from_config
    from crm.services.followups import patient_timezone

    assert app.test_cli_runner().invoke(args=["crm", "demo"]).exit_code == 0
    window = window_from_config(app.config)
    follow_ups = db.session.scalars(sa.select(FollowUp).where(FollowUp.kind == "call")).all()
    assert follow_ups
    for fu in follow_ups:
        assert is_allowed(fu.due_at, patient_timezone(fu.lead.patient)[0], window), (fu.id, fu.due_at)


def test_the_demo_reports_progress_step_by_step(app, db):
    from crm.services.demo import demo_steps, load_demo

    steps: list[int] = []
    load_demo(steps.append, physicians=7, leads=5)
    db.session.rollback()
    assert sum(steps) == demo_steps(7, 5) == 17 and set(steps) == {1}


def test_demo_refuses_counts_below_zero(app, db):
    result = app.test_cli_runner().invoke(args=["crm", "demo", "--physicians", "-5"])
    assert result.exit_code == 2 and "-5 is not in the range" in result.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Physician)) == 0


def test_commands_on_a_database_not_migrated_yet_say_what_to_do(tmp_path):
    from config import TestConfig
    from crm import create_app

    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    result = app.test_cli_runner().invoke(args=["crm", "sources", "list"])
    assert result.exit_code == 1
    assert "run `flask --app wsgi db upgrade` first" in result.output and "Traceback" not in result.output


def test_a_database_that_cannot_be_opened_is_named_not_traced(tmp_path):
    from config import TestConfig
    from crm import create_app

    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite3'}")
    result = app.test_cli_runner().invoke(args=["crm", "seed"])
    assert result.exit_code == 1 and "cannot open the database DATABASE_URL names" in result.output


def test_a_bad_setting_ends_the_command_with_its_message_only(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "AUTO_ASSIGN": "maybe", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "crm", "sources", "list"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4  # wsgi.APP_LOAD_ERROR: gunicorn stops instead of booting workers again
    assert "AUTO_ASSIGN='maybe': expected true or false" in done.stderr and "Traceback" not in done.stderr


def test_sources_add_prints_the_whole_address_and_list_says_when_there_are_none(make_app, db):
    public = make_app(PUBLIC_BASE_URL="https://desk.example.org/")
    runner = public.test_cli_runner()
    with public.app_context():  # pytest-flask keeps the session app's context pushed
        empty = runner.invoke(args=["crm", "sources", "list"])
        added = runner.invoke(args=["crm", "sources", "add", "Partner site"])
    assert empty.exit_code == 0 and "No webhook sources yet" in empty.output
    assert "url: https://desk.example.org/webhooks/intake/partner-site" in added.output
    assert "PUBLIC_BASE_URL" not in added.output


def test_sources_add_without_a_public_address_says_the_url_is_relative(app, db):
    app.config["PUBLIC_BASE_URL"] = ""
    added = app.test_cli_runner().invoke(args=["crm", "sources", "add", "Partner site"])
    assert added.exit_code == 0, added.output
    assert "url: /webhooks/intake/partner-site" in added.output
    assert "the url is relative" in added.output and "set PUBLIC_BASE_URL" in added.output


def test_only_errors_of_reach_and_schema_are_turned_into_advice():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from crm.cli import NOT_MIGRATED, database_problem

    def wrapped(orig):
        return OperationalError("SELECT 1", {}, orig)

    assert database_problem(wrapped(sqlite3.OperationalError("no such table: conditions"))) == NOT_MIGRATED
    assert database_problem(wrapped(sqlite3.OperationalError("unable to open database file"))).startswith(
        "cannot open the database"
    )
    # A statement's own failure is not about reaching the database: its traceback stays.
    assert database_problem(wrapped(sqlite3.OperationalError("database is locked"))) is None
    assert database_problem(wrapped(Exception("could not serialize access due to concurrent update"))) is None


def test_make_runs_demo_step_loads_under_the_development_configuration(tmp_path):
    """As the Makefile runs it: the flask command (which sets app.debug from FLASK_DEBUG, not from
    the configuration) with APP_CONFIG=config.DevelopmentConfig."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "APP_CONFIG": "config.DevelopmentConfig",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.sqlite3'}",
        "SCHEDULER_LOCK_FILE": str(tmp_path / "scheduler.lock"),
    }
    env.pop("FLASK_DEBUG", None)

    def flask(*args):
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert flask("db", "upgrade").returncode == 0
    demo = flask("crm", "demo", "--physicians", "2", "--leads", "1")
    assert demo.returncode == 0, demo.stderr
    assert "Demo data: 4 users, 2 physicians, 1 leads." in demo.stdout


def test_sources_add_twice_with_the_same_name_is_refused(app, db):
    from crm.models import WebhookSource

    runner = app.test_cli_runner()
    first = runner.invoke(args=["crm", "sources", "add", "WordPress"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(args=["crm", "sources", "add", "wordpress "])
    assert again.exit_code == 1
    assert "A source named 'WordPress' already exists (slug 'wordpress')" in again.stderr
    assert "secret:" not in again.stdout
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookSource)) == 1


def test_a_locked_out_admin_is_let_back_in_from_the_command_line(app, db, admin):
    """Every admin locked (someone guessing at their emails): the server's operator unlocks one,
    or sets a new password, without touching the database by hand."""
    from tests.factories import PASSWORD

    client = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        client.post("/login", data={"email": admin.email, "password": "wrong password!"})
    assert b"locked" in client.post("/login", data={"email": admin.email, "password": PASSWORD}).data
    runner = app.test_cli_runner()
    assert "no user has the email" in runner.invoke(args=["crm", "user", "unlock", "nobody@example.com"]).output
    unlocked = runner.invoke(args=["crm", "user", "unlock", admin.email.upper()])
    assert unlocked.exit_code == 0 and f"Unlocked {admin.email}" in unlocked.output
    assert "is not locked" in runner.invoke(args=["crm", "user", "unlock", admin.email]).output
    assert client.post("/login", data={"email": admin.email, "password": PASSWORD}).status_code == 302

    weak = runner.invoke(args=["crm", "user", "set-password", admin.email, "--password-stdin"], input="short\n")
    assert weak.exit_code == 1 and "at least 10" in weak.output
    done = runner.invoke(
        args=["crm", "user", "set-password", admin.email, "--password-stdin", "--temporary"],
        input="operator's pick 1\n",
    )
    assert done.exit_code == 0 and "sessions have ended" in done.output
    db.session.expire_all()
    user = db.session.get(User, admin.id)
    assert user.must_change_password  # --temporary: they choose their own at the next sign-in
    again = app.test_client()
    assert again.post("/login", data={"email": admin.email, "password": "operator's pick 1"}).status_code == 302
    assert again.get("/admin/").headers["Location"].startswith("/account/password")


def test_the_demo_books_only_visits_the_physician_can_certify_at(app, db):
    from datetime import UTC, datetime

    from crm.services import booking

    assert app.test_cli_runner().invoke(args=["crm", "demo"]).exit_code == 0
    assert booking.visits_at_risk(datetime.now(UTC)) == []


def test_every_migration_id_fits_alembic_version_on_postgresql():
    """alembic_version.version_num is varchar(32) on PostgreSQL (SQLite does not enforce it): a longer
    revision id migrates SQLite and breaks every PostgreSQL upgrade."""
    import re
    from pathlib import Path

    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    ids = [re.search(r"^revision = ['\"]([^'\"]+)", p.read_text(), re.M).group(1) for p in versions.glob("*.py")]
    assert ids and [i for i in ids if len(i) > 32] == []
