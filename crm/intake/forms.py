"""The public appointment-request form. Field rules live in crm.services.intake.validate_fields."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, RadioField, SelectField, StringField, TelField, TextAreaField
from wtforms.validators import Optional

from crm.services.intake import FORM_CONTACT_DEFAULTS

CONSENT_TEXT = (
    "I agree that a patient support specialist may contact me by phone, text message or email about "
    "this request and to help me book an appointment with a certified physician. Message and data "
    "rates may apply. I can ask you to stop at any time."
)

CONTACT_METHODS = [("phone", "Phone call"), ("text", "Text message"), ("email", "Email")]
CONTACT_TIMES = [
    ("any", "Any time (no preference)"),
    ("morning", "Morning"),
    ("afternoon", "Afternoon"),
    ("evening", "Evening"),
]
VISIT_MODES = [("either", "Either is fine"), ("in_person", "In person"), ("telehealth", "Telehealth (video)")]
# Each in its own language, so a patient finds theirs; routing prefers a specialist who speaks it.
LANGUAGES = [
    ("en", "English"),
    ("es", "Español (Spanish)"),
    ("zh", "中文 (Chinese)"),
    ("vi", "Tiếng Việt (Vietnamese)"),
    ("tl", "Tagalog"),
    ("ko", "한국어 (Korean)"),
    ("ru", "Русский (Russian)"),
    ("ar", "العربية (Arabic)"),
    ("ht", "Kreyòl ayisyen (Haitian Creole)"),
    ("fr", "Français (French)"),
    ("pt", "Português (Portuguese)"),
]
OTHER = "other"
TRACKING_FIELDS = ("landing_page_url", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


# Text pasted from documents can carry page and line-tab characters (and, rarely, other
# invisible control characters): a patient cannot see or remove them, so the form turns the
# breaks into line breaks and drops the rest rather than refusing the request.
_PASTED_BREAKS = re.compile(r"[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_INVISIBLE_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f]")


def plain_text(value: str | None, *, multiline: bool = False) -> str:
    text = _INVISIBLE_CONTROLS.sub("", value or "")
    return _PASTED_BREAKS.sub("\n" if multiline else " ", text)


class RequestForm(FlaskForm):
    first_name = StringField("First name", render_kw={"autocomplete": "given-name", "maxlength": 100})
    last_name = StringField("Last name", render_kw={"autocomplete": "family-name", "maxlength": 100})
    email = EmailField("Email", render_kw={"autocomplete": "email", "inputmode": "email"})
    # The example is help text, not a placeholder: in an empty field marked invalid a sample number
    # reads as one already typed.
    phone = TelField("Phone", render_kw={"autocomplete": "tel", "inputmode": "tel"})
    zip = StringField("ZIP code", render_kw={"autocomplete": "postal-code", "inputmode": "numeric", "maxlength": 10})
    street = StringField("Street address", render_kw={"autocomplete": "address-line1", "maxlength": 200})
    city = StringField("City", render_kw={"autocomplete": "address-level2", "maxlength": 100})
    condition = SelectField("Condition", choices=[], validate_choice=False)
    condition_text = StringField(
        "Or describe it in your own words", render_kw={"maxlength": 200, "placeholder": "e.g. muscle spasms"}
    )
    preferred_mode = RadioField("How would you like to see the physician?", choices=VISIT_MODES, default="either")
    preferred_contact_method = SelectField(
        "Best way to reach you", choices=CONTACT_METHODS, default=FORM_CONTACT_DEFAULTS["preferred_contact_method"]
    )
    preferred_contact_time = SelectField(
        "Best time to reach you", choices=CONTACT_TIMES, default=FORM_CONTACT_DEFAULTS["preferred_contact_time"]
    )
    language = SelectField("Language we should speak", choices=LANGUAGES, default=FORM_CONTACT_DEFAULTS["language"])
    message = TextAreaField("Anything we should know? (optional)", render_kw={"rows": 3, "maxlength": 2000})
    # A consent is a yes: WTForms' default reads anything but "" and "false" as ticked, so a crafted
    # "0", "no" or "off" would have been stored as the patient's consent with its time and IP.
    consent = BooleanField(
        "I agree to be contacted", validators=[Optional()], false_values=("", "false", "0", "no", "off", "n")
    )
    # Honeypot: hidden from people by CSS; bots fill it in.
    website = StringField("Leave this field empty", render_kw={"autocomplete": "off", "tabindex": "-1"})
    idempotency_token = HiddenField()
    # The ZIP the patient was told we cannot find and sent again unchanged: taken as they typed it.
    zip_checked = HiddenField()
    landing_page_url = HiddenField()
    utm_source = HiddenField()
    utm_medium = HiddenField()
    utm_campaign = HiddenField()
    utm_term = HiddenField()
    utm_content = HiddenField()

    def set_conditions(self, conditions) -> None:
        self.condition.choices = (
            [("", "Choose a condition…")]
            + [(c.slug, c.name) for c in conditions]
            + [(OTHER, "Something else / not sure")]
        )

    def process(self, formdata=None, obj=None, data=None, extra_filters=None, **kwargs):
        super().process(formdata, obj, data, extra_filters, **kwargs)
        for f in self:
            if isinstance(f.data, str):
                f.data = plain_text(f.data, multiline=f.name == "message")

    def intake_fields(self, condition_name: str | None) -> dict:
        """The submission in intake's field names (the consent text shown is stored with it)."""
        other = (self.condition_text.data or "").strip()
        listed = bool(condition_name) and self.condition.data not in ("", OTHER)
        return {
            "first_name": self.first_name.data or "",
            "last_name": self.last_name.data or "",
            "email": self.email.data or "",
            "phone": self.phone.data or "",
            "zip": self.zip.data or "",
            "street": self.street.data or "",
            "city": self.city.data or "",
            "condition": condition_name if listed else other,
            # Words typed beside a listed condition are the patient's description of it: kept.
            "condition_details": other if listed else "",
            "message": self.message.data or "",
            "preferred_mode": self.preferred_mode.data or "either",
            "preferred_contact_method": self.preferred_contact_method.data or "phone",
            "preferred_contact_time": self.preferred_contact_time.data or "any",
            "language": self.language.data or "en",
            "consent": bool(self.consent.data),
            "consent_text": CONSENT_TEXT if self.consent.data else "",
            **{name: getattr(self, name).data or "" for name in TRACKING_FIELDS},
        }
