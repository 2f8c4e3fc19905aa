"""/admin/users: create, role changes (audited), the last-admin rule, deactivation ends sessions."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from crm.models import AuditLog, User
from crm.services import users_admin
from crm.services.accounts import verify_password
from tests.conftest import AuthActions
from tests.factories import PASSWORD, UserFactory, committed_meanwhile


def test_specialist_is_refused_everywhere(client, auth, specialist, admin):
    auth.as_user(specialist)
    assert client.get("/admin/users").status_code == 403
    assert client.get(f"/admin/users/{admin.id}").status_code == 403
    for action in ("role", "deactivate", "reactivate", "password", "shift"):
        assert client.post(f"/admin/users/{admin.id}/{action}", data={"role": "specialist"}).status_code == 403
    assert client.post("/admin/users/new", data={"email": "x@example.com"}).status_code == 403
    assert db_admin_count() == 1


def db_admin_count() -> int:
    from crm.extensions import db

    return db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.role == "admin"))


def test_create_user(client, auth, admin, db):
    auth.as_user(admin)
    data = {
        "email": "New.Person@Example.com",
        "name": "New Person",
        "role": "specialist",
        "password": "a long temporary pw",
        "capacity": "25",
        "languages": "en; es",
        "timezone": "America/Chicago",
    }
    resp = client.post("/admin/users/new", data=data)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:1000]
    user = db.session.scalar(sa.select(User).where(User.email == "new.person@example.com"))
    assert user.capacity == 25 and user.languages == ["en", "es"] and user.timezone == "America/Chicago"
    assert verify_password(user.password_hash, "a long temporary pw")
    assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "create_user")).user_id == admin.id
    listing = client.get("/admin/users").get_data(as_text=True)
    assert "New Person" in listing and "0 / 25" in listing

    dup = client.post("/admin/users/new", data=data)
    assert dup.status_code == 200 and "already exists" in dup.get_data(as_text=True)
    for zone_name in ("Mars/Base", "localtime", "posixrules", "posix/Europe/Paris", "Factory"):
        bad_tz = client.post("/admin/users/new", data=dict(data, email="b@example.com", timezone=zone_name))
        assert "Unknown time zone" in bad_tz.get_data(as_text=True), zone_name
    short = client.post("/admin/users/new", data=dict(data, email="c@example.com", password="short"))
    assert short.status_code == 200 and "at least 10" in short.get_data(as_text=True)


def test_change_role_is_audited(client, auth, admin, specialist, db):
    auth.as_user(admin)
    assert client.post(f"/admin/users/{specialist.id}/role", data={"role": "admin"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, specialist.id).role == "admin"
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "change_role"))
    assert entry.user_id == admin.id and entry.object_id == str(specialist.id)
    assert entry.detail == {"from": "specialist", "to": "admin"}
    assert client.post(f"/admin/users/{specialist.id}/role", data={"role": "boss"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, specialist.id).role == "admin"


def test_last_admin_cannot_be_demoted_or_deactivated(client, auth, admin, db):
    auth.as_user(admin)
    resp = client.post(f"/admin/users/{admin.id}/role", data={"role": "specialist"}, follow_redirects=True)
    assert "last active admin" in resp.get_data(as_text=True)
    resp = client.post(f"/admin/users/{admin.id}/deactivate", follow_redirects=True)
    assert "last active admin" in resp.get_data(as_text=True)
    db.session.expire_all()
    me = db.session.get(User, admin.id)
    assert me.role == "admin" and me.active
    # With a second active admin, demotion works (and an inactive admin does not count).
    UserFactory(role="admin", active=False)
    db.session.commit()
    with pytest.raises(users_admin.UserAdminError):
        users_admin.deactivate(me)
    other = UserFactory(role="admin")
    db.session.commit()
    assert client.post(f"/admin/users/{other.id}/role", data={"role": "specialist"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, other.id).role == "specialist"


def test_an_admin_cannot_demote_or_deactivate_themselves_even_with_another_admin(client, auth, admin, db):
    other = UserFactory(role="admin", name="Other Admin")
    db.session.commit()
    auth.as_user(admin)
    page = client.get(f"/admin/users/{admin.id}").get_data(as_text=True)
    assert "ask another admin to change your role or deactivate it" in page
    assert 'disabled title="Your own role is changed by another admin"' in page
    assert f"/admin/users/{admin.id}/deactivate" not in page
    for url, data in (
        (f"/admin/users/{admin.id}/role", {"role": "specialist"}),
        (f"/admin/users/{admin.id}/deactivate", {}),
    ):
        resp = client.post(url, data=data, follow_redirects=True)
        body = resp.get_data(as_text=True)
        assert resp.status_code == 200 and "ask another admin to do it" in body, url  # not a bare 403
        assert resp.request.path == f"/admin/users/{admin.id}", url
    db.session.expire_all()
    me = db.session.get(User, admin.id)
    assert me.role == "admin" and me.active
    assert not db.session.scalar(sa.select(AuditLog).where(AuditLog.action.in_(["change_role", "deactivate_user"])))
    # Another admin can: and then the one left is the last active admin, whom nobody can demote.
    auth.logout()
    auth.as_user(other)
    assert "ask another admin" not in client.get(f"/admin/users/{admin.id}").get_data(as_text=True)
    assert client.post(f"/admin/users/{admin.id}/role", data={"role": "specialist"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, admin.id).role == "specialist"
    resp = client.post(f"/admin/users/{other.id}/role", data={"role": "specialist"}, follow_redirects=True)
    assert "last active admin" in resp.get_data(as_text=True)
    with pytest.raises(users_admin.UserAdminError, match="last active admin"):
        users_admin.deactivate(db.session.get(User, other.id))  # no actor (a script): refused as well
    db.session.rollback()
    assert db.session.get(User, other.id).role == "admin" and db.session.get(User, other.id).active


def test_invisible_characters_in_user_names_are_dropped_and_control_characters_refused(client, auth, admin, db):
    auth.as_user(admin)
    data = {
        "email": "new.person@example.com",
        "name": "\u202eNew\u200b Person\u2069",
        "role": "specialist",
        "password": "a-long-temporary-pass",
        "capacity": "20",
        "languages": "en",
        "timezone": "America/New_York",
    }
    assert client.post("/admin/users/new", data=data).status_code == 302, "created"
    user = db.session.scalar(sa.select(User).where(User.email == "new.person@example.com"))
    assert user.name == "New Person"
    edit = {"name": "New\tPerson", "capacity": "20", "languages": "en", "timezone": "America/New_York"}
    resp = client.post(f"/admin/users/{user.id}", data=edit)
    assert resp.status_code == 200 and "The name contains a control character" in resp.get_data(as_text=True)
    resp = client.post(f"/admin/users/{user.id}", data=dict(edit, name="\u200b"))
    assert resp.status_code == 200 and "This field is required" in resp.get_data(as_text=True)
    with pytest.raises(users_admin.UserAdminError, match="control character"):
        users_admin.update_profile(user, name="A\x9bB", capacity=20, languages="en", timezone="UTC")
    db.session.rollback()
    assert db.session.get(User, user.id).name == "New Person"


def test_deactivation_ends_live_session_and_reactivation(app, client, auth, admin, specialist, db):
    other_client = app.test_client()
    AuthActions(other_client).as_user(specialist)
    assert other_client.get("/queue").status_code == 200
    auth.as_user(admin)
    assert client.post(f"/admin/users/{specialist.id}/deactivate").status_code == 302
    resp = other_client.get("/queue")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert AuthActions(other_client).login(specialist.email).status_code != 302  # cannot sign in again
    db.session.expire_all()
    assert db.session.get(User, specialist.id).on_shift is False
    assert client.post(f"/admin/users/{specialist.id}/reactivate").status_code == 302
    AuthActions(other_client).as_user(specialist)
    assert other_client.get("/queue").status_code == 200
    actions = set(db.session.scalars(sa.select(AuditLog.action)))
    assert {"deactivate_user", "reactivate_user"} <= actions


def test_deactivation_returns_open_leads_to_the_pool(client, auth, admin, specialist, db):
    """Someone who cannot sign in keeps no leads: open ones (booked too, and those with a
    follow-up ahead, which the stale sweep leaves alone) go back to the pool with their follow-ups."""
    from datetime import UTC, datetime, timedelta

    from crm.models import FollowUp, Lead, LeadEvent
    from crm.models.enums import EventKind, LeadStatus
    from tests.test_queue_helpers import make_lead

    waiting = make_lead(db, status=LeadStatus.ATTEMPTING, assignee=specialist, commit=False)
    booked = make_lead(db, status=LeadStatus.BOOKED, assignee=specialist, commit=False)
    closed = make_lead(db, status=LeadStatus.LOST, assignee=specialist, commit=False)
    db.session.flush()
    call = FollowUp(lead_id=waiting.id, owner_id=specialist.id, due_at=datetime.now(UTC) + timedelta(days=2))
    db.session.add(call)
    db.session.commit()
    auth.as_user(admin)
    resp = client.post(f"/admin/users/{specialist.id}/deactivate", follow_redirects=True)
    assert "Their 2 open leads went back to the unassigned pool" in resp.get_data(as_text=True)
    db.session.expire_all()
    owners = {lead.id: lead.assignee_id for lead in db.session.scalars(sa.select(Lead))}
    assert owners == {waiting.id: None, booked.id: None, closed.id: specialist.id}  # a closed lead keeps its history
    assert db.session.get(FollowUp, call.id).owner_id is None
    events = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.UNASSIGNED)).all()
    assert {e.lead_id for e in events} == {waiting.id, booked.id}
    assert all(e.actor_id == admin.id and "deactivated" in e.data["reason"] for e in events)
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "deactivate_user"))
    assert entry.detail == {"leads_returned": 2}
    # Someone without open leads: the message says so.
    idle = UserFactory(name="Idle Ivy")
    db.session.commit()
    resp = client.post(f"/admin/users/{idle.id}/deactivate", follow_redirects=True)
    assert "Idle Ivy is deactivated and signed out everywhere. They had no open leads." in resp.get_data(as_text=True)


def test_reset_password_ends_sessions(app, client, auth, admin, specialist, db):
    from datetime import UTC, datetime, timedelta

    other_client = app.test_client()
    AuthActions(other_client).as_user(specialist)
    auth.as_user(admin)
    db.session.get(User, specialist.id).locked_until = datetime.now(UTC) + timedelta(minutes=10)
    db.session.commit()
    assert "Locked after repeated failed sign-ins" in client.get(f"/admin/users/{specialist.id}").get_data(as_text=True)
    mismatch = client.post(
        f"/admin/users/{specialist.id}/password",
        data={"password": "brand new password", "confirm": "different one!"},
        follow_redirects=True,
    )
    assert "differ" in mismatch.get_data(as_text=True)
    resp = client.post(
        f"/admin/users/{specialist.id}/password",
        data={"password": "brand new password", "confirm": "brand new password"},
    )
    assert resp.status_code == 302
    assert other_client.get("/queue").status_code == 302
    db.session.expire_all()
    assert db.session.get(User, specialist.id).locked_until is None  # a reset unlocks
    AuthActions(other_client).as_user(specialist, password="brand new password")
    assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "reset_password"))


def test_profile_shift_capacity_languages(client, auth, admin, specialist, db):
    auth.as_user(admin)
    assert client.post(f"/admin/users/{specialist.id}/shift", data={"on_shift": "1"}).status_code == 302
    data = {"name": "Sam S.", "capacity": "12", "languages": "en;pt", "timezone": "America/Denver"}
    assert client.post(f"/admin/users/{specialist.id}", data=data).status_code == 302
    db.session.expire_all()
    user = db.session.get(User, specialist.id)
    assert (user.name, user.capacity, user.languages, user.timezone, user.on_shift) == (
        "Sam S.",
        12,
        ["en", "pt"],
        "America/Denver",
        True,
    )
    assert client.post(f"/admin/users/{specialist.id}/shift", data={"on_shift": "0"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, specialist.id).on_shift is False
    # A profile form opened while they were on shift, saved after they ended it, leaves the shift alone
    # (it used to carry the ticked "On shift" box and put them back on shift, receiving leads).
    stale = client.post(f"/admin/users/{specialist.id}", data=dict(data, capacity="13", on_shift="y"))
    assert stale.status_code == 302
    db.session.expire_all()
    assert (db.session.get(User, specialist.id).capacity, db.session.get(User, specialist.id).on_shift) == (13, False)
    assert "Off shift" in client.get(f"/admin/users/{specialist.id}").get_data(as_text=True)
    bad = client.post(f"/admin/users/{specialist.id}", data=dict(data, capacity="-1", languages="english!"))
    body = bad.get_data(as_text=True)
    assert bad.status_code == 200 and "Language codes" in body
    assert client.get("/admin/users/999").status_code == 404


def test_an_admins_own_page_sends_them_to_change_their_password_not_reset_it(client, auth, admin, specialist, db):
    """Resetting one's own password from the users page signed the admin out at once."""
    auth.as_user(admin)
    own = client.get(f"/admin/users/{admin.id}").get_data(as_text=True)
    assert "own-password" in own and f'action="/admin/users/{admin.id}/password"' not in own
    other = client.get(f"/admin/users/{specialist.id}").get_data(as_text=True)
    assert f'action="/admin/users/{specialist.id}/password"' in other


