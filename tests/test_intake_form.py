"""Public pages and the request form: validation, idempotency, honeypot, CSRF, rate limit, no PII in logs."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from html import unescape
from pathlib import Path

import pytest
import sqlalchemy as sa

from crm.intake.forms import CONSENT_TEXT
from crm.intake.routes import wait_words
from crm.models import InboxItem, Lead, LeadEvent, Patient
from crm.models.enums import EventKind, InboxChannel, InboxStatus, LeadSourceKind
from crm.services.sources import sign_payload
from tests.factories import ConditionFactory, WebhookSourceFactory


@pytest.fixture
def conditions(db):
    dystonia = ConditionFactory(
        name="Dystonia",
        slug="dystonia",
        synonyms=["muscle spasms", "cervical dystonia"],
        summary="Involuntary muscle contractions.",
        body="## What it is\n\nOur own words about dystonia.\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1))",
    )
    pain = ConditionFactory(name="Chronic pain", slug="chronic-pain", synonyms=["back pain"])
    ConditionFactory(name="Hidden thing", slug="hidden-thing", published=False)
    db.session.commit()
    return dystonia, pain


def token_of(html: str) -> str:
    return re.search(r'name="idempotency_token" type="hidden" value="([^"]+)"', html).group(1)


def form_data(**overrides) -> dict:
    data = {
        "first_name": "Casey",
        "last_name": "Morgan",
        "email": "Casey.Morgan@Example.com",
        "phone": "305.555.0123",
        "zip": "33101-1234",
        "street": "",
        "city": "Miami",
        "condition": "dystonia",
        "condition_text": "",
        "preferred_mode": "telehealth",
        "preferred_contact_method": "text",
        "preferred_contact_time": "evening",
        "message": "Please text after 6.",
        "consent": "y",
        "website": "",
        "idempotency_token": "0123456789abcdef0123456789abcdef",
    }
    data.update(overrides)
    return data


# ---------------------------------------------------------------- pages


def test_condition_list_is_searchable_and_only_published(client, conditions):
    html = client.get("/conditions").get_data(as_text=True)
    assert "Dystonia" in html and "Chronic pain" in html and "Hidden thing" not in html
    html = client.get("/conditions?q=spasms").get_data(as_text=True)
    assert "Dystonia" in html and "Chronic pain" not in html
    html = client.get("/conditions?q=zzz").get_data(as_text=True)
    assert "could not find" in html and "/request" in html


def test_condition_list_is_alphabetical_whatever_the_case(client, db):
    for name in ("PTSD", "Parkinson's disease", "anxiety"):
        ConditionFactory(name=name, published=True)
    db.session.commit()
    html = client.get("/conditions").get_data(as_text=True)
    assert html.index("anxiety") < html.index("Parkinson&#39;s disease") < html.index("PTSD")


def test_condition_search_matches_word_starts_best_first_and_suggests_close_spellings(client, db):
    ConditionFactory(name="Multiple sclerosis", slug="multiple-sclerosis", synonyms=["ms"], summary="Nerve damage.")
    ConditionFactory(name="Chronic pain", slug="chronic-pain", synonyms=["back pain"], summary="Ongoing symptoms.")
    ConditionFactory(name="Migraine", slug="migraine", synonyms=["headaches"], summary="Severe headaches.")
    ConditionFactory(name="Painful neuropathy", slug="neuropathy", summary="Nerve pain.")
    ConditionFactory(name="Cancer", slug="cancer", summary="Pain and nausea from cancer or its treatment.")
    db.session.commit()

    def found(q: str) -> list[str]:
        html = client.get("/conditions", query_string={"q": q}).get_data(as_text=True)
        return re.findall(r'class="condition-card[^"]*"[^>]*>\s*<[^>]*>([^<]+)<', html)

    assert found("ms") == ["Multiple sclerosis"]  # not every summary that says "symptoms"
    assert found("—") == []  # only a symbol: nothing found, not everything
    assert "could not find" in client.get("/conditions?q=%E2%80%94").get_data(as_text=True)
    # the name first, then a name that starts the same, then the summaries
    assert found("pain,") == ["Chronic pain", "Painful neuropathy", "Cancer"]
    html = client.get("/conditions?q=migrane").get_data(as_text=True)
    assert 'it sounds like <a href="/conditions/migraine">Migraine</a>' in html


def test_condition_page_renders_safe_markdown_and_preselects_the_condition(client, conditions):
    resp = client.get("/conditions/dystonia?utm_source=ads&utm_campaign=fall")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "<h2>What it is</h2>" in html and "Our own words about dystonia." in html
    assert "<script>alert" not in html and "javascript:" not in html
    assert "Book Appointment" in html and "Back to List" in html
    assert re.search(r'<option selected value="dystonia">|<option value="dystonia" selected>', html)
    assert 'name="utm_source" type="hidden" value="ads"' in html
    assert "Leave this field empty" in html  # the honeypot is there (hidden by CSS)
    assert CONSENT_TEXT[:40] in html
    assert "navbar" not in html  # no staff navigation on public pages
    # The header's button goes to this page's own form (the condition chosen), not an empty /request.
    assert '<a class="btn btn-sm btn-light" href="#request">Request an appointment</a>' in html
    other_page = client.get("/conditions").get_data(as_text=True)
    assert '<a class="btn btn-sm btn-light" href="/request">Request an appointment</a>' in other_page


def test_unpublished_or_unknown_condition_is_404(client, conditions):
    assert client.get("/conditions/hidden-thing").status_code == 404
    assert client.get("/conditions/nope").status_code == 404


@pytest.mark.parametrize("path", ["/conditions/DYSTONIA", "/conditions/Dystonia", "/conditions/dystonia/"])
def test_a_condition_address_in_capitals_or_with_a_trailing_slash_goes_to_its_page(client, conditions, path):
    resp = client.get(path + "?utm_source=ads")
    assert resp.status_code == 301 and resp.headers["Location"] == "/conditions/dystonia?utm_source=ads"
    assert client.get("/conditions/DYSTONIA/").headers["Location"] == "/conditions/dystonia"
    # a form posted there is posted again to the page, not turned into a GET that drops it
    assert client.post(path, data=form_data()).status_code == 308


@pytest.mark.parametrize(
    "path", ["/conditions/NOPE", "/conditions/nope/", "/conditions/HIDDEN-THING", "/conditions/hidden-thing/"]
)
def test_an_unknown_or_unpublished_condition_in_any_spelling_stays_404(client, conditions, path):
    assert client.get(path).status_code == 404


def test_request_page_has_a_condition_picker(client, conditions):
    html = client.get("/request?condition=chronic-pain").get_data(as_text=True)
    assert "Choose a condition" in html and 'value="chronic-pain" selected' in html.replace(
        '<option selected value="chronic-pain"', '<option value="chronic-pain" selected'
    )


def test_thank_you_says_what_happens_next(client):
    html = client.get("/thank-you").get_data(as_text=True)
    assert "What happens next" in html or "what happens next" in html


def test_pages_name_our_own_icon(client, conditions):
    html = client.get("/conditions").get_data(as_text=True)
    assert 'rel="icon" href="/static/favicon.svg"' in html
    assert client.get("/static/favicon.svg").status_code == 200


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


# ---------------------------------------------------------------- a good submission


def test_submission_creates_patient_lead_and_inbox_item(client, db, conditions):
    resp = client.post(
        "/conditions/dystonia",
        data=form_data(landing_page_url="http://localhost/conditions/dystonia?utm_source=ads", utm_source="ads"),
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert resp.status_code == 302 and resp.location.endswith("/thank-you")
    lead = db.session.scalar(sa.select(Lead))
    p = lead.patient
    assert (p.first_name, p.email, p.phone, p.zip) == (
        "Casey",
        "casey.morgan@example.com",
        "+13055550123",
        "33101-1234",
    )
    assert p.preferred_contact_method == "text" and p.preferred_contact_time == "evening"
    assert p.consent_text == CONSENT_TEXT and p.consent_ip == "203.0.113.7" and p.consent_at is not None
    assert lead.condition.slug == "dystonia" and lead.preferred_mode == "telehealth"
    assert lead.source_kind == LeadSourceKind.FORM and lead.utm_source == "ads"
    assert lead.landing_page_url.startswith("http://localhost/conditions/dystonia")
    assert lead.sla_due_at is not None
    item = db.session.scalar(sa.select(InboxItem))
    assert item.channel == InboxChannel.FORM and item.status == InboxStatus.ACCEPTED and item.lead_id == lead.id
    assert item.dedupe_key == "form:0123456789abcdef0123456789abcdef"
    assert "csrf_token" not in json.loads(item.body)


def test_invisible_characters_in_a_patients_name_are_dropped(client, db, conditions):
    data = form_data(first_name="\u202eCasey\u200b", last_name="Mor\u2060gan\ufeff")
    assert client.post("/conditions/dystonia", data=data).status_code == 302
    p = db.session.scalar(sa.select(Lead)).patient
    assert (p.first_name, p.last_name) == ("Casey", "Morgan")


@pytest.mark.parametrize("typed", ["33101 1234", "33101\u20131234", "331011234"])
def test_a_zip_plus_4_written_with_a_space_or_a_typographic_dash_is_taken(client, db, conditions, typed):
    assert client.post("/conditions/dystonia", data=form_data(zip=typed)).status_code == 302
    assert db.session.scalar(sa.select(Patient)).zip == "33101-1234"


def test_the_patient_picks_the_language_we_should_speak(client, db, conditions):
    page = client.get("/conditions/dystonia").get_data(as_text=True)
    assert "Language we should speak" in page and "Español (Spanish)" in page
    assert '<option selected value="any">Any time (no preference)</option>' in page
    assert client.post("/conditions/dystonia", data=form_data(language="es")).status_code == 302
    assert db.session.scalar(sa.select(Patient)).language == "es"
    bad = client.post("/conditions/dystonia", data=form_data(language="xx-not", idempotency_token="e" * 32))
    assert bad.status_code == 200 and "Not a valid choice" in bad.get_data(as_text=True)


def test_a_returning_patients_answers_on_file_survive_the_forms_untouched_defaults(client, db, conditions):
    # First request in Spanish, by text, in the evening; the second sends the form as it starts.
    first = form_data(language="es", preferred_contact_method="text", preferred_contact_time="evening")
    assert client.post("/conditions/dystonia", data=first).status_code == 302
    again = form_data(
        idempotency_token="a" * 32, language="en", preferred_contact_method="phone", preferred_contact_time="any"
    )
    assert client.post("/conditions/dystonia", data=again).status_code == 302
    patient = db.session.scalar(sa.select(Patient))
    assert (patient.language, patient.preferred_contact_method, patient.preferred_contact_time) == (
        "es",
        "text",
        "evening",
    )
    # An answer the patient changed is still taken.
    changed = form_data(idempotency_token="b" * 32, language="vi", preferred_contact_method="email")
    assert client.post("/conditions/dystonia", data=changed).status_code == 302
    db.session.expire_all()
    patient = db.session.scalar(sa.select(Patient))
    assert (patient.language, patient.preferred_contact_method) == ("vi", "email")


def test_double_submit_with_the_same_token_makes_one_lead(client, db, conditions):
    for _ in range(3):
        assert client.post("/conditions/dystonia", data=form_data()).status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 1
    statuses = db.session.scalars(sa.select(InboxItem.status).order_by(InboxItem.id)).all()
    assert statuses == [InboxStatus.ACCEPTED, InboxStatus.DUPLICATE, InboxStatus.DUPLICATE]


def test_the_same_page_sent_again_with_a_corrected_phone_is_not_lost_as_a_double_click(client, db, conditions):
    client.post("/conditions/dystonia", data=form_data())
    corrected = form_data(phone="305-555-0199")  # back button, same token, phone corrected
    for _ in range(2):  # ... and double-clicked
        assert client.post("/conditions/dystonia", data=corrected).status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 1
    statuses = db.session.scalars(sa.select(InboxItem.status).order_by(InboxItem.id)).all()
    assert statuses == [InboxStatus.ACCEPTED, InboxStatus.RESUBMITTED, InboxStatus.DUPLICATE]
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert folded.data["details_sent"] == {"phone": "+13055550199"}
    assert db.session.scalars(sa.select(InboxItem.error).order_by(InboxItem.id)).all()[-1] is None


def test_a_new_token_within_24h_is_folded_as_resubmitted(client, db, conditions):
    client.post("/conditions/dystonia", data=form_data())
    client.post("/conditions/dystonia", data=form_data(idempotency_token="f" * 32, message="Still waiting"))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 1
    kinds = db.session.scalars(sa.select(LeadEvent.kind).order_by(LeadEvent.id)).all()
    assert kinds == [EventKind.CREATED, EventKind.RESUBMITTED]


def test_free_text_condition_is_mapped_through_synonyms(client, db, conditions):
    resp = client.post("/request", data=form_data(condition="other", condition_text="Back pain, mostly lower"))
    assert resp.status_code == 302
    lead = db.session.scalar(sa.select(Lead))
    assert lead.condition.slug == "chronic-pain" and lead.condition_text == "Back pain, mostly lower"


@pytest.mark.parametrize(
    ("typed", "slug"),
    [
        ("muscle spasm", "dystonia"),  # a synonym in the singular
        ("Back pains at night", "chronic-pain"),  # in the plural, inside the text
        ("spasms", "dystonia"),  # starts a word of one condition's synonyms, as the search finds it
        ("Dystonias", "dystonia"),
        ("pain", None),  # what the search finds in two conditions' names is not a guess we make
        ("dys", None),  # a word this short starts too many others
    ],
)
def test_free_text_the_condition_search_would_find_is_mapped_too(client, db, conditions, typed, slug):
    ConditionFactory(name="Neuropathic pain", slug="neuropathic-pain")
    db.session.commit()
    resp = client.post("/request", data=form_data(condition="other", condition_text=typed))
    assert resp.status_code == 302
    lead = db.session.scalar(sa.select(Lead))
    assert (lead.condition.slug if lead.condition else None) == slug and lead.condition_text == typed


def test_free_text_that_matches_nothing_is_kept_as_text(client, db, conditions):
    client.post("/request", data=form_data(condition="", condition_text="something rare"))
    lead = db.session.scalar(sa.select(Lead))
    assert lead.condition_id is None and lead.condition_text == "something rare"


def test_honeypot_submission_is_stored_whole_as_spam_and_makes_no_lead(client, db, conditions):
    resp = client.post("/conditions/dystonia", data=form_data(website="http://spam.example.com"))
    assert resp.status_code == 302 and resp.location.endswith("/thank-you")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 0
    item = db.session.scalar(sa.select(InboxItem))
    assert item.status == InboxStatus.SPAM and "honeypot" in item.error and "Replay" in item.error
    body = json.loads(item.body)
    assert body["email"] == "Casey.Morgan@Example.com" and body["condition"] == "Dystonia"
    assert body["website"] == "http://spam.example.com" and body["consent"] is True
    assert item.webhook_id == "0123456789abcdef0123456789abcdef" and item.dedupe_key is None


def test_a_real_patient_caught_by_the_honeypot_is_replayed_from_the_inbox(client, db, conditions, admin, auth):
    client.post("/conditions/dystonia", data=form_data(website="casey.example.com"))  # autofill, say
    item = db.session.scalar(sa.select(InboxItem))
    auth.as_user(admin)
    listing = client.get("/admin/inbox?status=spam").get_data(as_text=True)
    assert f"/admin/inbox/{item.id}" in listing and "Spam" in listing
    page = client.get(f"/admin/inbox/{item.id}").get_data(as_text=True)
    assert "Caught by the honeypot" in page and f"/admin/inbox/{item.id}/replay" in page
    assert client.post(f"/admin/inbox/{item.id}/replay").status_code == 302
    db.session.expire_all()
    item = db.session.get(InboxItem, item.id)
    lead = db.session.scalar(sa.select(Lead))
    assert item.status == InboxStatus.ACCEPTED and item.lead_id == lead.id and item.error is None
    assert lead.patient.email == "casey.morgan@example.com" and lead.condition.slug == "dystonia"
    assert lead.patient.consent_text == CONSENT_TEXT


# ---------------------------------------------------------------- every bad input


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"first_name": ""}, "first_name", "Enter your first name"),
        ({"last_name": ""}, "last_name", "Enter your last name"),
        ({"first_name": "a" * 101}, "first_name", "at most 100"),
        ({"last_name": "b" * 101}, "last_name", "at most 100"),
        ({"email": ""}, "email", "Enter your email"),
        ({"email": "casey@"}, "email", "valid email"),
        ({"email": "casey@example"}, "email", "valid email"),
        ({"phone": ""}, "phone", "Enter a phone number"),
        ({"phone": "12345"}, "phone", "valid phone number"),
        ({"phone": "(555) 000-0000"}, "phone", "valid phone number"),
        ({"zip": ""}, "zip", "Enter your ZIP"),
        ({"zip": "3310"}, "zip", "5-digit ZIP"),
        ({"zip": "33101-12"}, "zip", "5-digit ZIP"),
        ({"zip": "abcde"}, "zip", "5-digit ZIP"),
        ({"message": "m" * 2001}, "message", "at most 2,000"),
        ({"street": "s" * 201}, "street", "at most 200"),
        ({"consent": ""}, "consent", "agree to be contacted"),
        # Only a tick is a consent: a crafted "0", "no" or "off" was stored as one, with its time and IP.
        ({"consent": "0"}, "consent", "agree to be contacted"),
        ({"consent": "no"}, "consent", "agree to be contacted"),
        ({"consent": "off"}, "consent", "agree to be contacted"),
        ({"condition": "", "condition_text": ""}, "condition", "Choose a condition"),
        ({"condition": "no-such-condition"}, "condition", "Choose a condition"),
        ({"preferred_mode": "teleport"}, "preferred_mode", "Not a valid choice"),
        ({"preferred_contact_method": "pigeon"}, "preferred_contact_method", "Not a valid choice"),
    ],
)
def test_bad_input_reshows_the_form_with_the_error_and_every_typed_value(
    client, db, conditions, overrides, field, message
):
    data = form_data(**overrides)
    resp = client.post("/conditions/dystonia", data=data)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert message in html, html[html.find("invalid-feedback") - 300 : html.find("invalid-feedback") + 300]
    assert "Please check the fields marked below" in html
    for name in ("first_name", "last_name", "email", "phone", "zip", "city"):
        if name not in overrides and data[name]:
            assert f'value="{data[name]}"' in html, name
    if "message" not in overrides:
        assert "Please text after 6." in html
    assert f'value="{data["idempotency_token"]}"' in html  # the token survives, so a later submit is still one lead
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0


def test_errors_are_summarised_and_tied_to_their_fields_for_assistive_technology(client, db, conditions):
    html = client.post("/conditions/dystonia", data=form_data(zip="3310", consent="")).get_data(as_text=True)
    summary = html.split("data-focus-on-load")[1].split("</div>")[0]
    assert '<a href="#zip">ZIP code</a>' in summary and '<a href="#consent">Agreement to be contacted</a>' in summary
    consent = re.search(r"<input[^>]*id=\"consent\"[^>]*>", html).group(0)
    assert 'aria-invalid="true"' in consent and 'aria-describedby="consent-err"' in consent
    zip_input = re.search(r"<input[^>]*id=\"zip\"[^>]*>", html).group(0)
    assert 'aria-required="true"' in zip_input and 'aria-describedby="zip-err"' in zip_input
    street = re.search(r"<input[^>]*id=\"street\"[^>]*>", html).group(0)
    assert 'aria-describedby="street-help"' in street and "aria-required" not in street
    assert html.count('id="zip-err"') == 1
    # the visit-mode radios are one group: the summary's link lands on it and its error is tied to it
    html = client.post("/request", data=form_data(preferred_mode="teleport")).get_data(as_text=True)
    assert '<a href="#preferred_mode">' in html
    assert re.search(r'<fieldset[^>]*id="preferred_mode"[^>]*aria-describedby="preferred_mode-err"', html)


def test_the_condition_is_marked_required_like_the_other_required_fields(client, conditions):
    html = client.get("/request").get_data(as_text=True)
    assert re.search(r'<label class="form-label" for="condition">Condition <span class="text-danger"', html)
    assert 'aria-required="true"' in re.search(r'<select[^>]*id="condition"[^>]*>', html).group(0)


def test_something_else_without_words_is_flagged_at_the_text_box(client, db, conditions):
    html = client.post("/request", data=form_data(condition="other", condition_text=" ")).get_data(as_text=True)
    box = re.search(r'<input[^>]*id="condition_text"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in box and 'aria-describedby="condition_text-help condition_text-err"' in box
    assert "Describe your condition in a few words" in html.split('id="condition_text-err"')[1].split("</div>")[0]
    picker = re.search(r'<select[^>]*id="condition"[^>]*>', html).group(0)
    assert "aria-invalid" not in picker and 'id="condition-err"' not in html
    summary = html.split("data-focus-on-load")[1].split("</div>")[0]
    assert '<a href="#condition_text">' in summary and '<a href="#condition">' not in summary
    # nothing picked and nothing typed: the list is where the answer is missing
    html = client.post("/request", data=form_data(condition="", condition_text="")).get_data(as_text=True)
    assert "Choose a condition, or describe it in your own words." in html.split('id="condition-err"')[1]
    assert 'id="condition_text-err"' not in html
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 0


def test_a_form_sent_back_with_errors_says_so_first_in_the_page_title(make_app, client, db, conditions):
    def title(resp) -> str:
        return re.search(r"<title>(.*?)</title>", resp.get_data(as_text=True), re.S).group(1).strip()

    assert title(client.get("/conditions/dystonia")) == "Dystonia · Appointment Desk"
    assert title(client.post("/conditions/dystonia", data=form_data(zip="1"))) == "Error: Dystonia · Appointment Desk"
    resp = client.post("/request", data=form_data(email=""))
    assert title(resp) == "Error: Request an appointment · Appointment Desk"
    assert title(client.get("/request")) == "Request an appointment · Appointment Desk"
    assert title(client.get("/conditions")) == "Conditions we help with · Appointment Desk"
    # a form sent back with a notice instead (the security token expired) is one too
    expired = make_app(WTF_CSRF_ENABLED=True).test_client().post("/request", data=form_data(csrf_token="stale"))
    assert title(expired) == "Error: Request an appointment · Appointment Desk"


def _css_rule(css: str, selector: str) -> dict[str, str]:
    """The declarations of every rule with exactly this selector, later ones winning (the cascade)."""
    declared: dict[str, str] = {}
    for body in re.findall(r"(?:^|\n)" + re.escape(selector) + r" \{([^}]*)\}", css):
        declared.update((k.strip(), v.strip()) for k, _, v in (d.partition(":") for d in body.split(";") if d.strip()))
    return declared


def _contrast(fg: str, bg: str) -> float:
    """The WCAG contrast ratio of two colours written #rrggbb or "r, g, b"."""

    def luminance(colour: str) -> float:
        colour = colour.strip().lstrip("#")
        rgb = [int(c) for c in colour.split(",")] if "," in colour else [int(colour[i : i + 2], 16) for i in (0, 2, 4)]
        lin = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_public_page_text_colours_meet_wcag_aa_contrast(client, conditions):
    """Normal-size text needs 4.5:1 against its background (WCAG 1.4.3). Bootstrap's own colours
    fall just short on the public pages' tinted backgrounds; static/app.css darkens them there."""
    css = (Path(__file__).parent.parent / "static" / "app.css").read_text()
    page_bg = _css_rule(css, "body.public")["background"]  # the public pages' background
    staff_bg = re.search(r"--desk-bg: (#[0-9a-f]{6})", css).group(1)  # the error pages'
    assert _contrast(_css_rule(css, ".condition-card-more")["color"], "#ffffff") >= 4.5  # on its white card
    back = _css_rule(css, "body.public .btn-outline-secondary")  # "Back to List"
    assert _contrast(back["--bs-btn-color"], page_bg) >= 4.5
    consent = _css_rule(css, ".consent-box")  # the agreement's label, * and error, in red on its tint
    assert _contrast(consent["--bs-form-invalid-color"], consent["background"]) >= 4.5
    assert _contrast(consent["--bs-danger-rgb"], consent["background"]) >= 4.5
    assert _css_rule(css, ".consent-box .invalid-feedback")["font-size"] == "1em"  # not smaller than the label
    assert _contrast(_css_rule(css, ".error-page .btn-outline-primary")["--bs-btn-color"], staff_bg) >= 4.5
    # ... and the pages use those rules
    assert 'class="condition-card-more"' in client.get("/conditions").get_data(as_text=True)
    html = client.post("/conditions/dystonia", data=form_data(consent="")).get_data(as_text=True)
    assert '<div class="consent-box' in html and "btn-outline-secondary" in html and 'id="consent-err"' in html
    assert re.search(
        r'class="[^"]*error-page[^"]*".*btn-outline-primary', client.get("/conditions/x/y").get_data(as_text=True), re.S
    )


