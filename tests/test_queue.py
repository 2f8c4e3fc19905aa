"""The queue (SPEC 7): views, filters, search, pagination, counts, SLA age; bad input never 500s."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from crm.models import AuditLog
from crm.models.enums import LeadSourceKind, LeadStatus
from crm.services.leads_query import Filters, SearchError, patient_search_clause, queue_page
from tests.factories import ConditionFactory, UserFactory, WebhookSourceFactory
from tests.test_queue_helpers import WED, make_lead

S = LeadStatus


def ids_on(html: str, leads) -> list[int]:
    """The ids of ``leads`` in the order their rows appear on the page."""
    found = [(html.find(f'href="/leads/{lead.id}"'), lead.id) for lead in leads]
    return [i for pos, i in sorted(found) if pos >= 0]


@pytest.fixture
def wednesday():
    """Wednesday 09:00 in New York (``WED``), inside business hours: list it before ``three`` so the leads
    are made then too. The SLA clock stops outside business hours, so at a weekend a lead's target
    is days away and the row reads "1d 20h left" where a weekday shows minutes."""
    with time_machine.travel(WED, tick=False) as traveller:
        yield traveller


@pytest.fixture
def three(db, specialist):
    """An old and a new unassigned lead, one of mine, one of a colleague's, one closed."""
    colleague = UserFactory(name="Colleague")
    now = datetime.now(UTC)
    old = make_lead(db, created_at=now - timedelta(hours=3), last_name="Oldfield")
    new = make_lead(db, created_at=now - timedelta(minutes=2), last_name="Newman")
    mine = make_lead(db, status=S.ATTEMPTING, assignee=specialist, last_name="Mineo")
    theirs = make_lead(db, status=S.CONTACTED, assignee=colleague, last_name="Other")
    closed = make_lead(db, status=S.LOST, last_name="Closed")
    return old, new, mine, theirs, closed


def test_unassigned_is_oldest_first_with_age_and_sla(wednesday, client, auth, specialist, three):
    old, new, mine, theirs, closed = three
    auth.as_user(specialist)
    html = client.get("/queue").get_data(as_text=True)
    assert ids_on(html, three) == [old.id, new.id]
    assert "3h" in html and "SLA" in html  # age and the speed-to-lead clock on the row
    # Created 06:00 and 08:58: the desk opens at 08:00, but the patient (Eastern) may be called from
    # 09:00, so both are due 09:15; it is 09:00 now.
    assert html.count("15m left") == 2 and "over</span>" not in html


def test_priority_goes_first_in_unassigned(client, auth, db, specialist, three):
    old, new, *_ = three
    new.priority = 5
    db.session.commit()
    auth.as_user(specialist)
    assert ids_on(client.get("/queue?view=unassigned").get_data(as_text=True), [old, new]) == [new.id, old.id]


def test_mine_and_all_views(client, auth, specialist, three):
    old, new, mine, theirs, closed = three
    auth.as_user(specialist)
    assert ids_on(client.get("/queue?view=mine").get_data(as_text=True), three) == [mine.id]
    html = client.get("/queue?view=all").get_data(as_text=True)
    assert set(ids_on(html, three)) == {lead.id for lead in three}
    # An unknown view falls back to Unassigned instead of failing.
    assert ids_on(client.get("/queue?view=bogus").get_data(as_text=True), three) == [old.id, new.id]


def test_due_view_lists_mine_first(client, auth, db, specialist, three):
    old, new, mine, theirs, closed = three
    now = datetime.now(UTC)
    theirs.next_follow_up_at = now - timedelta(hours=2)
    mine.next_follow_up_at = now - timedelta(minutes=5)
    new.next_follow_up_at = now + timedelta(days=1)  # not due yet
    db.session.commit()
    auth.as_user(specialist)
    html = client.get("/queue?view=due").get_data(as_text=True)
    assert ids_on(html, three) == [mine.id, theirs.id]
    assert "1 of these are yours" in html and "overdue" in html