def test_an_admin_cannot_reset_their_own_password_through_the_other_user_endpoint(client, auth, admin, db):
    """The page hid the form, but a post was accepted without the current password: it ended the
    admin's sessions and flagged their own choice as temporary."""
    auth.as_user(admin)
    resp = client.post(
        f"/admin/users/{admin.id}/password",
        data={"password": "chosen without the old", "confirm": "chosen without the old"},
        follow_redirects=True,
    )
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.request.path == f"/admin/users/{admin.id}"  # still signed in
    assert "You cannot reset your own password here" in body and "/account/password" in body
    db.session.expire_all()
    me = db.session.get(User, admin.id)
    assert verify_password(me.password_hash, PASSWORD) and not me.must_change_password
    assert not db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "reset_password"))
    assert client.get("/queue").status_code == 200


def test_the_new_user_form_reports_every_field_error_in_one_round(client, auth, admin, specialist, db):
    """A taken email and an unknown time zone were reported only once the other fields were right,
    so the admin fixed one thing per submit (retyping the password each time)."""
    auth.as_user(admin)
    data = {"email": specialist.email.upper(), "name": "", "role": "specialist", "password": "short"}
    data.update(capacity="40", languages="en", timezone="Mars/Base")
    for zone in ("Mars/Base", "EST"):
        resp = client.post("/admin/users/new", data=dict(data, timezone=zone))
        body = resp.get_data(as_text=True)
        assert resp.status_code == 200
        assert "already exists" in body and "Unknown time zone" in body, zone
        assert "at least 10 characters" in body and 'id="name-err"' in body, zone
        assert 'id="email-err"' in body and 'id="timezone-err"' in body
        assert 'value="short"' not in body  # the password is not echoed back
    bad_email = client.post("/admin/users/new", data=dict(data, email="not an email", name="Nia New"))
    assert "Invalid email" in bad_email.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 2  # nothing created
    fixed = dict(data, email="nia@example.com", name="Nia New", password="x" * 12, timezone="America/Chicago")
    assert client.post("/admin/users/new", data=fixed).status_code == 302  # all fixed in one go, it goes through
    assert db.session.scalar(sa.select(User).where(User.email == "nia@example.com")).timezone == "America/Chicago"