def test_csrf_is_required(make_app, db, conditions):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    resp = client.post("/conditions/dystonia", data=form_data())
    assert resp.status_code == 400
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 0
    html = client.get("/conditions/dystonia").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    resp = client.post("/conditions/dystonia", data=form_data(csrf_token=csrf, idempotency_token=token_of(html)))
    assert resp.status_code == 302


def test_an_expired_form_comes_back_with_everything_typed_and_a_fresh_token(make_app, db, conditions):
    """The session cookie is gone (tab restored after hours, cookies cleared): no error page."""
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    resp = client.post(
        "/conditions/dystonia",
        data=form_data(csrf_token="stale-token-from-a-lost-session"),
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "tick the agreement box again" in html and "Everything else you typed is still here" in html
    assert 'value="Casey"' in html and "Please text after 6." in html and 'value="0123456789abcdef' in html
    consent = re.search(r"<input[^>]*id=\"consent\"[^>]*>", html).group(0)
    assert "checked" not in consent  # consent is the patient's own tick, never carried over
    fresh = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    assert fresh != "stale-token-from-a-lost-session"
    assert client.post("/conditions/dystonia", data=form_data(csrf_token=fresh)).status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 1
    # The general request page too.
    other = app.test_client().post("/request", data=form_data(first_name="Robin"))
    assert other.status_code == 400 and 'value="Robin"' in other.get_data(as_text=True)


def test_a_cross_site_post_is_not_echoed_back_filled_in(make_app, db, conditions):
    client = make_app(WTF_CSRF_ENABLED=True).test_client()
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://broker.example.net"},
        {"Origin": "http://[::1"},
    ):
        resp = client.post("/conditions/dystonia", data=form_data(condition="chronic-pain"), headers=headers)
        html = resp.get_data(as_text=True)
        assert resp.status_code == 400 and "please fill in the form on this page" in html
        assert "Casey" not in html and "Please text after 6." not in html and "0123456789abcdef" not in html
        assert "checked" not in re.search(r"<input[^>]*id=\"consent\"[^>]*>", html).group(0)
        assert re.search(r'<option selected value="dystonia">|<option value="dystonia" selected>', html)
    # a sibling site of ours (e.g. the directory's subdomain) is ours: the typing comes back
    resp = client.post("/conditions/dystonia", data=form_data(), headers={"Sec-Fetch-Site": "same-site"})
    assert 'value="Casey"' in resp.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 0


