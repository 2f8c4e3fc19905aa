"""Forms of the queue and the lead workspace. Every form that changes a lead carries
its ``version`` (optimistic locking): a save based on an older version is refused."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    HiddenField,
    IntegerField,
    RadioField,
    SearchField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from crm.form_filters import InYears, name_filter, stripped
from crm.models.enums import (
    OPEN_STATUSES,
    ContactMethod,
    ContactTime,
    FollowUpKind,
    LeadSourceKind,
    LeadStatus,
    PreferredMode,
    VisitMode,
)
from crm.services.booking import OUTCOME_LABELS
from crm.services.followups import DONE_OUTCOME_LABELS
from crm.services.workflow import CALL_OUTCOME_LABELS, LOST_REASON_LABELS
from crm.templating import humanize

DT_FORMAT = "%Y-%m-%dT%H:%M"


PLAUSIBLE = InYears(2000, 2100)
# The browser's date-time field takes a six-digit year unless told the last one: typing "12072026" then
# "1030A" would run on into the year.
LAST_MINUTE = {"max": "2099-12-31T23:59"}


class QueueFilterForm(FlaskForm):
    class Meta:
        csrf = False  # GET filters

    q = SearchField("Search", validators=[Optional(), Length(max=100)])
    status = SelectField("Status", validators=[Optional()], choices=[], filters=[stripped])
    state = SelectField("State", validators=[Optional()], choices=[], filters=[stripped])
    condition = SelectField("Condition", validators=[Optional()], choices=[], filters=[stripped])
    source = SelectField("Source", validators=[Optional()], choices=[], filters=[stripped])
    assignee = SelectField("Assignee", validators=[Optional()], choices=[], filters=[stripped])
    created_from = DateField("Created from", validators=[Optional(), PLAUSIBLE])
    created_to = DateField("Created to", validators=[Optional(), PLAUSIBLE])

    def validate_created_to(self, field):
        if self.range_reversed():
            raise ValidationError("The end date is before the start date.")

    def range_reversed(self) -> bool:
        """Both dates valid but the end before the start: neither can be trusted, so the queue ignores both
        (like any invalid filter) rather than keep the start alone, which listed nothing after it."""
        start, end = self.created_from, self.created_to
        return bool(start.data and end.data and not start.errors and end.data < start.data)


def status_choices(open_only: bool = False):
    """``open_only``: the views that list open leads only (Unassigned, Mine, Due) offer no closed status."""
    statuses = [s for s in LeadStatus if not open_only or s in OPEN_STATUSES]
    return [("", "Any status")] + [(s.value, s.value.capitalize()) for s in statuses]


def source_choices(sources):
    choices = [
        ("", "Any source"),
        (LeadSourceKind.FORM.value, "Request form"),
        (LeadSourceKind.MANUAL.value, "Entered by staff"),
    ]
    choices.append((LeadSourceKind.WEBHOOK.value, "Any webhook"))
    choices += [(f"webhook:{s.id}", f"Webhook: {s.name}") for s in sources]
    return choices


class VersionedForm(FlaskForm):
    version = HiddenField(validators=[InputRequired("The form is missing the lead's version; reload the page.")])

    def version_int(self) -> int | None:
        try:
            return int(self.version.data)
        except (TypeError, ValueError):
            return None


class NoteForm(VersionedForm):
    text = TextAreaField("Note", validators=[DataRequired("Write the note first."), Length(max=5000)])


class CallForm(VersionedForm):
    outcome = RadioField(
        "Outcome",
        choices=list(CALL_OUTCOME_LABELS.items()),
        validators=[InputRequired("Choose the call's outcome.")],
    )
    note = TextAreaField("What happened (optional)", validators=[Optional(), Length(max=2000)])


TZ_BASIS = [("patient", "Patient's time"), ("mine", "My time")]


class FollowUpForm(VersionedForm):
    due = DateTimeLocalField(
        "Due", format=DT_FORMAT, validators=[InputRequired("Pick the date and time."), PLAUSIBLE], render_kw=LAST_MINUTE
    )
    tz_basis = SelectField("Time zone of that time", choices=TZ_BASIS, default="patient")
    kind = SelectField("Kind", choices=[(k.value, humanize(k.value)) for k in FollowUpKind], default="call")
    note = TextAreaField("Note", validators=[Optional(), Length(max=500)])


class FollowUpDoneForm(VersionedForm):
    # Every outcome of any kind; followups.close checks it fits the follow-up's kind.
    outcome = SelectField(
        "Outcome",
        choices=list(DONE_OUTCOME_LABELS.items()),
        validators=[InputRequired("Choose how the follow-up ended.")],
    )


class StatusForm(VersionedForm):
    to = SelectField("New status", choices=[], validators=[InputRequired("Choose the new status.")])
    lost_reason = SelectField(
        "Reason (when lost)",
        choices=[("", "—")] + [(r.value, label) for r, label in LOST_REASON_LABELS.items()],
        default="",  # a client that leaves the field out means "no reason", not an invalid choice
    )
    note = TextAreaField("Why (optional)", validators=[Optional(), Length(max=2000)])

    def validate_lost_reason(self, field):
        if self.to.data == LeadStatus.LOST.value and not field.data:
            raise ValidationError("Choose why the lead is lost.")


def _int_or_none(value):
    """Coerce a posted id; junk becomes None so the field says "Choose the physician"."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class PhysicianSelectField(SelectField):
    """A physician may be listed twice, in person and telehealth, under one value (their id): WTForms
    would mark both lines selected and the browser shows the last, so a form sent back showed the
    other mode's line. Only the line of the form's visit mode (``mode_field``) is selected."""

    mode_field = None

    def iter_choices(self):
        choices = super().iter_choices()
        chosen = [c for c in choices if c.selected]
        if len(chosen) < 2:
            return choices
        mode = self.mode_field.data if self.mode_field is not None else None
        keep = next((c for c in chosen if (c.render_kw or {}).get("data-mode") == mode), chosen[0])
        return [c._replace(selected=False) if c.selected and c is not keep else c for c in choices]