def test_promoting_to_admin_asks_first_and_demoting_names_the_role(client, auth, admin, specialist, db):
    """A promotion to admin went through on one click, with no confirmation."""
    other = UserFactory(role="admin", name="Other Admin")
    db.session.commit()
    auth.as_user(admin)
    page = client.get(f"/admin/users/{specialist.id}").get_data(as_text=True)
    form = page[page.index(f'action="/admin/users/{specialist.id}/role"') :]
    form = form[: form.index("</form>")]
    assert 'name="role" value="admin"' in form
    assert 'data-confirm="Make Sam Specialist an admin?' in form and ">Make admin</button>" in form
    assert "<script" not in form  # the confirmation is static/app.js's (CSP: no inline scripts)
    theirs = client.get(f"/admin/users/{other.id}").get_data(as_text=True)
    assert 'name="role" value="specialist"' in theirs and 'data-confirm="Make Other Admin a specialist?' in theirs
    assert client.post(f"/admin/users/{specialist.id}/role", data={"role": "admin"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, specialist.id).role == "admin"


def test_two_admins_demoting_each_other_at_once_leave_one_admin(app, db):
    """The last-admin check locks the admins' rows (PostgreSQL) or the database (SQLite's write
    lock): of two crossing demotions one waits for the other, then sees it would leave no admin
    and is refused."""
    import threading

    from crm.services.users_admin import UserAdminError, change_role

    ann = UserFactory(role="admin", email="ann@example.com")
    bob = UserFactory(role="admin", email="bob@example.com")
    db.session.commit()
    pairs = [(ann.id, bob.id), (bob.id, ann.id)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(actor_id: int, target_id: int) -> None:
        with app.app_context():
            barrier.wait(timeout=30)
            try:
                change_role(db.session.get(User, target_id), "specialist", by=db.session.get(User, actor_id))
                db.session.commit()
                outcomes.append("demoted")
            except UserAdminError:
                db.session.rollback()
                outcomes.append("refused")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=demote, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["demoted", "refused"]
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.role == "admin")) == 1