def test_error_pages_send_patients_to_the_conditions_not_the_staff_sign_in(client, conditions):
    html = client.get("/conditions/no-such-thing").get_data(as_text=True)
    assert 'href="/conditions"' in html and "/login" not in html.split("<main")[-1]


def test_a_message_with_line_breaks_counts_them_as_the_browser_does(client, db, conditions):
    # Browsers send each line break as CRLF but count it as one character against maxlength.
    message = "ab\r\n" * 600 + "end"  # 1,803 characters as typed, 2,403 as sent
    assert len(message.replace("\r\n", "\n")) <= 2000 < len(message)
    assert client.post("/request", data=form_data(message=message)).status_code == 302
    assert "\r" not in db.session.scalar(sa.select(Lead)).message


def test_pasted_control_characters_are_cleaned_not_refused(client, db, conditions):
    resp = client.post("/request", data=form_data(message="Symptoms:\x0bheadaches\x0cpage two\x00", city="Mia\x07mi"))
    assert resp.status_code == 302
    lead = db.session.scalar(sa.select(Lead))
    assert lead.message == "Symptoms:\nheadaches\npage two" and lead.patient.city == "Miami"


def test_form_rate_limit_per_ip(make_app, db, conditions):
    app = make_app(RATELIMIT_ENABLED=True, INTAKE_RATE_LIMIT="2 per minute")
    client = app.test_client()
    codes = [client.post("/request", data=form_data(idempotency_token=f"{i:032d}")).status_code for i in range(3)]
    assert codes == [302, 302, 429]
    limited = client.post("/conditions/dystonia", data=form_data(idempotency_token="8" * 32))
    html = limited.get_data(as_text=True)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    wait = wait_words(int(limited.headers["Retry-After"]))  # what is left of the minute's window
    assert f"please wait {wait}, then" in html and 'value="Casey"' in html and "Please text after 6." in html
    other_ip = client.post(
        "/conditions/dystonia", data=form_data(idempotency_token="9" * 32), environ_base={"REMOTE_ADDR": "198.51.100.9"}
    )
    assert other_ip.status_code == 302


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(1, "1 second"), (2, "2 seconds"), (59, "59 seconds"), (60, "about 1 minute"), (89, "about 1 minute"),
     (90, "about 2 minutes"), (3600, "about 60 minutes")],
)  # fmt: skip
def test_the_wait_is_said_as_the_retry_after_header_gives_it(seconds, words):
    assert wait_words(seconds) == words


