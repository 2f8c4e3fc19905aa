"""Ready-made field mappings (our field -> path in the sender's payload) and example bodies.

Copy one into a source's field mapping (the source page's "Start from an example" does) and
adjust the field references to the sender's form. See docs/intake.md "Field mapping" for the
path syntax.

They describe the *body shapes* these tools send. Our endpoint verifies Standard Webhooks
signatures only: Typeform (its own ``Typeform-Signature`` header) and Gravity Forms (no HMAC
at all) cannot post to it directly, so their bodies arrive through a relay that re-signs them
unchanged (docs/intake.md "The webhook", "Which senders can deliver directly").
"""

from __future__ import annotations

# A plain JSON body that already uses our field names needs no mapping at all;
# this one shows a body with its own names and a nested contact object.
PLAIN_JSON = {
    "first_name": "contact.first",
    "last_name": "contact.last",
    "email": "contact.email",
    "phone": "contact.phone",
    "zip": "address.zip",
    "street": "address.line1",
    "city": "address.city",
    "condition": "condition",
    "message": "message",
    "preferred_mode": "visit",
    "consent": "consent",
    "landing_page_url": "page",
    "utm_source": "utm.source",
    "utm_campaign": "utm.campaign",
}

PLAIN_JSON_EXAMPLE = {
    "contact": {"first": "Jamie", "last": "Rivera", "email": "jamie.rivera@example.com", "phone": "305-555-0142"},
    "address": {"zip": "33101", "line1": "", "city": "Miami"},
    "condition": "dystonia",
    "message": "Evenings are best.",
    "visit": "telehealth",
    "consent": True,
    "page": "https://clinic.example.com/conditions/dystonia",
    "utm": {"source": "newsletter", "campaign": "fall"},
}

# Typeform "form_response" webhook bodies (forwarded by a re-signing relay): answers are a list
# in question order, each keyed by its type (text, email, phone_number, choice.label, boolean).
# Index paths work when every question is required; the [field.ref=...] selectors keep working
# when optional questions are left out of the list, provided each question's "Reference" is set
# to these names in Typeform (it generates random-looking refs otherwise).
TYPEFORM = {
    "first_name": "form_response.answers.[field.ref=first_name].text",
    "last_name": "form_response.answers.[field.ref=last_name].text",
    "email": "form_response.answers.[field.ref=email].email",
    "phone": "form_response.answers.[field.ref=phone].phone_number",
    "zip": "form_response.answers.[field.ref=zip].text",
    "condition": "form_response.answers.[field.ref=condition].choice.label",
    "message": "form_response.answers.[field.ref=message].text",
    "consent": "form_response.answers.[field.ref=consent].boolean",
    "landing_page_url": "form_response.hidden.landing_page",
    "utm_source": "form_response.hidden.utm_source",
    "utm_medium": "form_response.hidden.utm_medium",
    "utm_campaign": "form_response.hidden.utm_campaign",
}

# The same Typeform with positional paths (the form's questions are all required).
TYPEFORM_BY_POSITION = {
    "first_name": "form_response.answers.0.text",
    "last_name": "form_response.answers.1.text",
    "email": "form_response.answers.2.email",
    "phone": "form_response.answers.3.phone_number",
    "zip": "form_response.answers.4.text",
    "condition": "form_response.answers.5.choice.label",
    "message": "form_response.answers.6.text",
    "consent": "form_response.answers.7.boolean",
    "utm_source": "form_response.hidden.utm_source",
}


def _answer(ref: str, kind: str, value, field_type: str) -> dict:
    return {"type": kind, kind: value, "field": {"id": f"id_{ref}", "ref": ref, "type": field_type}}


TYPEFORM_EXAMPLE = {
    "event_id": "01HZX3T9QW",
    "event_type": "form_response",
    "form_response": {
        "form_id": "lT4Z3j",
        "token": "a3a12ec67a1365927098a606107fac15",
        "submitted_at": "2026-11-24T14:03:22Z",
        "hidden": {"landing_page": "https://clinic.example.com/dystonia", "utm_source": "google", "utm_medium": "cpc"},
        "answers": [
            _answer("first_name", "text", "Morgan", "short_text"),
            _answer("last_name", "text", "Lee", "short_text"),
            _answer("email", "email", "morgan.lee@example.com", "email"),
            _answer("phone", "phone_number", "+13055550177", "phone_number"),
            _answer("zip", "text", "33139", "short_text"),
            {
                "type": "choice",
                "choice": {"label": "Dystonia"},
                "field": {"id": "id_c", "ref": "condition", "type": "multiple_choice"},
            },
            _answer("message", "text", "My neck spasms are worse in the morning.", "long_text"),
            _answer("consent", "boolean", True, "yes_no"),
        ],
    },
}

# Gravity Forms (Webhooks add-on, "all fields" request body, forwarded unchanged by a re-signing
# relay: the add-on cannot sign): a flat object keyed by field id; compound fields use
# "<field>.<input>" keys (Name 1.3 first, 1.6 last; Address 4.1 street, 4.3 city, 4.4 state,
# 4.5 ZIP; a checkbox 7.1).
GRAVITY_FORMS = {
    "first_name": "1.3",
    "last_name": "1.6",
    "email": "2",
    "phone": "3",
    "street": "4.1",
    "city": "4.3",
    "state": "4.4",
    "zip": "4.5",
    "condition": "5",
    "message": "6",
    "consent": "7.1",
    "preferred_contact_method": "8",
    "landing_page_url": "source_url",
}

GRAVITY_FORMS_EXAMPLE = {
    "id": "1042",
    "form_id": "3",
    "date_created": "2026-11-24 14:03:22",
    "source_url": "https://clinic.example.com/request-appointment/",
    "1.3": "Avery",
    "1.6": "Santos",
    "2": "avery.santos@example.com",
    "3": "(407) 555-0163",
    "4.1": "12 Orange Ave",
    "4.3": "Orlando",
    "4.4": "Florida",
    "4.5": "32801",
    "5": "muscle spasms",
    "6": "",
    "7.1": "1",
    "8": "text",
}

EXAMPLES = {
    "plain-json": (PLAIN_JSON, PLAIN_JSON_EXAMPLE),
    "typeform": (TYPEFORM, TYPEFORM_EXAMPLE),
    "typeform-by-position": (TYPEFORM_BY_POSITION, TYPEFORM_EXAMPLE),
    "gravity-forms": (GRAVITY_FORMS, GRAVITY_FORMS_EXAMPLE),
}