def test_a_user_an_admin_created_chooses_their_own_password_before_anything_else(app, client, auth, admin, db):
    """The admin knows the password they set; the user replaces it at first sign-in. Until then
    every page sends them to the change page, which brings them back to where they were going."""
    auth.as_user(admin)
    data = {"email": "new.one@example.com", "name": "New One", "role": "specialist", "password": "set by the admin"}
    data.update(capacity="40", languages="en", timezone="America/New_York")
    assert client.post("/admin/users/new", data=data).status_code == 302
    newcomer = db.session.scalar(sa.select(User).where(User.email == "new.one@example.com"))
    assert newcomer.must_change_password

    theirs = app.test_client()
    signed_in = theirs.post(
        "/login", data={"email": "new.one@example.com", "password": "set by the admin", "next": "/queue?view=mine"}
    )
    assert signed_in.status_code == 302
    page = theirs.get(signed_in.headers["Location"])
    assert page.status_code == 302 and page.headers["Location"].startswith("/account/password?next=")
    for path in ("/queue", "/leads/1", "/reports"):
        assert theirs.get(path).headers["Location"].startswith("/account/password"), path
    assert theirs.get("/queue", headers={"Accept": "application/json"}).status_code == 403
    form = theirs.get(page.headers["Location"]).get_data(as_text=True)
    assert "An admin set the password you signed in with" in form and "Cancel" not in form
    assert theirs.get("/conditions").status_code == 200  # the public pages are not held back

    changed = theirs.post(
        page.headers["Location"],
        data={"current": "set by the admin", "password": "only I know this one", "confirm": "only I know this one"},
    )
    assert changed.status_code == 302 and changed.headers["Location"] == "/queue?view=mine"
    assert theirs.get("/queue?view=mine").status_code == 200
    db.session.expire_all()
    assert not db.session.get(User, newcomer.id).must_change_password