def test_the_rate_limit_counts_refused_tries_too_and_says_so_keeping_what_was_typed(make_app, db, conditions):
    """Posts sent back for a correction count against the limit, so its message must not say
    that earlier requests were received; the limited post is shown again but never processed."""
    client = make_app(RATELIMIT_ENABLED=True, INTAKE_RATE_LIMIT="2 per minute").test_client()
    assert [client.post("/conditions/dystonia", data=form_data(zip="1")).status_code for _ in range(2)] == [200, 200]
    limited = client.post("/conditions/dystonia", data=form_data(), headers={"Sec-Fetch-Site": "same-origin"})
    html = limited.get_data(as_text=True)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    notice = html.split("data-focus-on-load>")[1].split("</div>")[0]
    assert "received" not in notice and "too many times" in notice and "every try counts" in notice
    assert "Everything you typed is still here" in notice and "press Book Appointment again" in notice
    assert re.search(r"<title>\s*Error: Dystonia", html)
    assert 'value="Casey"' in html and "Please text after 6." in html and 'value="0123456789abcdef' in html
    assert 'action="/conditions/dystonia#request"' in html  # sent again later, it goes to the same page
    for model in (InboxItem, Lead, Patient):  # the limited post is neither stored nor processed
        assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0
    # a post from another site that trips it is not echoed back filled in
    html = client.post("/request", data=form_data(), headers={"Sec-Fetch-Site": "cross-site"}).get_data(as_text=True)
    assert "too many times" in html and "Casey" not in html and "Please text after 6." not in html