def test_navigation_counts(client, auth, db, specialist, three):
    _, _, mine, _, _ = three
    mine.next_follow_up_at = datetime.now(UTC) - timedelta(minutes=1)
    db.session.commit()
    auth.as_user(specialist)
    html = client.get("/queue").get_data(as_text=True)
    assert 'title="Unassigned open leads waiting for someone">2<' in html
    assert 'Mine <span class="badge rounded-pill text-bg-secondary" title="Open leads assigned to you">1<' in html
    assert 'Due <span class="badge rounded-pill text-bg-warning" title="Your follow-ups due now or overdue">1<' in html


def test_filters(client, auth, db, specialist):
    cond = ConditionFactory(name="Dystonia")
    src = WebhookSourceFactory(name="Partner site")
    colleague = UserFactory()
    a = make_lead(db, state="FL", commit=False)
    a.condition_id = cond.id
    b = make_lead(db, state="AZ", status=S.ATTEMPTING, assignee=colleague, commit=False, timezone="America/Phoenix")
    b.source_kind, b.webhook_source_id = LeadSourceKind.WEBHOOK, src.id
    c = make_lead(db, state="HI", created_at=datetime(2026, 1, 10, 15, tzinfo=UTC), commit=False)
    db.session.commit()
    auth.as_user(specialist)

    def shown(query):
        resp = client.get("/queue?view=all&" + query)
        assert resp.status_code == 200
        return set(ids_on(resp.get_data(as_text=True), [a, b, c]))

    assert shown("state=AZ") == {b.id}
    assert shown(f"condition={cond.id}") == {a.id}
    assert shown("status=attempting") == {b.id}
    assert shown(f"source=webhook:{src.id}") == {b.id}
    assert shown("source=webhook") == {b.id}
    assert shown("source=form") == {a.id, c.id}
    assert shown(f"assignee={colleague.id}") == {b.id}
    assert shown("assignee=none") == {a.id, c.id}
    assert shown("created_from=2026-01-10&created_to=2026-01-10") == {c.id}
    assert shown("created_to=2026-01-09") == set()


def test_assignee_filter_lists_inactive_users_who_still_hold_open_leads(client, auth, db, admin):
    """Leads left with someone deactivated (before leads went back to the pool on deactivation)
    can be listed, so an admin can reassign them; inactive users with nothing open are not offered."""
    gone = UserFactory(name="Gone Gina", active=False)
    UserFactory(name="Long Gone", active=False)
    held = make_lead(db, status=S.ATTEMPTING, assignee=gone, commit=False)
    make_lead(db, status=S.LOST, assignee=UserFactory(name="Closed Carl", active=False), commit=False)
    db.session.commit()
    auth.as_user(admin)
    resp = client.get(f"/queue?view=all&assignee={gone.id}")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Not a valid choice" not in html
    assert ids_on(html, [held]) == [held.id]
    assert "Gone Gina (inactive)" in html and "Long Gone" not in html and "Closed Carl" not in html


def test_search_by_name_email_and_phone(client, auth, db, specialist):
    garcia = make_lead(db, first_name="Maria", last_name="Garcia", email="maria.g@example.com", phone="+13055550142")
    other = make_lead(db, first_name="John", last_name="Smith", email="john@example.com", phone="+13055550199")
    auth.as_user(specialist)
    queries = ["garc", "Maria Garcia", "MARIA.G@example.com", "(305) 555-0142", "305.555.0142", "+1 305 555 0142"]
    queries += ["maria.g", "Maria.G@exam"]  # the start of an email, with or without its @
    for q in queries:
        html = client.get("/queue", query_string={"view": "all", "q": q}).get_data(as_text=True)
        assert ids_on(html, [garcia, other]) == [garcia.id], q
    assert db.session.scalar(sa.select(sa.func.count()).where(AuditLog.action == "search_leads")) == len(queries)
    # A search that cannot run lists nothing (the whole queue under the error read as its results).
    html = client.get("/queue", query_string={"view": "all", "q": "3055 5501 4299 99"}).get_data(as_text=True)
    assert "Type the full phone number, or its last 4 digits" in html and ids_on(html, [garcia, other]) == []
    assert "Nothing is listed until the search can run" in html