def test_after_an_admins_reset_the_user_chooses_their_own_password_again(app, client, auth, admin, specialist, db):
    auth.as_user(admin)
    assert not db.session.get(User, specialist.id).must_change_password  # made by the factory, not an admin
    client.post(
        f"/admin/users/{specialist.id}/password",
        data={"password": "reset by the admin", "confirm": "reset by the admin"},
    )
    theirs = app.test_client()
    AuthActions(theirs).as_user(specialist, password="reset by the admin")
    assert theirs.get("/queue").headers["Location"].startswith("/account/password")
    assert theirs.post("/session/keepalive").status_code == 204  # the change page's own keepalive
    assert theirs.post("/logout").status_code == 302  # signing out is never held back


def test_a_profile_saved_by_someone_else_meanwhile_is_not_overwritten_unseen(client, auth, admin, specialist, db):
    from tests.test_admin_misc import loaded_snapshot

    auth.as_user(admin)
    opened = loaded_snapshot(client.get(f"/admin/users/{specialist.id}").get_data(as_text=True))
    other_admin_view = db.session.get(User, specialist.id)
    other_admin_view.capacity = 12  # another admin lowers the capacity meanwhile
    db.session.commit()

    mine = {"name": "Renamed Specialist", "capacity": "40", "languages": "en", "timezone": "America/New_York"}
    refused = client.post(f"/admin/users/{specialist.id}", data=dict(mine, loaded=opened))
    body = refused.get_data(as_text=True)
    assert refused.status_code == 200 and "someone else changed this profile" in body and "(capacity)" in body
    db.session.expire_all()
    assert db.session.get(User, specialist.id).capacity == 12
    assert db.session.get(User, specialist.id).name != "Renamed Specialist"
    again = client.post(f"/admin/users/{specialist.id}", data=dict(mine, capacity="12", loaded=loaded_snapshot(body)))
    assert again.status_code == 302
    db.session.expire_all()
    assert db.session.get(User, specialist.id).name == "Renamed Specialist"