# ---------------------------------------------------------------- failures never lose a submission


def test_processing_failure_still_thanks_the_patient_and_keeps_the_item(
    client, db, conditions, monkeypatch, one_call_fails
):
    from sqlalchemy.exc import OperationalError

    def broken(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr("crm.services.intake._apply", broken)
    resp = client.post("/conditions/dystonia", data=form_data())
    assert resp.status_code == 302 and resp.location.endswith("/thank-you")
    item = db.session.scalar(sa.select(InboxItem))
    assert item.status == InboxStatus.FAILED and "OperationalError" in item.error
    assert item.next_attempt_at is not None and item.dedupe_key is None
    assert json.loads(item.body)["last_name"] == "Morgan"


# ---------------------------------------------------------------- privacy


CANARY_FIRST, CANARY_LAST = "Quillonzo", "Vexmarten"
CANARY_EMAIL = "quillonzo.vexmarten@example.com"
CANARY_PHONE_DIGITS = "3055550199"


def test_canary_patient_data_never_reaches_the_logs(client, db, conditions, caplog, capfd, monkeypatch):
    # Alembic's fileConfig (run by the session's migrations) disables loggers created before it:
    # switch every logger back on so this test hears everything, at DEBUG.
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "disabled", False)
    caplog.set_level(logging.DEBUG)
    data = form_data(
        first_name=CANARY_FIRST, last_name=CANARY_LAST, email=CANARY_EMAIL, phone="(305) 555-0199", message=CANARY_LAST
    )
    assert client.post("/conditions/dystonia", data=data).status_code == 302
    # a bad submission too (validation messages must not echo the input into logs)
    client.post("/conditions/dystonia", data=dict(data, zip="bad", idempotency_token="e" * 32))
    src = WebhookSourceFactory(slug="canary")
    db.session.commit()
    body = json.dumps(
        {
            "first_name": CANARY_FIRST,
            "last_name": CANARY_LAST,
            "email": "other." + CANARY_EMAIL,
            "phone": "+1 305 555 0199",
            "zip": "33101",
            "condition": "dystonia",
        }
    )
    signed = sign_payload("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", body, msg_id="canary-1")
    assert client.post(f"/webhooks/intake/{src.slug}", data=signed.body, headers=signed.headers).status_code in (
        200,
        202,
    )
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records) + out + err
    assert caplog.records, "nothing was logged at all: the capture is not working"
    for canary in (CANARY_FIRST, CANARY_LAST, CANARY_EMAIL, CANARY_PHONE_DIGITS, "555-0199", "+13055550199"):
        assert canary not in logged, canary