class BookingForm(VersionedForm):
    physician_id = PhysicianSelectField("Physician", coerce=_int_or_none, choices=[], validate_choice=False)
    starts = DateTimeLocalField(
        "Starts",
        format=DT_FORMAT,
        validators=[InputRequired("Pick the appointment time."), PLAUSIBLE],
        render_kw=LAST_MINUTE,
    )
    tz_basis = SelectField("Time zone of that time", choices=TZ_BASIS, default="patient")
    mode = SelectField(
        "Visit", choices=[(VisitMode.IN_PERSON.value, "In person"), (VisitMode.TELEHEALTH.value, "Telehealth")]
    )
    duration = IntegerField("Minutes", default=30, validators=[InputRequired(), NumberRange(min=5, max=240)])
    notes = TextAreaField("Notes for the appointment", validators=[Optional(), Length(max=500)])
    # Shown only for a lead not (yet) eligible; booking.book refuses such a lead without it.
    override = BooleanField("Book anyway: I checked this with the patient / the physician decides")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.physician_id.mode_field = self.mode

    def validate_physician_id(self, field):
        if not field.data:
            raise ValidationError("Choose the physician.")
        if self.physician_id.choices and field.data not in {c[0] for c in self.physician_id.choices}:
            raise ValidationError("Pick a physician from the match list.")


class RescheduleForm(VersionedForm):
    """A coming appointment's new time, with the same physician (booking.reschedule)."""

    starts = DateTimeLocalField(
        "New time", format=DT_FORMAT, validators=[InputRequired("Pick the new time."), PLAUSIBLE], render_kw=LAST_MINUTE
    )
    tz_basis = SelectField("Time zone of that time", choices=TZ_BASIS, default="patient")


class OutcomeForm(VersionedForm):
    outcome = SelectField(
        "Outcome",
        choices=[("", "Outcome…"), *OUTCOME_LABELS.items()],  # the page offers only booking.possible_outcomes
        validators=[InputRequired("Choose the outcome.")],
    )
    note = TextAreaField("Note", validators=[Optional(), Length(max=500)])


class ConfirmAdultForm(VersionedForm):
    """One button: the patient confirmed on the phone they are 18 or older."""


def _sent_but_no_number(field) -> bool:
    """A value was sent that is not an id (``abc``, ``1.0``): ``_int_or_none`` made it None, the value
    that means "none chosen", which must not pass for a choice."""
    raw = (field.raw_data or [""])[0]
    return bool(str(raw).strip()) and field.data is None