def test_an_admin_unlocks_a_locked_account_without_resetting_its_password(app, client, auth, admin, specialist, db):
    theirs = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        theirs.post("/login", data={"email": specialist.email, "password": "wrong password!"})
    auth.as_user(admin)
    page = client.get(f"/admin/users/{specialist.id}").get_data(as_text=True)
    assert "Locked after repeated failed sign-ins" in page and f"/admin/users/{specialist.id}/unlock" in page
    resp = client.post(f"/admin/users/{specialist.id}/unlock", follow_redirects=True)
    assert "is unlocked and can sign in again" in resp.get_data(as_text=True)
    assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "unlock_user")).user_id == admin.id
    AuthActions(theirs).as_user(specialist)  # the same password as before
    assert theirs.get("/queue").status_code == 200  # and no forced change: the admin set nothing
    assert client.post(f"/admin/users/{specialist.id}/unlock", follow_redirects=True).status_code == 200


def test_a_reset_takes_the_user_off_shift(client, auth, admin, specialist, db):
    specialist.on_shift = True
    db.session.commit()
    auth.as_user(admin)
    client.post(
        f"/admin/users/{specialist.id}/password", data={"password": "reset by admin", "confirm": "reset by admin"}
    )
    db.session.expire_all()
    assert not db.session.get(User, specialist.id).on_shift  # signed out: no leads routed to them meanwhile