def test_a_database_error_with_patient_values_logs_no_patient_data(client, db, conditions, caplog, capfd, monkeypatch):
    """The failing statement carries the patient's name and contact details as parameters: neither
    the log line nor its traceback nor the stored inbox error may repeat them (SPEC 12)."""
    import sqlalchemy as sa

    from crm.services import intake

    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "disabled", False)
    caplog.set_level(logging.DEBUG)
    # The real statements (SQLite's INSERT, PostgreSQL's one-statement path), aimed at a missing table.
    one_statement = ("_NEW_PATIENT_IN_ONE_STATEMENT",) if db.engine.dialect.name == "postgresql" else ()
    for name in ("_INSERT_PATIENT", *one_statement):
        real = getattr(intake, name)
        compiled = real._compile(db.engine.dialect)
        broken = copy.copy(real)
        broken._by_dialect = {
            db.engine.dialect.name: dataclasses.replace(
                compiled, sql=compiled.sql.replace("INSERT INTO patients", "INSERT INTO no_such_table")
            )
        }
        monkeypatch.setattr(intake, name, broken)
        if name == "_NEW_PATIENT_IN_ONE_STATEMENT":  # and the one-call function made from it
            one_call = copy.copy(intake._NEW_PATIENT_IN_ONE_CALL)
            one_call.query, one_call._by_dialect = broken, {}
            monkeypatch.setattr(intake, "_NEW_PATIENT_IN_ONE_CALL", one_call)
    data = form_data(first_name=CANARY_FIRST, last_name=CANARY_LAST, email=CANARY_EMAIL, phone="(305) 555-0199")
    assert client.post("/conditions/dystonia", data=data).status_code == 302  # stored as failed, thanked
    item = db.session.scalar(sa.select(InboxItem))
    assert item.status == InboxStatus.FAILED and "no_such_table" in item.error
    if one_statement:  # the one call failed first, and said so without the values
        assert any("one-call path failed" in r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records) + caplog.text + out + err
    assert "Traceback" in logged  # the error was logged, with its traceback
    for canary in (CANARY_FIRST, CANARY_LAST, CANARY_EMAIL, CANARY_PHONE_DIGITS, "+13055550199"):
        assert canary not in logged, canary
        assert canary not in item.error, canary