def test_search_by_the_last_digits_of_a_phone_number(client, auth, db, specialist):
    """A voicemail or a patient who gives only the end of their number: 4 to 9 digits match the end."""
    garcia = make_lead(db, first_name="Maria", last_name="Garcia", phone="+13055550142")
    other = make_lead(db, first_name="John", last_name="Smith", phone="+13055550199")
    elsewhere = make_lead(db, first_name="Ana", last_name="Lopez", phone="+17865550142")
    no_phone = make_lead(db, first_name="Li", last_name="Wu", phone=None)
    leads = [garcia, other, elsewhere, no_phone]
    auth.as_user(specialist)
    expected = {
        "0142": [garcia, elsewhere],
        "555-0142": [garcia, elsewhere],
        "(305) 555-0142": [garcia],
        "5-5550142": [garcia],
        "0199": [other],
        "9142": [],
        "55501": [],
    }
    for q, found in expected.items():
        html = client.get("/queue", query_string={"view": "all", "q": q}).get_data(as_text=True)
        assert sorted(ids_on(html, leads)) == sorted(lead.id for lead in found), q
        ending = re.sub(r"\D", "", q)
        assert (f"Phone numbers ending in {ending}" in html) == (q != "(305) 555-0142"), q


def test_the_last_digits_search_reads_its_index(db):
    from crm.models import Patient
    from crm.services.leads_query import patient_search_clause

    stmt = sa.select(Patient.id).where(patient_search_clause("555-0142"))
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL enable_seqscan = off"))
        compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
        plan = "\n".join(db.session.scalars(sa.text(f"EXPLAIN {compiled}")))
    else:
        compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
        plan = "\n".join(row[-1] for row in db.session.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_patients_phone_last4" in plan, plan


def test_an_empty_filtered_view_says_the_filters_found_nothing(client, auth, db, specialist):
    """Mine with a search or filter that matched nothing said "You have no open leads" while the
    specialist had 24; and Mine offered Completed and Lost, which it can never list."""
    make_lead(db, last_name="Garcia", assignee=specialist, status=S.ATTEMPTING)
    auth.as_user(specialist)
    html = client.get("/queue?view=mine&q=zzz").get_data(as_text=True)
    assert "You have no open leads" not in html and "No open leads in this view match this search." in html
    assert 'href="/queue?view=mine">Clear the search</a>' in html and "look in All leads" in html
    html = client.get("/queue?view=mine&state=TX").get_data(as_text=True)
    assert "No open leads in this view match these filters." in html
    html = client.get("/queue?view=mine&status=completed").get_data(as_text=True)
    assert "Not a valid choice" in html and '<option value="completed"' not in html
    assert "Garcia" in html  # the invalid filter is ignored, the lead still listed
    html = client.get("/queue?view=all&status=completed").get_data(as_text=True)
    assert '<option selected value="completed">' in html or 'value="completed" selected' in html
    assert "No leads in this view match these filters." in html
    idle = UserFactory(name="Idle")
    db.session.commit()
    auth.logout()
    auth.as_user(idle)
    assert "You have no open leads" in client.get("/queue?view=mine&q=").get_data(as_text=True)


def test_search_finds_names_that_have_spaces_of_their_own(client, auth, db, specialist):
    cruz = make_lead(db, first_name="Ana Sofía", last_name="De La Cruz")
    mary = make_lead(db, first_name="Mary Ann", last_name="O'Neil")
    other = make_lead(db, first_name="Ana", last_name="Delgado")
    leads = [cruz, mary, other]
    auth.as_user(specialist)
    expected = {
        "de la cruz": [cruz.id],
        "Ana De La Cruz": [cruz.id],
        "ana sofía de la": [cruz.id],
        "De La Cruz, Ana": [cruz.id],
        "de la cruz ana sofia": [],  # an accent is part of the name
        "Mary Ann": [mary.id],
        "mary ann o'neil": [mary.id],
        "O'Neil Mary Ann": [mary.id],
        "ana de": [cruz.id, other.id],
        "ana del": [other.id],
        "garcia ana": [],
    }
    for q, ids in expected.items():
        html = client.get("/queue", query_string={"view": "all", "q": q}).get_data(as_text=True)
        assert sorted(ids_on(html, leads)) == sorted(ids), q


def test_bad_filter_input_gives_field_errors_not_500(client, auth, db, specialist, three):
    auth.as_user(specialist)
    cases = {
        "q=3055 5501 4299 99": "Type the full phone number",
        "created_from=yesterday": "Not a valid date value",
        "created_from=2026-02-01&created_to=2026-01-01": "The end date is before the start date.",
        "status=archived": "Not a valid choice",
        "condition=999999": "Not a valid choice",
        "assignee=someone": "Not a valid choice",
        "page=abc": "",
        "page=-4": "",
        "page=999999999": "",
        "q=" + "x" * 300: "Field cannot be longer than 100 characters.",
        "created_to=9999-12-31": "Enter a date between 2000 and 2100.",
        "created_from=0001-01-01": "Enter a date between 2000 and 2100.",
    }
    for query, message in cases.items():
        resp = client.get("/queue?view=all&" + query)
        assert resp.status_code == 200, query
        assert message in resp.get_data(as_text=True), query
    # Blanks typed into a URL mean "any", and a search ending in the highest code point is text.
    old, new, mine, theirs, closed = three
    for query in ("status=%20", "condition=%20", "source=%0d%0a%09", "assignee=%20", "state=%20", "q=%F4%8F%BF%BF"):
        resp = client.get("/queue?view=all&" + query)
        assert resp.status_code == 200, query
        if not query.startswith("q="):
            assert set(ids_on(resp.get_data(as_text=True), three)) >= {old.id, new.id, mine.id, theirs.id}, query
    # One bad filter is shown and ignored; the good ones still apply.
    resp = client.get("/queue?view=all&assignee=me&status=archived")
    assert "Not a valid choice" in resp.get_data(as_text=True)
    assert ids_on(resp.get_data(as_text=True), three) == [mine.id]


def test_pagination_is_bounded_and_counted(client, auth, db, specialist):
    now = datetime.now(UTC)
    for i in range(30):
        make_lead(db, created_at=now - timedelta(minutes=100 - i), commit=False)
    db.session.commit()
    auth.as_user(specialist)
    first = client.get("/queue?view=unassigned").get_data(as_text=True)
    assert "1–25 of 30" in first and "Page 1 of 2" in first
    assert 'data-shortcut="]">Next</a>' in first and "<kbd>[</kbd>/<kbd>]</kbd> Previous / next page" in first
    second = client.get("/queue?view=unassigned&page=2").get_data(as_text=True)
    assert "26–30 of 30" in second
    page = queue_page(db.session, "unassigned", specialist, Filters(), page=1, per_page=10)
    assert len(page.items) == 10 and page.has_next and page.total == 30 and not page.capped


@pytest.mark.parametrize("view", ["unassigned", "all", "due", "mine"])
def test_a_page_past_the_end_shows_the_last_page(client, auth, db, specialist, view):
    now = datetime.now(UTC)
    for i in range(30):
        lead = make_lead(db, created_at=now - timedelta(minutes=100 - i), commit=False)
        if view in ("due", "mine"):
            lead.assignee_id = specialist.id
            lead.next_follow_up_at = now - timedelta(minutes=i + 1)
    db.session.commit()
    auth.as_user(specialist)
    html = client.get(f"/queue?view={view}&page=40").get_data(as_text=True)
    assert "Page 2 of 2" in html and "Page 40" not in html
    assert "26–30 of 30" in html
    page = queue_page(db.session, view, specialist, Filters(), page=7, per_page=10)
    assert page.page == 3 and len(page.items) == 10


def test_counts_are_capped(db, specialist):
    from crm.services.leads_query import capped_count, view_select

    for _ in range(6):
        make_lead(db, commit=False)
    db.session.commit()
    stmt = view_select("unassigned", specialist, Filters(), datetime.now(UTC))
    assert capped_count(db.session, stmt, cap=4) == (4, True)
    assert capped_count(db.session, stmt, cap=6) == (6, False)


def test_search_clause_refuses_a_partial_phone_number():
    with pytest.raises(SearchError, match="full phone number"):
        patient_search_clause("3055 5501 4299 99")
    for too_short in ("555", "(55", "+1"):  # a name search for digits would only say "nothing matches"
        with pytest.raises(SearchError, match="at least the last 4 digits"):
            patient_search_clause(too_short)
    with pytest.raises(SearchError):
        patient_search_clause(" , ")


def test_the_queue_needs_a_login(client):
    assert client.get("/queue").status_code == 302


@pytest.mark.parametrize(("mine_n", "others_n"), [(3, 4), (0, 5), (4, 0), (2, 2)])
def test_due_pages_list_mine_first_without_gaps(db, specialist, mine_n, others_n):
    colleague = UserFactory()
    now = datetime.now(UTC)
    mine, others = [], []
    for i in range(mine_n + others_n):
        lead = make_lead(db, status=S.ATTEMPTING, assignee=specialist if i < mine_n else colleague, commit=False)
        lead.next_follow_up_at = now - timedelta(minutes=100 - i)
        (mine if i < mine_n else others).append(lead.id)
    db.session.commit()
    seen, page_no = [], 1
    while True:
        page = queue_page(db.session, "due", specialist, Filters(), page=page_no, per_page=2, now=now)
        assert page.total == mine_n + others_n and page.mine_count == mine_n and not page.capped
        seen += [lead.id for lead in page.items]
        if not page.has_next:
            break
        page_no += 1
    assert seen == mine + others


def test_a_search_matching_too_many_patients_asks_for_more(client, auth, db, specialist):
    from crm.services import leads_query

    for i in range(4):
        make_lead(db, last_name=f"Smith{i}", commit=False)
    db.session.commit()
    with pytest.raises(SearchError, match="More than 3 patients match 'smi'"):
        leads_query.search_patient_ids(db.session, Filters(q="smi"), cap=3)
    auth.as_user(specialist)
    html = client.get("/queue?view=all&q=Smith2").get_data(as_text=True)
    assert "Smith2" in html


@pytest.mark.parametrize("q", ["Ri%00vers", "ri%00@example.com"])
def test_a_nul_character_in_a_search_is_never_a_500(client, auth, db, specialist, q):
    make_lead(db, last_name="Rivers")
    auth.as_user(specialist)
    resp = client.get(f"/queue?view=all&q={q}")
    assert resp.status_code in (200, 400)  # SQLite searches for it; PostgreSQL cannot store it: a 400


def test_every_queue_page_is_audited_with_the_leads_it_showed(client, auth, db, specialist):
    from crm.admin.audit import audit_select

    shown = [make_lead(db) for _ in range(3)]
    auth.as_user(specialist)
    assert client.get("/queue?view=unassigned").status_code == 200
    row = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "view_queue")).one()
    assert row.user_id == specialist.id and row.detail["results"] == 3
    assert all(f",{lead.id}," in row.detail["leads"] for lead in shown)
    # "Who saw this patient?": the audit trail's filter by lead finds the page that listed it ...
    found = db.session.scalars(audit_select(object_type="lead", object_id=str(shown[0].id))).all()
    assert row in found
    # ... and not for a lead it did not show (no prefix matches: lead 1 is not lead 11)
    assert row not in db.session.scalars(audit_select(object_id=str(max(lead.id for lead in shown) * 10 + 1))).all()