def test_the_change_page_keeps_its_next_on_this_site_and_a_failed_change_keeps_the_flag(app, db, specialist):
    specialist.must_change_password = True
    db.session.commit()
    theirs = app.test_client()
    AuthActions(theirs).as_user(specialist)
    form = {"current": "not my password", "password": "only I know this", "confirm": "only I know this"}
    wrong = theirs.post("/account/password", data=form)
    assert wrong.status_code == 200 and "not your current password" in wrong.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, specialist.id).must_change_password
    assert theirs.get("/queue").headers["Location"].startswith("/account/password")
    ok = theirs.post("/account/password?next=//evil.example/x", data=dict(form, current="correct horse battery"))
    assert ok.status_code == 302 and ok.headers["Location"] == "/queue"


def test_a_colleague_who_has_not_chosen_their_password_cannot_be_put_on_shift(client, auth, admin, db):
    """Sam was put on shift before his first sign-in and auto-assignment dealt him a lead he could
    not open yet; he starts his shift himself once his own password is set."""
    auth.as_user(admin)
    client.post(
        "/admin/users/new",
        data={
            "email": "sam@example.com",
            "name": "Sam Spec",
            "role": "specialist",
            "password": "temporary pass 1",
            "capacity": "25",
            "languages": "en",
            "timezone": "America/Chicago",
        },
    )
    sam = db.session.scalar(sa.select(User).where(User.email == "sam@example.com"))
    assert sam is not None and sam.must_change_password
    page = client.get(f"/admin/users/{sam.id}").get_data(as_text=True)
    assert "Start their shift" not in page and "they start their shift themselves" in page
    resp = client.post(f"/admin/users/{sam.id}/shift", data={"on_shift": "1"}, follow_redirects=True)
    assert "has not signed in with their own password yet" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert not db.session.get(User, sam.id).on_shift
    sam = db.session.get(User, sam.id)
    sam.must_change_password = False
    db.session.commit()
    client.post(f"/admin/users/{sam.id}/shift", data={"on_shift": "1"})
    db.session.expire_all()
    assert db.session.get(User, sam.id).on_shift


def test_an_admin_corrects_a_colleagues_sign_in_email(app, client, auth, admin, specialist, db):
    """A typo in the email at creation meant a new account: it can be corrected, checked and audited."""
    UserFactory(email="taken@example.com", name="Someone Else")
    db.session.commit()
    auth.as_user(admin)
    data = {"name": specialist.name, "capacity": "40", "languages": "en", "timezone": "America/New_York"}
    page = client.get(f"/admin/users/{specialist.id}").get_data(as_text=True)
    assert f'value="{specialist.email}"' in page
    for typed, message in [("not an email", "Invalid email"), ("Taken@Example.com", "Another user signs in with")]:
        resp = client.post(f"/admin/users/{specialist.id}", data=dict(data, email=typed))
        html = resp.get_data(as_text=True)
        assert resp.status_code == 200 and message in html, typed
        assert re.search(r'id="email"[^>]*is-invalid|is-invalid[^>]*id="email"', html), typed  # under Email
    db.session.expire_all()
    assert db.session.get(User, specialist.id).email == "specialist@example.com"
    resp = client.post(f"/admin/users/{specialist.id}", data=dict(data, email=" Sam.Specialist@Example.com "))
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(User, specialist.id).email == "sam.specialist@example.com"
    row = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "update_user"))
    assert row.detail == {"fields": ["email"], "email": ["specialist@example.com", "sam.specialist@example.com"]}
    theirs = app.test_client()
    assert AuthActions(theirs).login("sam.specialist@example.com").status_code == 302
    assert theirs.get("/queue").status_code == 200