def test_a_constraint_error_quoting_the_row_keeps_patient_data_out(client, db, conditions, caplog, monkeypatch):
    """PostgreSQL's DETAIL for a NOT NULL violation quotes the whole row ("Failing row contains
    (...)"): neither the stored error nor the logged traceback may repeat it (SPEC 12)."""
    from crm.services import intake

    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "disabled", False)
    caplog.set_level(logging.DEBUG)
    real = intake._new_patient_row
    monkeypatch.setattr(intake, "_new_patient_row", lambda *a: {k: v for k, v in real(*a).items() if k != "first_name"})
    data = form_data(first_name=CANARY_FIRST, last_name=CANARY_LAST, email=CANARY_EMAIL, phone="(305) 555-0199")
    assert client.post("/conditions/dystonia", data=data).status_code == 302  # stored as failed, thanked
    item = db.session.scalar(sa.select(InboxItem))
    assert item.status == InboxStatus.FAILED and "first_name" in item.error
    assert intake.process(item.id).status == "failed"  # and again by the retry job's path
    db.session.expire_all()
    item = db.session.get(InboxItem, item.id)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "failed (IntegrityError)" in logged
    if db.engine.dialect.name == "postgresql":
        assert "detail withheld" in item.error
    for canary in (CANARY_FIRST, CANARY_LAST, CANARY_EMAIL, "+13055550199", "Please text after 6."):
        assert canary not in item.error, canary
        assert canary not in logged, canary


def test_a_nul_in_a_form_is_dropped_not_a_500(client, db, conditions):
    # PostgreSQL cannot store NUL; the public form drops it (staff forms refuse it: test_lead_details).
    resp = client.post("/conditions/dystonia", data=form_data(first_name="Ca\x00sey"))
    assert resp.status_code == 302
    assert db.session.scalar(sa.select(Patient.first_name)) == "Casey"


def test_database_unreachable_keeps_the_form_filled_in(client, db, conditions, monkeypatch):
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    from crm.services import intake

    real_submit = intake.submit_form

    def down(self, *args, **kwargs):
        raise OperationalError("INSERT INTO inbox_items", {}, Exception("could not connect"))

    def submit_while_down(*args, **kwargs):  # neither the request nor its failure can be written
        with monkeypatch.context() as m:
            m.setattr(Session, "flush", down)
            return real_submit(*args, **kwargs)

    monkeypatch.setattr(intake, "submit_form", submit_while_down)
    resp = client.post("/conditions/dystonia", data=form_data())
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "could not save your request" in html
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 0
    assert 'value="Casey"' in html and "Please text after 6." in html


# ---------------------------------------------------------------- the patient's own words


def test_words_typed_beside_a_listed_condition_are_kept_on_the_lead(client, db, conditions):
    resp = client.post("/conditions/dystonia", data=form_data(condition_text="also neck pain since 2019"))
    assert resp.status_code == 302
    lead = db.session.scalar(sa.select(Lead))
    assert lead.condition.slug == "dystonia" and lead.condition_text == "also neck pain since 2019"
    item = db.session.scalar(sa.select(InboxItem))
    assert json.loads(item.body)["condition_details"] == "also neck pain since 2019"


def test_new_words_in_a_folded_resubmission_reach_the_lead_timeline(client, db, conditions, specialist, auth):
    client.post("/conditions/dystonia", data=form_data(condition_text="neck"))
    again = form_data(idempotency_token="e" * 32, condition_text="now also tremor in both hands")
    assert client.post("/conditions/dystonia", data=again).status_code == 302
    lead = db.session.scalar(sa.select(Lead))
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert folded.lead_id == lead.id and folded.data["condition_details"] == "now also tremor in both hands"
    auth.as_user(specialist)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "In the patient's words: “now also tremor in both hands”" in page


def test_a_phone_extension_is_kept_on_the_leads_timeline_not_dropped(client, db, conditions, specialist, auth):
    assert client.post("/conditions/dystonia", data=form_data(phone="305-555-1234 ext 12")).status_code == 302
    again = form_data(idempotency_token="e" * 32, phone="(305) 555-1234 x34")
    assert client.post("/conditions/dystonia", data=again).status_code == 302
    lead = db.session.scalar(sa.select(Lead))
    assert lead.patient.phone == "+13055551234"  # E.164 has no extension
    created, folded = db.session.scalars(sa.select(LeadEvent).order_by(LeadEvent.id)).all()
    assert created.kind == EventKind.CREATED and created.data["phone_extension"] == "12"
    assert folded.kind == EventKind.RESUBMITTED and folded.data["phone_extension"] == "34"
    auth.as_user(specialist)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Phone extension: <strong>12</strong>" in page and "Phone extension: <strong>34</strong>" in page


def test_a_returning_patients_new_phone_and_zip_fold_and_are_recorded_on_the_event(
    client, db, conditions, specialist, auth
):
    assert client.post("/conditions/dystonia", data=form_data()).status_code == 302
    again = form_data(idempotency_token="e" * 32, phone="305-555-0199", zip="33133", preferred_contact_time="morning")
    assert client.post("/conditions/dystonia", data=again).status_code == 302
    lead = db.session.scalar(sa.select(Lead))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 1  # folded (SPEC 2.2)
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert folded.data["details_sent"] == {"phone": "+13055550199", "zip": "33133"}
    assert folded.data["details_updated"] == {"preferred_contact_time": ["evening", "morning"]}
    assert (lead.patient.phone, lead.patient.zip) == ("+13055550123", "33101-1234")  # the record keeps its own
    # Another condition is a new lead on the same patient, with the same record of what differs.
    other = form_data(idempotency_token="f" * 32, condition="chronic-pain", phone="305-555-0199")
    assert client.post("/conditions/chronic-pain", data=other).status_code == 302
    second = db.session.scalars(sa.select(Lead).order_by(Lead.id)).all()[1]
    assert second.patient_id == lead.patient_id
    created = second.events[0]
    assert created.data["returning_patient"] is True and created.data["details_sent"] == {"phone": "+13055550199"}
    auth.as_user(specialist)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "differ from the patient's record" in page
    assert "phone <strong>(305) 555-0199</strong>, ZIP <strong>33133</strong>" in page
    assert "contact time evening → <strong>morning</strong>" in page


def test_a_resubmission_with_the_same_details_records_no_changes(client, db, conditions):
    client.post("/conditions/dystonia", data=form_data())
    client.post("/conditions/dystonia", data=form_data(idempotency_token="e" * 32, zip="33101", city="MIAMI"))
    folded = db.session.scalars(sa.select(LeadEvent).where(LeadEvent.kind == EventKind.RESUBMITTED)).one()
    assert "details_sent" not in folded.data and "details_updated" not in folded.data