def test_the_navigation_marks_the_page_you_are_on(client, auth, db, specialist):
    import re

    lead = make_lead(db, assignee=specialist)
    auth.as_user(specialist)

    def active(path):
        html = client.get(path).get_data(as_text=True)
        html = html[html.index('aria-label="Main"') : html.index("</nav>")]  # the main navigation only
        return [
            re.sub(r"<[^>]+>|\s+", " ", m).split()[0]
            for m in re.findall(r'class="nav-link active"[^>]*>(.*?)</a>', html, re.S)
        ]

    assert active("/queue") == ["Queue"]
    assert active("/queue?view=all") == ["Queue"]
    assert active("/queue?view=mine") == ["Mine"]
    assert active("/queue?view=due") == ["Due"]
    assert active(f"/leads/{lead.id}") == ["Queue"]
    assert active("/notifications") == []


def test_labels_spell_words_as_people_do():
    from crm.templating import humanize

    assert humanize("cbd_only") == "CBD only"
    assert humanize("sms") == "SMS"
    assert humanize("follow_up_due") == "Follow-up due"
    assert humanize("in_person") == "In person"
    assert humanize(None) == ""


def test_mine_puts_what_needs_doing_first(client, auth, db, specialist):
    """Overdue follow-ups, then leads with no next step (a new lead past its first-contact target
    among them), then upcoming follow-ups, and booked leads with nothing planned last."""
    now = datetime.now(UTC)

    def lead(status, follow_up_in=None, age_hours=1):
        made = make_lead(
            db, status=status, assignee=specialist, created_at=now - timedelta(hours=age_hours), commit=False
        )
        made.next_follow_up_at = None if follow_up_in is None else now + follow_up_in
        return made

    booked = lead(LeadStatus.BOOKED, age_hours=50)
    upcoming = lead(LeadStatus.CONTACTED, timedelta(days=2), age_hours=40)
    waiting_new = lead(LeadStatus.NEW, age_hours=11)
    no_step = lead(LeadStatus.CONTACTED, age_hours=3)
    overdue = lead(LeadStatus.ATTEMPTING, -timedelta(minutes=30), age_hours=2)
    db.session.commit()
    expected = [overdue.id, waiting_new.id, no_step.id, upcoming.id, booked.id]
    auth.as_user(specialist)
    html = client.get("/queue?view=mine").get_data(as_text=True)
    assert [html.index(f'href="/leads/{i}"') for i in expected] == sorted(
        html.index(f'href="/leads/{i}"') for i in expected
    )
    pages = [queue_page(db.session, "mine", specialist, Filters(), page=n, per_page=2, now=now) for n in (1, 2, 3)]
    assert [[x.id for x in p.items] for p in pages] == [expected[:2], expected[2:4], expected[4:]]
    assert [p.has_next for p in pages] == [True, True, False] and pages[0].total == 5


