"""factory-boy factories bound to the app's session; they flush, tests commit."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import factory
from factory.alchemy import SQLAlchemyModelFactory

from crm.extensions import db
from crm.models import (
    Condition,
    Lead,
    Patient,
    Physician,
    Registration,
    StateProgram,
    User,
    WebhookSecret,
    WebhookSource,
)
from crm.models.enums import Credential, GeocodePrecision, GeocodeStatus, ProgramType, Role
from crm.services.accounts import hash_password
from crm.services.npi import check_digit

PASSWORD = "correct horse battery"
_PASSWORD_HASH = hash_password(PASSWORD)  # argon2 is slow on purpose: hash once


class Base(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "flush"


class UserFactory(Base):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Sequence(lambda n: f"User {n}")
    role = Role.SPECIALIST
    password_hash = _PASSWORD_HASH
    active = True


def valid_npi(n: int) -> str:
    stem = f"1{n:08d}"
    return stem + check_digit(stem)


class ConditionFactory(Base):
    class Meta:
        model = Condition

    name = factory.Sequence(lambda n: f"Condition {n}")
    slug = factory.Sequence(lambda n: f"condition-{n}")
    synonyms = factory.LazyFunction(list)
    summary = "A condition."
    body = "## About\n\nText."
    published = True


class StateProgramFactory(Base):
    class Meta:
        model = StateProgram

    state = "FL"
    name = "Florida"
    program_type = ProgramType.MEDICAL
    physician_discretion = True
    telehealth_allowed = True
    minimum_age = 18
    reviewed_on = date(2026, 11, 1)


class PhysicianFactory(Base):
    class Meta:
        model = Physician

    npi = factory.Sequence(valid_npi)
    first_name = "Dana"
    last_name = factory.Sequence(lambda n: f"Doctor{n}")
    credential = Credential.MD
    state = "FL"
    zip = "33101"
    city = "Miami"
    latitude = 25.7617
    longitude = -80.1918
    geocode_precision = GeocodePrecision.ZIP
    geocode_status = GeocodeStatus.OK
    timezone = "America/New_York"
    offers_in_person = True
    offers_telehealth = False
    accepting_new = True
    active = True
    priority = 2
    weekly_capacity = 10

    @factory.post_generation
    def registered_in(obj, create, extracted, **kwargs):
        states = extracted if extracted is not None else [obj.state]
        for st in states:
            obj.registrations.append(
                Registration(state=st, number=f"{st}-1", expires_on=date.today() + timedelta(days=365))
            )


class PatientFactory(Base):
    class Meta:
        model = Patient

    first_name = "Pat"
    last_name = factory.Sequence(lambda n: f"Patient{n}")
    email = factory.Sequence(lambda n: f"patient{n}@example.com")
    phone = factory.Sequence(lambda n: f"+1305555{n % 10000:04d}")
    zip = "33101"
    city = "Miami"
    state = "FL"
    latitude = 25.7617
    longitude = -80.1918
    geocode_precision = GeocodePrecision.ZIP
    geocode_status = GeocodeStatus.OK
    timezone = "America/New_York"
    age_confirmed = True
    consent_text = "I agree to be contacted."
    consent_at = factory.LazyFunction(lambda: datetime.now(UTC))


class LeadFactory(Base):
    class Meta:
        model = Lead

    patient = factory.SubFactory(PatientFactory)
    condition_text = ""


class WebhookSourceFactory(Base):
    class Meta:
        model = WebhookSource

    name = factory.Sequence(lambda n: f"Source {n}")
    slug = factory.Sequence(lambda n: f"source-{n}")
    field_mapping = factory.LazyFunction(dict)
    active = True

    @factory.post_generation
    def secret(obj, create, extracted, **kwargs):
        obj.secrets.append(WebhookSecret(secret=extracted or "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))


@contextmanager
def committed_meanwhile(make):
    """Commit ``make()`` (a new, unsaved row) from another session just before this session's next
    flush: the race of a double click or two admins, where the second save's checks ran before the
    first one committed, so only the database's unique index can refuse it."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    done = []

    def before_flush(session, context, instances):
        if done:
            return
        done.append(True)  # first: the other session's own flush comes through here too
        with Session(db.engine) as other:
            other.add(make())
            other.commit()

    event.listen(Session, "before_flush", before_flush)
    try:
        yield
    finally:
        event.remove(Session, "before_flush", before_flush)
    assert done, "nothing was flushed: the race was not run"