def test_deactivation_can_hand_the_open_leads_to_a_colleague(client, auth, admin, specialist, db):
    """Booked patients and planned call-backs get an owner at once instead of waiting in the pool."""
    from datetime import UTC, datetime, timedelta

    from crm.models import FollowUp, Lead
    from crm.models.enums import LeadStatus
    from tests.test_queue_helpers import make_lead

    colleague = UserFactory(name="Cora Colleague", email="cora@example.com", capacity=30)
    UserFactory(name="Nora Newcomer", email="nora@example.com", must_change_password=True)
    waiting = make_lead(db, status=LeadStatus.ATTEMPTING, assignee=specialist, commit=False)
    booked = make_lead(db, status=LeadStatus.BOOKED, assignee=specialist, commit=False)
    db.session.flush()
    call = FollowUp(lead_id=waiting.id, owner_id=specialist.id, due_at=datetime.now(UTC) + timedelta(days=2))
    db.session.add(call)
    db.session.commit()
    auth.as_user(admin)
    page = client.get(f"/admin/users/{specialist.id}").get_data(as_text=True)
    # Each with their load, and whether they can work yet.
    assert "Their 2 open leads:" in page
    assert f'<option value="{colleague.id}">to Cora Colleague (0 open of 30)</option>' in page
    assert "Nora Newcomer (0 open of 40, temporary password not replaced yet)" in page
    resp = client.post(
        f"/admin/users/{specialist.id}/deactivate", data={"hand_to": str(colleague.id)}, follow_redirects=True
    )
    assert "Their 2 open leads went to Cora Colleague, with their follow-ups." in resp.get_data(as_text=True)
    db.session.expire_all()
    assert {db.session.get(Lead, i).assignee_id for i in (waiting.id, booked.id)} == {colleague.id}
    assert db.session.get(FollowUp, call.id).owner_id == colleague.id
    entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "deactivate_user"))
    assert entry.detail == {"leads_handed": 2, "to": colleague.id}


def test_deactivation_refuses_to_hand_leads_to_nobody_real(client, auth, admin, specialist, db):
    gone = UserFactory(email="gone@example.com", active=False)
    db.session.commit()
    auth.as_user(admin)
    for target in (str(specialist.id), str(gone.id), "99999", "x"):
        resp = client.post(f"/admin/users/{specialist.id}/deactivate", data={"hand_to": target}, follow_redirects=True)
        page = resp.get_data(as_text=True)
        assert "Hand their leads to someone else who is active" in page or "Choose who takes over" in page, target
    db.session.expire_all()
    assert db.session.get(User, specialist.id).active


def test_a_user_created_twice_at_once_gets_the_already_exists_error_not_a_500(client, auth, admin, db):
    """A double click on Create: the second request's checks pass before the first commits; the
    unique index refuses it and the form says so (the account and its password exist once)."""
    auth.as_user(admin)
    data = {"email": "twice@example.com", "name": "Twice", "role": "specialist", "password": "a long temporary pw"}
    data.update(capacity="25", languages="en", timezone="America/Chicago")
    with committed_meanwhile(lambda: UserFactory.build(email="twice@example.com", name="Twice")):
        resp = client.post("/admin/users/new", data=data)
    assert resp.status_code == 200 and "A user with email twice@example.com already exists." in resp.get_data(
        as_text=True
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.email == "twice@example.com")) == 1


def test_a_lookalike_email_in_full_width_letters_is_the_same_account(client, auth, admin, db, specialist):
    auth.as_user(admin)
    lookalike = "\uff4d" + specialist.email[1:] if specialist.email.startswith("m") else "\uff53" + specialist.email[1:]
    data = {"email": lookalike, "name": "Copy", "role": "specialist", "password": "a long temporary pw"}
    data.update(capacity="25", languages="en", timezone="America/Chicago")
    resp = client.post("/admin/users/new", data=data)
    assert resp.status_code == 200 and "already exists" in resp.get_data(as_text=True)


def test_a_new_user_is_written_only_with_the_requests_commit(db, admin):
    """If anything after the insert fails (its audit row, the commit), no account is left behind: on
    SQLite a savepoint opened before any write committed it on its own."""
    from crm.services import users_admin

    users_admin.create_user("late@example.com", "Late", "a long temporary pw", "specialist", by=admin)
    db.session.rollback()
    assert db.session.scalar(sa.select(User).where(User.email == "late@example.com")) is None