@pytest.mark.parametrize("q", ["ñúñez", "Ñúñez", "ÑÚÑEZ", "élodie ñúñez", "Ñúñez, Élodie", "ÉLO"])
def test_names_with_accented_capitals_are_found_whatever_the_case(client, auth, db, specialist, q):
    """SQLite's own lower() folds ASCII only; the app's connections use a Unicode-aware one."""
    lead = make_lead(db, first_name="Élodie", last_name="Ñúñez")
    make_lead(db, first_name="Elodie", last_name="Nunez")  # not the same letters
    auth.as_user(specialist)
    page = queue_page(db.session, "all", specialist, Filters(q=q))
    assert [x.id for x in page.items] == [lead.id]


def test_the_shift_toggle_is_for_specialists_only(client, auth, db, specialist, admin):
    """Auto-assignment deals leads to on-shift specialists; an admin's toggle would promise
    leads that never come."""
    auth.as_user(specialist)
    page = client.get("/queue").get_data(as_text=True)
    assert "Off shift — start" in page
    # Off shift after signing in again (signing out ends a shift): the queue says so in words.
    assert "You are off shift:</strong> no new leads are assigned to you." in page and "Start my shift" in page
    specialist.on_shift = True
    db.session.commit()
    page = client.get("/queue").get_data(as_text=True)
    assert "You are off shift" not in page
    assert 'data-confirm="End your shift? New leads stop coming to you until you start it again."' in page
    auth.logout()
    auth.as_user(admin)
    page = client.get("/queue").get_data(as_text=True)
    assert "Off shift — start" not in page and "You are off shift" not in page


