"""Admin forms: physicians, CSV import, state programs, conditions, users, sources, audit filters.

Field validators call the same cleaning functions as the services (crm/services/
directory.py, contact.py), so the form and the CSV import agree on what is valid.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from functools import partial

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    SearchField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    URLField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError
from wtforms.widgets import CheckboxInput

from crm.auth.forms import NewPasswordForm
from crm.form_filters import InYears, name_filter, stripped
from crm.models.enums import Credential, ProgramType, Role
from crm.services import directory
from crm.services.contact import US_STATES, clean_name, normalise_state, normalise_zip
from crm.services.markdown import markdown_problem

STATE_CHOICES = [(code, f"{code} · {name}") for code, name in sorted(US_STATES.items())]
YES_NO_ANY = [("", "Any"), ("yes", "Yes"), ("no", "No")]
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def cleaned_by(fn):
    """A WTForms validator from a service cleaning function that raises ValueError."""

    def validator(form, field):
        if field.data in (None, "") and field.flags.optional:
            return
        try:
            fn(field.data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    return validator


# --- physicians ---------------------------------------------------------------------------------


class PhysicianFilterForm(FlaskForm):
    class Meta:
        csrf = False

    q = SearchField("Search", validators=[Optional(), Length(max=100)])
    state = SelectField("State", choices=[("", "Any state")] + STATE_CHOICES, validators=[Optional()])
    active = SelectField("Active", choices=YES_NO_ANY, default="yes", validators=[Optional()])
    accepting = SelectField("Accepting new", choices=YES_NO_ANY, validators=[Optional()])
    telehealth = SelectField("Telehealth", choices=YES_NO_ANY, validators=[Optional()])
    expiring = SelectField(
        "Registrations",
        choices=[
            ("", "Any"),
            ("any", "Expired or expiring"),
            ("soon", "Expiring within 30 days"),
            ("expired", "Expired"),
        ],
        validators=[Optional()],
    )

    located = SelectField(
        "Located",
        choices=[("", "Any"), ("yes", "Located"), ("no", "Not located")],
        validators=[Optional()],
    )

    def filters(self) -> directory.PhysicianFilters:
        def pick(field):
            values = {c[0] for c in field.choices}
            return field.data if field.data in values else ""

        active = self.active.data if self.active.raw_data else "yes"
        return directory.PhysicianFilters(
            q=(self.q.data or "").strip()[:100],
            state=pick(self.state),
            active=active if active in ("", "yes", "no") else "yes",
            accepting=pick(self.accepting),
            telehealth=pick(self.telehealth),
            expiring=pick(self.expiring),
            located=pick(self.located),
        )


class RegistrationRowForm(Form):
    state = SelectField("State", choices=[("", "—")] + STATE_CHOICES, validators=[Optional()])
    number = StringField(
        "Number", validators=[Optional(), Length(max=60), cleaned_by(directory.check_registration_number)]
    )
    expires_on = DateField("Expires on", validators=[Optional()])
    remove = BooleanField("Remove")

    def is_blank(self) -> bool:
        return not self.state.data and not (self.number.data or "").strip() and not self.expires_on.data


class GuardedForm(FlaskForm):
    # The record as shown when the page was opened (crm/services/edit_guard.py): a save made meanwhile
    # by someone else (another admin, a CSV import) is reported instead of silently overwritten.
    loaded = HiddenField(validators=[Optional(), Length(max=200_000)])  # every field at its longest, escaped


class PhysicianForm(GuardedForm):
    npi = StringField("NPI", validators=[DataRequired(), cleaned_by(directory.clean_npi)])
    first_name = StringField(
        "First name", validators=[DataRequired(), Length(max=100)], filters=[name_filter("First name")]
    )
    last_name = StringField(
        "Last name", validators=[DataRequired(), Length(max=100)], filters=[name_filter("Last name")]
    )
    credential = SelectField("Credential", choices=[(c.value, c.value) for c in Credential])
    practice_name = StringField(
        "Practice name", validators=[Optional(), Length(max=200)], filters=[name_filter("Practice name")]
    )
    street = StringField("Street", validators=[Optional(), Length(max=200)])
    city = StringField("City", validators=[Optional(), Length(max=100)])
    state = SelectField(
        "State",
        choices=[("", "Choose a state")] + STATE_CHOICES,
        validators=[DataRequired("Choose the practice's state."), cleaned_by(normalise_state)],
    )
    zip = StringField("ZIP", validators=[Length(max=10)])
    phone = StringField("Phone", validators=[Optional(), cleaned_by(directory.clean_optional_phone)])
    email = EmailField("Email", validators=[Optional(), cleaned_by(directory.clean_optional_email)])
    website = URLField("Website", validators=[Optional(), cleaned_by(directory.clean_website)])
    offers_in_person = BooleanField("Sees patients in person", default=True)
    offers_telehealth = BooleanField("Offers telehealth")
    accepting_new = BooleanField("Accepting new patients", default=True)
    languages = StringField(
        "Languages", default="en", validators=[Optional(), Length(max=100), cleaned_by(directory.clean_languages)]
    )
    conditions = SelectMultipleField(
        "Conditions treated", choices=[], validators=[Optional()], option_widget=CheckboxInput()
    )
    priority = SelectField(
        "Priority",
        choices=[("1", "1 · preferred"), ("2", "2 · standard"), ("3", "3 · last resort")],
        default="2",
    )
    weekly_capacity = IntegerField(
        "Weekly capacity", default=20, validators=[InputRequired(), NumberRange(min=0, max=1000)]
    )
    latitude = StringField("Latitude", validators=[Length(max=20)])
    longitude = StringField("Longitude", validators=[Length(max=20)])  # both checked in validate_longitude
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=5000)])
    registrations = FieldList(FormField(RegistrationRowForm), min_entries=0)

    def validate_longitude(self, field):
        try:
            directory.clean_coordinates(self.latitude.data, self.longitude.data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def validate_zip(self, field):
        if not (field.data or "").strip():
            if not (self.latitude.data or "").strip():
                raise ValidationError("Enter a ZIP code (or latitude and longitude) so the practice can be located.")
            return
        try:
            directory.check_zip_in_state(normalise_zip(field.data), self.state.data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def validate_registrations(self, field):
        seen = set()
        for entry in field.entries:
            row = entry.form
            if row.is_blank() or row.remove.data:
                continue
            errs = []
            if not row.state.data:
                errs.append("Pick a state.")
            if not (row.number.data or "").strip():
                errs.append("Enter the registration number.")
            if not row.expires_on.data and not row.expires_on.errors:
                errs.append("Enter the expiry date.")
            if row.state.data and row.state.data in seen:
                errs.append(f"{row.state.data} is listed twice.")
            seen.add(row.state.data)
            if errs:
                row.state.errors = list(row.state.errors) + errs
                raise ValidationError("Check the highlighted registration rows.")

    def registration_data(self) -> list[directory.RegistrationData]:
        regs = []
        for entry in self.registrations.entries:
            row = entry.form
            if row.is_blank() or row.remove.data:
                continue
            regs.append(directory.clean_registration(row.state.data, row.number.data, row.expires_on.data))
        return sorted(regs)

    def to_data(self, active: bool) -> directory.PhysicianData:
        lat, lon = directory.clean_coordinates(self.latitude.data, self.longitude.data)
        return directory.PhysicianData(
            npi=directory.clean_npi(self.npi.data),
            first_name=clean_name(self.first_name.data, "First name"),
            last_name=clean_name(self.last_name.data, "Last name"),
            credential=directory.clean_credential(self.credential.data),
            practice_name=clean_name(self.practice_name.data, "Practice name"),
            street=(self.street.data or "").strip(),
            city=(self.city.data or "").strip(),
            state=normalise_state(self.state.data),
            zip=normalise_zip(self.zip.data) if (self.zip.data or "").strip() else "",
            phone=directory.clean_optional_phone(self.phone.data),
            email=directory.clean_optional_email(self.email.data),
            website=directory.clean_website(self.website.data),
            offers_in_person=bool(self.offers_in_person.data),
            offers_telehealth=bool(self.offers_telehealth.data),
            languages=directory.clean_languages(self.languages.data or ""),
            conditions=sorted(self.conditions.data or []),
            accepting_new=bool(self.accepting_new.data),
            active=active,
            priority=int(self.priority.data),
            weekly_capacity=int(self.weekly_capacity.data),
            registrations=self.registration_data(),
            latitude=lat,
            longitude=lon,
            notes=(self.notes.data or "").strip(),
        )


class CsvUploadForm(FlaskForm):
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file to upload.")])

    def validate_file(self, field):
        name = (getattr(field.data, "filename", "") or "").lower()
        if not name.endswith((".csv", ".txt")):
            raise ValidationError("Upload a .csv file (comma-separated, UTF-8).")


class CsvCommitForm(FlaskForm):
    token = HiddenField(validators=[DataRequired(), Length(max=64)])


# --- state programs and conditions --------------------------------------------------------------


class StateProgramForm(GuardedForm):
    program_type = SelectField(
        "Program type",
        choices=[
            (ProgramType.MEDICAL.value, "Medical"),
            (ProgramType.MEDICAL_AND_ADULT_USE.value, "Medical and adult use"),
            (ProgramType.CBD_ONLY.value, "CBD only (low-THC)"),
            (ProgramType.NONE.value, "No program"),
        ],
    )
    qualifying_conditions = SelectMultipleField(
        "Qualifying conditions", coerce=int, choices=[], validate_choice=True, option_widget=CheckboxInput()
    )
    physician_discretion = BooleanField("Physician discretion (conditions beyond the list may qualify)")
    telehealth_allowed = BooleanField("Telehealth certification allowed")
    minimum_age = IntegerField("Minimum age", validators=[InputRequired(), NumberRange(min=0, max=99)])
    patient_fee_note = StringField("Patient fee note", validators=[Optional(), Length(max=400)])
    # No Length(): clean_website checks the column's 300 characters, in a message naming this field.
    registry_url = URLField(
        "Registry URL", validators=[Optional(), cleaned_by(partial(directory.clean_website, label="Registry URL"))]
    )
    reviewed_on = DateField("Reviewed on", validators=[Optional()])
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=5000)])

    def validate_reviewed_on(self, field):
        # A typo such as 2062 would keep the row off the "reviewed over a year ago" list for decades.
        # (A day of slack: the admin's "today" may be tomorrow in UTC terms or the other way round.)
        if field.data and field.data > datetime.now(UTC).date() + timedelta(days=1):
            raise ValidationError("This date is in the future: enter the day the registry was last checked.")
        if field.data and field.data < directory.EARLIEST_DATE:
            raise ValidationError(f"{field.data.isoformat()} is too long ago: check the year.")


# Words that say nothing about a condition: a synonym made only of them (or of single letters) would
# map unrelated free text ("something a bit odd") to the condition, since intake matches whole words.
COMMON_WORDS = frozenset(
    "a an the and or of in on at to for with from by as is it be are was my me i you your we our this that these "
    "those but if so no not do does have has had can will just very some any all bit lot".split()
)


def _clean_synonyms(text: str) -> list[str]:
    out: list[str] = []
    for part in re.split(r"[\n;]", text or ""):
        s = " ".join(clean_name(part, refuse_controls=False).split())
        if s and s.lower() not in (o.lower() for o in out):
            if len(s) > 80:
                raise ValueError(f"Synonym {s[:20]!r}... is longer than 80 characters.")
            words = re.findall(r"\w+", s.lower())
            if not words or all(len(w) == 1 or w in COMMON_WORDS for w in words):
                raise ValueError(
                    f"Synonym {s!r} is too common a word: it would match unrelated text. Use a word or phrase "
                    "that names the condition."
                )
            out.append(s)
    return out


class ConditionForm(GuardedForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)], filters=[name_filter("The name")])
    slug = StringField("Slug (web address)", validators=[DataRequired(), Length(max=80)])
    synonyms = TextAreaField(
        "Synonyms", validators=[Optional(), Length(max=4000), cleaned_by(_clean_synonyms)], render_kw={"rows": 4}
    )
    summary = TextAreaField("Summary", validators=[Optional(), Length(max=400)], render_kw={"rows": 2})
    body = TextAreaField("Page text (Markdown)", validators=[Optional(), Length(max=50_000)], render_kw={"rows": 16})
    published = BooleanField("Published on the public site", default=True)

    def validate_slug(self, field):
        field.data = (field.data or "").strip().lower()
        if not SLUG_RE.match(field.data):
            raise ValidationError("Use lower-case letters, digits and single hyphens, e.g. chronic-pain.")

    def validate_body(self, field):
        # The renderer takes seconds to minutes on some texts (unclosed brackets, deep nesting):
        # the public page renders this text, so it is refused here with where and what to change.
        problem = markdown_problem(field.data)
        if problem:
            raise ValidationError(problem)

    def synonym_list(self) -> list[str]:
        return _clean_synonyms(self.synonyms.data)


# --- users --------------------------------------------------------------------------------------

ROLE_CHOICES = [(Role.SPECIALIST.value, "Specialist"), (Role.ADMIN.value, "Admin")]
COMMON_TIMEZONES = [
    "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
    "America/Anchorage", "Pacific/Honolulu", "America/Puerto_Rico", "UTC",
]  # fmt: skip


class UserCreateForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name", validators=[DataRequired(), Length(max=120)], filters=[name_filter("The name")])
    role = SelectField("Role", choices=ROLE_CHOICES)
    password = PasswordField(
        "Temporary password",
        validators=[DataRequired(), Length(min=10, max=200, message="Use at least 10 characters (and at most 200).")],
        render_kw={"autocomplete": "new-password"},
    )
    capacity = IntegerField("Capacity (open leads)", default=40, validators=[InputRequired(), NumberRange(0, 500)])
    languages = StringField("Languages", default="en", validators=[Optional(), cleaned_by(directory.clean_languages)])
    timezone = StringField(
        "Time zone",
        default="America/New_York",
        validators=[DataRequired(), Length(max=64)],
        render_kw={"list": "tz-list", "autocomplete": "off"},
    )


class UserEditForm(GuardedForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)], filters=[name_filter("The name")])
    email = EmailField("Email (they sign in with it)", validators=[DataRequired(), Length(max=254)])
    capacity = IntegerField("Capacity (open leads)", validators=[InputRequired(), NumberRange(0, 500)])
    languages = StringField("Languages", validators=[Optional(), cleaned_by(directory.clean_languages)])
    timezone = StringField(
        "Time zone", validators=[DataRequired(), Length(max=64)], render_kw={"list": "tz-list", "autocomplete": "off"}
    )
    # No on_shift here: the specialist toggles it all day, so a profile form opened earlier would put
    # them back on (or off) shift when saved. The page's Start/End their shift button does it alone.


class UserRoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class ResetPasswordForm(NewPasswordForm):
    """An admin's reset: the same new-password pair as a user's own change."""


# --- webhook sources ----------------------------------------------------------------------------


def parse_mapping(text: str) -> dict[str, str]:
    """The JSON object of our-field -> path in the payload; ValueError with the reason otherwise.

    Only the shape is checked here; which fields exist and which paths parse is the
    intake service's business (crm.services.intake.validate_mapping).
    """
    text = (text or "").strip() or "{}"
    repeated: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in items]
        repeated.extend(k for i, k in enumerate(keys) if k in keys[:i] and k not in repeated)
        return dict(items)

    try:
        value = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
    except RecursionError:
        raise ValueError(NESTED_TOO_DEEP) from None
    except ValueError:  # Python's own limit: an integer of more than 4,300 digits
        raise ValueError(NUMBER_TOO_LONG) from None
    if repeated:
        # json.loads keeps the last one silently: the admin would save a mapping other than the one read.
        raise ValueError(f"{', '.join(repr(k) for k in repeated)} appears more than once: keep one path per field.")
    if not isinstance(value, dict):
        raise ValueError('The mapping must be a JSON object, e.g. {"email": "contact.email"}.')
    for key, path in value.items():
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"The path for {key!r} must be text like contact.email (got {json.dumps(path)}).")
        if not (key + path).isprintable() or any(0xD800 <= ord(ch) <= 0xDFFF for ch in key + path):
            raise ValueError(f"The path for {json.dumps(key)} holds a control or invisible character: type it again.")
    return {key: path.strip() for key, path in value.items()}


NESTED_TOO_DEEP = "Not usable JSON: nested too deep (hundreds of levels)."
NUMBER_TOO_LONG = "Not usable JSON: a number of thousands of digits."


class SourceCreateForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)], filters=[name_filter("The name")])
    # Optional, as for `flask crm sources add`: left blank, the service makes it from the name.
    slug = StringField("Slug (in the webhook URL)", validators=[Optional(), Length(max=80)], filters=[stripped])

    def validate_slug(self, field):
        field.data = (field.data or "").strip().lower()
        if field.data and not SLUG_RE.match(field.data):
            raise ValidationError("Use lower-case letters, digits and single hyphens, e.g. wordpress-form.")


class SourceMappingForm(FlaskForm):
    field_mapping = TextAreaField(
        "Field mapping (JSON)",
        validators=[Optional(), Length(max=10_000), cleaned_by(parse_mapping)],
        render_kw={"rows": 10, "spellcheck": "false"},
    )


class TestDeliveryForm(FlaskForm):
    payload = TextAreaField(
        "Payload (JSON)",
        validators=[DataRequired(), Length(max=60_000)],
        render_kw={"rows": 10, "spellcheck": "false"},
    )
    close_lead = BooleanField("Close the test lead at once, so it is never dealt to a specialist", default=True)

    def validate_payload(self, field):
        try:
            json.loads(field.data)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        except RecursionError:
            raise ValidationError(NESTED_TOO_DEEP) from None
        except ValueError:  # an integer of more than 4,300 digits
            raise ValidationError(NUMBER_TOO_LONG) from None


# --- audit --------------------------------------------------------------------------------------


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False

    user = SelectField("User", choices=[], validators=[Optional()], filters=[stripped])
    action = SelectField("Action", choices=[], validators=[Optional()], filters=[stripped])
    object_type = SelectField("Object", choices=[], validators=[Optional()], filters=[stripped])
    object_id = StringField("Object id", validators=[Optional(), Length(max=64)])
    # The audit log starts with the product: a year such as 9999 is a typo (and one day past it is
    # more than a date can hold).
    date_from = DateField("From", validators=[Optional(), InYears(2000, 2100)])
    date_to = DateField("To", validators=[Optional(), InYears(2000, 2100)])

    def validate_date_to(self, field):
        # A reversed range matches nothing: said, as on the reports page, rather than "0 entries".
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date is before the start date.")