class AssignForm(VersionedForm):
    user_id = SelectField("Assign to", coerce=_int_or_none, choices=[], validate_choice=False, validators=[Optional()])

    def validate_user_id(self, field):
        if _sent_but_no_number(field):
            raise ValidationError("Choose who to assign the lead to from the list.")


class RoutingSettingsForm(FlaskForm):
    auto_assign = RadioField(
        "Auto-assignment",
        choices=[
            ("default", "Follow the server setting (AUTO_ASSIGN)"),
            ("on", "On: new leads go round robin to on-shift specialists"),
            ("off", "Off: new leads wait in Unassigned"),
        ],
        default="default",
    )


def _normalised(normalise, field, *, required: bool = False):
    """Run a crm.services.contact normaliser on a field; its ValueError becomes the field error."""
    value = (field.data or "").strip()
    if not value:
        if required:
            raise ValidationError("Required.")
        field.data = None
        return
    try:
        field.data = normalise(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


class DetailsForm(VersionedForm):
    """The patient's details and the lead's request, as the specialist corrects them."""

    # The patient row's updated_at when the page was opened: the patient may belong to several
    # leads (or be located meanwhile), so the lead's version alone does not protect it.
    patient_stamp = HiddenField()

    first_name = StringField(
        "First name",
        validators=[DataRequired("Enter the first name."), Length(max=100)],
        filters=[name_filter("The first name")],
    )
    last_name = StringField(
        "Last name",
        validators=[DataRequired("Enter the last name."), Length(max=100)],
        filters=[name_filter("The last name")],
    )
    phone = StringField("Phone", validators=[Length(max=40)])
    email = StringField("Email", validators=[Length(max=254)])
    date_of_birth = DateField("Date of birth", validators=[Optional(), InYears(1900, 9999)])
    street = StringField("Street", validators=[Length(max=200)])
    city = StringField("City", validators=[Length(max=100)])
    state = SelectField("State", choices=[])
    zip = StringField("ZIP", validators=[Length(max=10)])
    preferred_contact_method = SelectField(
        "Prefers", choices=[(m.value, m.value.replace("_", " ").capitalize()) for m in ContactMethod]
    )
    preferred_contact_time = SelectField("Best time", choices=[(t.value, t.value.capitalize()) for t in ContactTime])
    language = StringField("Language", validators=[DataRequired("Enter a language code, e.g. en."), Length(max=8)])
    condition_id = SelectField("Condition", coerce=_int_or_none, choices=[])
    preferred_mode = SelectField(
        "Visit", choices=[(m.value, m.value.replace("_", " ").capitalize()) for m in PreferredMode]
    )

    phone_extension: str | None = None  # E.164 has no extension: kept on the edit's timeline event

    def validate_phone(self, field):
        from crm.services.contact import phone_parts

        def number_only(value: str) -> str:
            number, self.phone_extension = phone_parts(value)
            return number

        _normalised(number_only, field)

    def validate_email(self, field):
        from crm.services.contact import normalise_email

        _normalised(normalise_email, field)

    def validate_zip(self, field):
        from crm.services.contact import normalise_zip

        _normalised(normalise_zip, field)
        field.data = field.data or ""

    def validate_condition_id(self, field):
        # Left out or not an id: the lead's condition (and the patient's own words) would be wiped.
        if not field.raw_data or _sent_but_no_number(field):
            raise ValidationError("Choose a condition from the list, or Not specified.")

    def validate_language(self, field):
        field.data = (field.data or "").strip().lower()
        if not field.data.replace("-", "").isalpha():
            raise ValidationError("Use a language code such as en or es.")

    def values(self) -> dict:
        """Normalised values for crm.services.patient_details.update_details."""
        return {
            "first_name": self.first_name.data.strip(),
            "last_name": self.last_name.data.strip(),
            "phone": self.phone.data or None,
            "phone_extension": self.phone_extension,
            "email": self.email.data or None,
            "date_of_birth": self.date_of_birth.data,
            "street": (self.street.data or "").strip(),
            "city": (self.city.data or "").strip(),
            "state": self.state.data or None,
            "zip": self.zip.data or "",
            "preferred_contact_method": ContactMethod(self.preferred_contact_method.data),
            "preferred_contact_time": ContactTime(self.preferred_contact_time.data),
            "language": self.language.data,
            "condition_id": self.condition_id.data,
            "preferred_mode": PreferredMode(self.preferred_mode.data),
        }