def test_mine_pages_reach_every_lead_of_a_part_longer_than_the_count_cap(db, specialist, monkeypatch):
    from crm.services import leads_query

    monkeypatch.setattr(leads_query, "COUNT_CAP", 3)
    monkeypatch.setattr(leads_query.capped_count, "__defaults__", (3,))  # as if 500 were 3
    now = datetime.now(UTC)
    made = [
        make_lead(db, assignee=specialist, created_at=now - timedelta(hours=20 - i), commit=False) for i in range(8)
    ]
    db.session.commit()
    seen = []
    for n in range(1, 5):
        page = queue_page(db.session, "mine", specialist, Filters(), page=n, per_page=2, now=now)
        seen += [x.id for x in page.items]
        assert page.has_next == (n < 4) or page.capped
    assert seen == [lead.id for lead in made]


def row_html(html: str, lead_id: int) -> str:
    """The queue row of one lead."""
    return next(row for row in re.findall(r"<tr.*?</tr>", html, re.S) if f"#{lead_id}</span>" in row)


def test_the_queue_shows_who_cannot_be_called_yet_and_from_when(client, auth, db, specialist):
    early = datetime(2026, 11, 18, 12, 30, tzinfo=UTC)  # 07:30 in New York, 04:30 in Los Angeles
    with time_machine.travel(early, tick=False):
        east = make_lead(db, first_name="Early", last_name="East", timezone="America/New_York")
        west = make_lead(db, first_name="Earlier", last_name="West", timezone="America/Los_Angeles")
        auth.as_user(specialist)
        html = client.get("/queue?view=unassigned").get_data(as_text=True)
    rows = {lead.id: row_html(html, lead.id) for lead in (east, west)}
    assert "07:30 AM EST" in rows[east.id] and "calls 9 AM" in rows[east.id]
    assert "04:30 AM PST" in rows[west.id] and "calls 9 AM" in rows[west.id]
    with time_machine.travel(datetime(2026, 11, 18, 15, 0, tzinfo=UTC), tick=False):  # 10:00 / 07:00
        auth.as_user(specialist)
        html = client.get("/queue?view=unassigned").get_data(as_text=True)
    assert "calls" not in row_html(html, east.id) and "calls 9 AM" in row_html(html, west.id)