def test_a_phone_without_an_extension_adds_nothing_to_the_event(client, db, conditions):
    client.post("/conditions/dystonia", data=form_data())
    assert "phone_extension" not in db.session.scalar(sa.select(LeadEvent)).data


@pytest.mark.parametrize("condition", ["other", "dystonia"])
def test_a_too_long_description_is_flagged_under_the_box_it_was_typed_in(client, db, conditions, condition):
    html = client.post("/request", data=form_data(condition=condition, condition_text="x" * 201)).get_data(as_text=True)
    box = html.split('id="condition_text"')[1].split("<fieldset")[0]
    assert "Use at most 200 characters." in box
    assert "Use at most 200" not in html.split('id="condition"')[1].split('id="condition_text"')[0]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 0


def count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.mark.parametrize("zip_code", ["00000", "99999", "00000-1234"])
def test_a_zip_no_address_has_is_asked_about_once_then_taken_as_typed(client, db, conditions, zip_code):
    first = client.post("/request", data=form_data(zip=zip_code))
    html = unescape(first.get_data(as_text=True))
    assert first.status_code == 200 and count(db, Lead) == 0
    assert f"We can't find the ZIP code {zip_code[:5]}. Please check it; if it is right, press Book" in html
    assert f'name="zip_checked" type="hidden" value="{zip_code[:5]}"' in html and 'value="Casey"' in html
    # Sent again unchanged (the hidden field carries what was asked): the patient knows their ZIP.
    again = client.post("/request", data=form_data(zip=zip_code, zip_checked=zip_code[:5]))
    assert again.status_code == 302 and count(db, Lead) == 1
    assert db.session.scalar(sa.select(Patient.zip)) == zip_code


def test_another_unknown_zip_is_asked_about_again_and_a_real_one_never(client, db, conditions):
    changed = client.post("/request", data=form_data(zip="99998", zip_checked="00000"))
    assert changed.status_code == 200 and "We can't find the ZIP code 99998" in unescape(changed.get_data(as_text=True))
    for i, real in enumerate(("00501", "96813", "09012")):  # an IRS unique ZIP, Honolulu, an APO
        patient = {"email": f"p{i}@example.com", "phone": f"305.555.010{i}", "idempotency_token": real * 6 + "00"}
        resp = client.post("/request", data=form_data(zip=real, **patient))
        assert resp.status_code == 302, real
    assert count(db, Lead) == 3


def test_webhooks_do_not_ask_about_an_unknown_zip(client, db, conditions):
    """Nobody is there to answer: the delivery is taken and the specialist checks the address."""
    from tests.factories import WebhookSourceFactory

    WebhookSourceFactory(slug="site")
    db.session.commit()
    body = '{"first_name": "Ana", "last_name": "Ruiz", "email": "ana@example.com", "zip": "00000"}'
    signed = sign_payload("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", body, msg_id="msg_zip")
    resp = client.post(
        "/webhooks/intake/site", data=signed.body, headers=signed.headers, content_type="application/json"
    )
    assert resp.status_code == 202


def test_a_resubmission_does_not_keep_a_neglected_lead_with_its_assignee(client, db, conditions, specialist):
    """The 24-hour return to the pool looks at the specialist's activity: a patient writing again
    ("nobody called me") is no such activity, and the lead still goes back to the pool."""
    from datetime import UTC, datetime, timedelta

    from crm.services.sla import stale_sweep

    client.post("/conditions/dystonia", data=form_data())
    lead = db.session.scalar(sa.select(Lead))
    lead.assignee, lead.assigned_at = specialist, lead.created_at - timedelta(hours=25)
    db.session.commit()
    client.post("/conditions/dystonia", data=form_data(idempotency_token="f" * 32, message="Nobody called me"))
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 1
    assert lead.last_activity_at is None
    assert stale_sweep(datetime.now(UTC) + timedelta(minutes=1), 24) == 1
    db.session.commit()
    db.session.expire_all()
    assert lead.assignee_id is None


@pytest.mark.parametrize("path", ["/conditions/hidden-thing", "/conditions/hidden-thing/", "/request"])
def test_a_form_sent_after_its_condition_was_unpublished_is_taken_in_words(client, db, conditions, path):
    """The page was open when an admin unpublished the condition: the request is not lost to a 404 or
    to "choose from the list"; the patient's choice reaches the specialist as their own words."""
    data = form_data(condition="hidden-thing", condition_text="since May")
    resp = client.post(path, data=data)
    if path.endswith("/"):  # the browser posts it again to the page (the test client would drop the body)
        assert resp.status_code == 308 and resp.location == "/conditions/hidden-thing"
        resp = client.post(resp.location, data=data)
    assert resp.status_code == 302 and resp.location.endswith("/thank-you")
    lead = db.session.scalar(sa.select(Lead))
    # Intake maps the words to the condition as it does any description (published or not).
    assert lead.condition.slug == "hidden-thing" and lead.condition_text == "Hidden thing: since May"


def test_an_unpublished_choice_sent_back_with_an_error_stays_visible(client, db, conditions):
    resp = client.post("/conditions/hidden-thing", data=form_data(condition="hidden-thing", email="not-an-email"))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and count(db, Lead) == 0
    assert 'value="Hidden thing"' in html and re.search(r'<option selected value="other">|value="other" selected', html)
    assert "Casey" in html  # everything typed kept
    again = client.post("/request", data=form_data(condition="other", condition_text="Hidden thing"))
    assert again.status_code == 302 and db.session.scalar(sa.select(Lead.condition_text)) == "Hidden thing"


def test_a_condition_that_never_existed_is_still_asked_for_again(client, db, conditions):
    resp = client.post("/request", data=form_data(condition="made-up"))
    assert resp.status_code == 200 and "Choose a condition from the list." in resp.get_data(as_text=True)
    assert client.get("/conditions/hidden-thing").status_code == 404
    assert client.post("/conditions/made-up", data=form_data(condition="made-up")).status_code == 404