def test_a_reversed_created_range_is_ignored_as_the_message_says(client, auth, db, specialist, three):
    """A "to" before "from" said "the list below ignores the filters" yet kept the start date alone,
    which listed nothing ("0 leads"). Like any invalid filter it is now ignored, both dates of it,
    and the other filters still apply."""
    old, new, mine, theirs, closed = three
    auth.as_user(specialist)
    html = client.get("/queue?view=all&created_from=2099-01-03&created_to=2099-01-01").get_data(as_text=True)
    assert "The end date is before the start date." in html
    assert "ignores both dates until corrected" in html
    assert set(ids_on(html, three)) == {lead.id for lead in three}
    assert "0 leads" not in html and "match these filters" not in html
    assert re.search(r'<input class="[^"]*is-invalid[^"]*" id="created_from"', html)  # both dates marked
    html = client.get("/queue?view=all&assignee=me&created_from=2099-01-03&created_to=2099-01-01").get_data(
        as_text=True
    )
    assert ids_on(html, three) == [mine.id]
    # A valid range still filters, and one bad date alone leaves the good one in force.
    html = client.get("/queue?view=all&created_from=2099-01-01&created_to=2099-01-03").get_data(as_text=True)
    assert ids_on(html, three) == [] and "match these filters" in html
    html = client.get("/queue?view=all&created_from=2099-01-01&created_to=yesterday").get_data(as_text=True)
    assert ids_on(html, three) == [] and "ignores this filter until corrected" in html


def test_the_unassigned_view_has_no_assignee_column(client, auth, db, specialist, three):
    """Every row of Unassigned said "Unassigned" in an Assignee column of its own."""
    auth.as_user(specialist)
    html = client.get("/queue?view=unassigned").get_data(as_text=True)
    assert '<th scope="col">Assignee</th>' not in html and ids_on(html, three)
    assert ">Unassigned</span></td>" not in html
    html = client.get("/queue?view=unassigned&q=zzz").get_data(as_text=True)
    assert 'colspan="7"' in html  # the empty row spans the columns there are
    for view in ("mine", "due", "all"):
        html = client.get(f"/queue?view={view}").get_data(as_text=True)
        assert '<th scope="col">Assignee</th>' in html, view


def shortcuts(html: str) -> dict[str, str]:
    """``data-shortcut`` key → the text of the element it works (its label, or the field's id)."""
    found = {}
    for m in re.finditer(r"<(\w+)([^>]*?)data-shortcut=\"([^\"]+)\"([^>]*)>(.*?)<", html, re.S):
        found[m.group(3)] = m.group(5).strip() or re.sub(r'.*id="([^"]+)".*', r"\1", m.group(2) + m.group(4))
    return found


def test_a_key_means_the_same_on_the_queue_and_the_lead_page(client, auth, db, specialist, three):
    """The key "a" was All on the queue and Assign to me on a lead page: pressed for All on a lead, it took
    the lead. The queue's All is "l"; the keys both pages have do the same thing on both."""
    old, *_ = three
    auth.as_user(specialist)
    queue = client.get("/queue?view=unassigned").get_data(as_text=True)
    lead = client.get(f"/leads/{old.id}").get_data(as_text=True)
    on_queue, on_lead = shortcuts(queue), shortcuts(lead)
    assert on_queue["l"] == "All" and "a" not in on_queue
    assert on_lead["a"].startswith("Assign to me")
    assert set(on_queue) & set(on_lead) == {"n"}  # Get next lead on both
    assert "<kbd>l</kbd> All" in queue and "<kbd>a</kbd>" not in queue


@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 1440])
def test_filters_show_their_whole_text_and_rows_stay_one_line(live_server, page, db, specialist, width):
    """At 1280 px eight filters in one row cut "Any status" to "Any statu", wrapped the search label,
    and the patient column wrapped name and #id onto two or three lines."""
    from tests.factories import PASSWORD

    for i in range(5):
        make_lead(db, first_name="Alexandria", last_name=f"Montgomery-Smith{i}", commit=False)
    db.session.commit()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill(specialist.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/queue**")
    for view in ("unassigned", "all"):
        page.goto(f"{live_server.url}/queue?view={view}")
        cut = page.evaluate(
            """() => Array.from(document.querySelectorAll('.queue-filters select')).filter(s => {
                 const c = document.createElement('canvas').getContext('2d');
                 c.font = getComputedStyle(s).font;
                 return c.measureText(s.options[s.selectedIndex].text).width + 36 > s.clientWidth;
               }).map(s => s.name)"""
        )
        assert cut == [], (view, cut)
        label = page.locator("label[for=q]").bounding_box()
        assert label["height"] < 30, label  # one line
        heights = page.evaluate(
            "() => Array.from(document.querySelectorAll('.table-queue tbody tr')).map(r => r.offsetHeight)"
        )
        assert heights and max(heights) < 55, (view, heights)
        wrap = page.locator(".table-queue").evaluate("t => [t.scrollWidth, t.parentElement.clientWidth]")
        assert wrap[0] <= wrap[1], wrap  # the Age · SLA column is in sight


def test_mine_and_unassigned_have_no_assignee_filter_to_contradict_them(client, auth, db, specialist):
    held = make_lead(db, status=S.ATTEMPTING, assignee=specialist)
    waiting = make_lead(db, status=S.NEW, assignee=None)
    auth.as_user(specialist)
    mine = client.get("/queue?view=mine&assignee=none").get_data(as_text=True)
    assert ids_on(mine, [held, waiting]) == [held.id] and 'id="assignee"' not in mine
    pool = client.get(f"/queue?view=unassigned&assignee={specialist.id}").get_data(as_text=True)
    assert ids_on(pool, [held, waiting]) == [waiting.id] and 'id="assignee"' not in pool
    assert 'id="assignee"' in client.get("/queue?view=all").get_data(as_text=True)
