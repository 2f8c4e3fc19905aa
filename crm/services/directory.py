"""The physician directory: cleaning values, saving physicians, searching, expiry warnings.

Shared by the admin pages, the CSV import (crm/services/physician_csv.py), the
read-only directory for specialists and the scheduler's expiry-warning job.
Functions flush; the request or job that calls them commits.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.models import Appointment, Condition, Notification, Physician, Registration, StateProgram
from crm.models.enums import LIVE_APPOINTMENT, Credential, GeocodePrecision, GeocodeStatus
from crm.services.contact import clean_name, normalise_email, normalise_phone, normalise_state
from crm.services.notifications import active_admins
from crm.services.npi import is_valid_npi

log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 30
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")
PHONE_QUERY_RE = re.compile(r"^\+?[\d\s().-]+$", re.ASCII)
ADDRESS_FIELDS = ("street", "city", "state", "zip")
# Digits grouped by spaces or dashes (hyphen, en dash and friends); anything else stays refused.
NPI_SEPARATORS_RE = re.compile(r"[\s\-\u2010-\u2013]")
NPI_TYPED_RE = re.compile(r"^[0-9\s\-\u2010-\u2013]+$")
WEBSITE_MAX_LENGTH = Physician.__table__.c.website.type.length


# --- cleaning single values (raise ValueError with a message a person can act on) ---------------


def clean_npi(value: str) -> str:
    # Full-width digits are folded to ASCII; other scripts' digits (which isdigit() accepts) are
    # refused, so one NPI cannot be stored twice in two spellings past the unique index.
    value = unicodedata.normalize("NFKC", value or "").strip()
    if not value:
        raise ValueError("NPI is required.")
    if NPI_SEPARATORS_RE.search(value) and NPI_TYPED_RE.match(value):
        value = NPI_SEPARATORS_RE.sub("", value)  # "123 456-7893" as read off a card: the digits are the NPI
    if not (len(value) == 10 and value.isascii() and value.isdigit()):
        raise ValueError(f"NPI must be 10 digits (got {value!r}).")
    if value[0] not in "12":  # every NPI issued starts with 1 or 2, whatever its check digit says
        raise ValueError(f"NPI {value} starts with {value[0]}: every NPI starts with 1 or 2. Check for a typo.")
    if not is_valid_npi(value):
        raise ValueError(f"NPI {value} fails the check digit: check for a typo.")
    return value


# A ZIP's area reaches a few dozen miles from its centre in the emptiest counties: a typed point
# farther than this from the ZIP is a typo (swapped latitude and longitude, another address's point).
COORDINATES_ZIP_MILES = 100


def check_coordinates_near_zip(latitude: float, longitude: float, zip_code: str | None) -> None:
    """Typed coordinates must lie near the practice's ZIP, else matching would measure every in-person
    distance from somewhere else while the directory shows the ZIP's town. An unknown ZIP is not checked."""
    try:
        from crm.services.geocoding import zip_location
    except ImportError:
        return  # no geocoding module (see _geocode): nothing to check against
    from crm.services.matching import haversine_miles

    located = zip_location(zip_code) if zip_code else None
    if located is None or located.precision != GeocodePrecision.ZIP:
        return
    miles = haversine_miles(latitude, longitude, located.latitude, located.longitude)
    if miles > COORDINATES_ZIP_MILES:
        raise ValueError(
            f"The coordinates {latitude:.4f}, {longitude:.4f} are {miles:,.0f} miles from ZIP {zip_code[:5]} "
            f"({located.state}): check them (latitude first, about {located.latitude:.2f} here, then "
            f"longitude, about {located.longitude:.2f}), or leave both empty to locate the address."
        )


def check_zip_in_state(zip_code: str, state: str) -> None:
    """A ZIP the ``zipcodes`` data places in another state than the one given is refused: the
    physician would be located there (the ZIP wins) while listed, filtered and warned about as in
    ``state``. A ZIP the data does not know is not checked."""
    if not zip_code or not state:
        return
    try:
        from crm.services.geocoding import zip_location
    except ImportError:
        return  # no geocoding module (see _geocode): nothing to check against
    located = zip_location(zip_code)
    if located is not None and located.state and located.state != state:
        raise ValueError(f"ZIP {zip_code[:5]} is in {located.state}, not {state}: check the state or the ZIP.")


def clean_credential(value: str) -> Credential:
    code = (value or "").strip().upper().replace(".", "")
    try:
        return Credential(code)
    except ValueError:
        allowed = ", ".join(c.value for c in Credential)
        raise ValueError(f"Credential must be one of {allowed} (got {value!r}).") from None


def clean_optional_phone(value: str) -> str:
    return normalise_phone(value) if (value or "").strip() else ""


def clean_optional_email(value: str) -> str:
    return normalise_email(value) if (value or "").strip() else ""


def clean_website(value: str, label: str = "Website") -> str:
    """A web address; ``label`` names the field in the messages (a state program's "Registry URL")."""
    value = (value or "").strip()
    # The column's limit: PostgreSQL refuses a longer value at write time (SQLite would keep it).
    if len(value) > WEBSITE_MAX_LENGTH:
        raise ValueError(f"{label} is longer than {WEBSITE_MAX_LENGTH} characters.")
    if value and not re.match(r"^https?://[^\s/]+\.[^\s]+$", value, re.IGNORECASE):
        raise ValueError(f"{label} must be a full address starting with https:// (got {value!r}).")
    return value


def clean_languages(value: str | list[str]) -> list[str]:
    parts = value if isinstance(value, list) else re.split(r"[;,]", value or "")
    langs: list[str] = []
    for part in parts:
        code = part.strip().lower()
        if not code:
            continue
        if not LANGUAGE_RE.match(code):
            raise ValueError(f"Language codes are 2-3 letters like en, es (got {part.strip()!r}).")
        if code not in langs:
            langs.append(code)
    return langs or ["en"]


def clean_priority(value: str | int | None) -> int:
    if value in (None, ""):
        return 2
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"Priority must be 1, 2 or 3 (got {value!r}).") from None
    if number not in (1, 2, 3):
        raise ValueError(f"Priority must be 1, 2 or 3 (got {value!r}).")
    return number


def clean_capacity(value: str | int | None) -> int:
    if value in (None, ""):
        return 20
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"Weekly capacity must be a whole number (got {value!r}).") from None
    if not 0 <= number <= 1000:
        raise ValueError(f"Weekly capacity must be between 0 and 1000 (got {value!r}).")
    return number


def clean_coordinates(lat: str | float | None, lon: str | float | None) -> tuple[float | None, float | None]:
    lat_s = "" if lat is None else str(lat).strip()
    lon_s = "" if lon is None else str(lon).strip()
    if not lat_s and not lon_s:
        return None, None
    if not lat_s or not lon_s:
        raise ValueError("Give both latitude and longitude, or neither (then the address is geocoded).")
    try:
        lat_f, lon_f = float(lat_s), float(lon_s)
    except ValueError:
        raise ValueError(f"Latitude and longitude must be numbers (got {lat_s!r}, {lon_s!r}).") from None
    if not -90 <= lat_f <= 90 or not -180 <= lon_f <= 180:
        raise ValueError(f"Coordinates out of range (latitude {lat_s}, longitude {lon_s}).")
    return round(lat_f, 6), round(lon_f, 6)


@dataclass(frozen=True, order=True)
class RegistrationData:
    state: str
    number: str
    expires_on: date


def check_registration_number(number: str) -> None:
    """Refuse a number the CSV's registrations column (``STATE:NUMBER:YYYY-MM-DD;...``) could not carry.

    ':' is fine: the number is everything between the first and the last ':'."""
    if ";" in (number or ""):
        raise ValueError(
            "A registration number cannot contain ';' (the CSV export separates registrations with it): "
            "use '-' or '/' instead."
        )


def clean_registration(state: str, number: str, expires_on: str | date) -> RegistrationData:
    st = normalise_state(state)
    number = (number or "").strip()
    if not number:
        raise ValueError(f"Registration for {st} needs a number.")
    if len(number) > 60:
        raise ValueError(f"Registration number for {st} is longer than 60 characters.")
    check_registration_number(number)
    if isinstance(expires_on, date):
        when = expires_on
    else:
        try:
            when = date.fromisoformat((expires_on or "").strip())
        except ValueError:
            raise ValueError(f"Registration for {st}: expiry must be a date YYYY-MM-DD (got {expires_on!r}).") from None
    if not EARLIEST_DATE <= when <= LATEST_DATE:
        # 0001-01-01 was stored, then shown as "1-01-01", which no form could save back.
        raise ValueError(
            f"Registration for {st}: expiry {when.isoformat()} is not a real date for it (check the year)."
        )
    return RegistrationData(st, number, when)


# Dates a registration or a review can carry: a year typed wrong (0001, 9999) is refused, not stored.
EARLIEST_DATE, LATEST_DATE = date(1990, 1, 1), date(2100, 12, 31)


def check_unique_registration_states(regs: list[RegistrationData]) -> None:
    seen = set()
    for reg in regs:
        if reg.state in seen:
            raise ValueError(f"Two registrations for {reg.state}: keep one per state.")
        seen.add(reg.state)


# --- whole physicians ---------------------------------------------------------------------------


@dataclass
class PhysicianData:
    """Validated values for one physician (from the form or one CSV line)."""

    npi: str
    first_name: str
    last_name: str
    credential: Credential
    state: str
    zip: str = ""
    practice_name: str = ""
    street: str = ""
    city: str = ""
    phone: str = ""
    email: str = ""
    website: str = ""
    offers_in_person: bool = True
    offers_telehealth: bool = False
    languages: list[str] = field(default_factory=lambda: ["en"])
    conditions: list[str] = field(default_factory=list)  # slugs; empty = all
    accepting_new: bool = True
    active: bool = True
    priority: int = 2
    weekly_capacity: int = 20
    registrations: list[RegistrationData] = field(default_factory=list)
    latitude: float | None = None
    longitude: float | None = None
    notes: str | None = None  # None = leave as is (the CSV has no notes column)


SCALAR_FIELDS = (
    "npi", "first_name", "last_name", "credential", "practice_name", "street", "city", "state", "zip", "phone",
    "email", "website", "offers_in_person", "offers_telehealth", "languages", "accepting_new", "active",
    "priority", "weekly_capacity",
)  # fmt: skip


def physician_data(p: Physician) -> PhysicianData:
    return PhysicianData(
        **{name: getattr(p, name) for name in SCALAR_FIELDS if name != "languages"},
        languages=list(p.languages or []),
        conditions=sorted(c.slug for c in p.conditions),
        registrations=sorted(RegistrationData(r.state, r.number, r.expires_on) for r in p.registrations),
        latitude=None if p.latitude is None else round(p.latitude, 6),
        longitude=None if p.longitude is None else round(p.longitude, 6),
        notes=p.notes,
    )


def edit_snapshot(p: Physician) -> dict:
    """The values the edit form shows, as JSON-able data: kept in the form so that a save can tell
    what someone else changed after the page was opened. Not the coordinates (the geocoder sets them
    in the background) nor ``active`` (its own buttons)."""
    d = physician_data(p)
    snap = {name: getattr(d, name) for name in SCALAR_FIELDS if name != "active"}
    snap.update(
        credential=str(d.credential),
        conditions=d.conditions,
        registrations=[[r.state, r.number, r.expires_on.isoformat()] for r in d.registrations],
        notes=d.notes or "",
    )
    return snap


def condition_snapshot(c: Condition) -> dict:
    """What the condition form shows (crm/services/edit_guard.py)."""
    return {
        "name": c.name,
        "slug": c.slug,
        "synonyms": list(c.synonyms or []),
        "summary": c.summary or "",
        "body": c.body or "",
        "published": bool(c.published),
    }


def state_program_snapshot(program: StateProgram) -> dict:
    """What the state program form shows (crm/services/edit_guard.py)."""
    return {
        "program_type": str(program.program_type),
        "qualifying_conditions": sorted(c.id for c in program.qualifying_conditions),
        "physician_discretion": bool(program.physician_discretion),
        "telehealth_allowed": bool(program.telehealth_allowed),
        "minimum_age": program.minimum_age,
        "patient_fee_note": program.patient_fee_note or "",
        "registry_url": program.registry_url or "",
        "reviewed_on": program.reviewed_on.isoformat() if program.reviewed_on else None,
        "notes": program.notes or "",
    }


def state_program_values(program: StateProgram) -> dict:
    """The snapshot with conditions by slug, not id: what the audit trail keeps of a program."""
    return {
        **state_program_snapshot(program),
        "qualifying_conditions": sorted(c.slug for c in program.qualifying_conditions),
    }


def _coords_differ(p: Physician, data: PhysicianData) -> bool:
    if data.latitude is None or data.longitude is None:
        return False
    if p.latitude is None or p.longitude is None:
        return True
    return abs(p.latitude - data.latitude) > 1e-6 or abs(p.longitude - data.longitude) > 1e-6


def changed_fields(p: Physician | None, data: PhysicianData) -> list[str]:
    """Names of the fields ``data`` would change on ``p`` (everything for a new physician)."""
    if p is None:
        return ["new"]
    current = physician_data(p)
    changes = [name for name in SCALAR_FIELDS if getattr(current, name) != getattr(data, name)]
    if sorted(data.conditions) != current.conditions:
        changes.append("conditions")
    if sorted(data.registrations) != current.registrations:
        changes.append("registrations")
    if _coords_differ(p, data):
        changes.append("coordinates")
    if data.notes is not None and data.notes != (p.notes or ""):
        changes.append("notes")
    return changes


# --- what an edit changed, for the audit trail and the import preview -------------------------------

AUDIT_TEXT_MAX = 120  # longer text (a condition's page, notes) is kept as an excerpt with its length


def audit_value(value):
    """A field's value as the audit trail keeps it: JSON-able and small. Long text becomes an
    excerpt with its length and a short hash, enough to see that and roughly how it changed."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, RegistrationData):
        return f"{value.state}:{value.number}:{value.expires_on.isoformat()}"
    if isinstance(value, list | tuple):
        return [audit_value(v) for v in value]
    text = str(value)
    if len(text) <= AUDIT_TEXT_MAX:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return f"{text[:60]}… ({len(text)} characters, #{digest})"


def audit_changes(before: dict, after: dict, fields: list[str]) -> dict[str, list]:
    """``{field: [old, new]}`` for the changed ``fields``: an audit row says what a value was, so a
    wiped phone number can be read back from the trail."""
    return {name: [audit_value(before.get(name)), audit_value(after.get(name))] for name in fields}


def physician_values(d: PhysicianData | None) -> dict:
    """A physician's values by the names ``changed_fields`` uses (``{}`` for no physician)."""
    if d is None:
        return {}
    values = {name: getattr(d, name) for name in SCALAR_FIELDS}
    values.update(
        credential=str(d.credential),
        conditions=sorted(d.conditions),
        registrations=sorted(d.registrations),
        coordinates=None if d.latitude is None else f"{d.latitude:.6f}, {d.longitude:.6f}",
        notes=d.notes,
    )
    return values


def physician_changes(before: PhysicianData | None, after: PhysicianData, fields: list[str]) -> dict[str, list]:
    """Old and new values of the physician ``fields`` an edit or an import line changes."""
    return audit_changes(physician_values(before), physician_values(after), [f for f in fields if f != "new"])


def expired_registrations(
    data: PhysicianData, before: PhysicianData | None = None, today: date | None = None
) -> list[RegistrationData]:
    """Registrations ``data`` adds or changes that have already expired: saved (an admin may record
    history) but worth a warning, as they do not count for matching."""
    today = today or desk_today()
    had = set(before.registrations) if before is not None else set()
    return [r for r in data.registrations if r not in had and r.expires_on < today]


def expired_warning(regs: list[RegistrationData]) -> str:
    if not regs:
        return ""
    listed = ", ".join(f"{r.state} {r.number} expired on {r.expires_on.isoformat()}" for r in regs)
    return f"already expired: {listed} (saved as a record; not valid for matching)"


@dataclass
class SaveResult:
    physician: Physician
    created: bool
    changes: list[str]
    geocoded: bool | None  # None: not attempted (coordinates given or address unchanged), or not yet
    locate_after_commit: bool = False  # the caller commits, then calls locate_saved_physician


def geocode_needed(
    p: Physician | None, data: PhysicianData, changes: list[str], *, coordinates_are_authoritative: bool = True
) -> bool:
    """Whether saving ``data`` (with ``changes``, from ``changed_fields``) geocodes the address.

    Coordinates that differ from the stored ones (or any, for a new physician) are used as
    given. Coordinates equal to the stored ones with a changed address are the old address's (an
    export edited, the edit form's shown values): the new address is geocoded. Without
    coordinates, a new physician, a changed address or one not located yet is geocoded; with
    ``coordinates_are_authoritative=False`` (the edit form) empty coordinates always mean "geocode".
    """
    created = p is None
    address_changed = created or any(name in changes for name in ADDRESS_FIELDS)
    coords_given = data.latitude is not None and data.longitude is not None
    coords_new = coords_given and (created or "coordinates" in changes)
    if coords_given:
        return address_changed and not coords_new
    has_coords = p is not None and p.latitude is not None and p.longitude is not None
    return address_changed or not has_coords or not coordinates_are_authoritative


def _geocode(physician: Physician) -> bool:
    """Geocode through the geocoding service; never lets a geocoder problem stop a save."""
    try:
        from crm.services.geocoding import geocode_physician
    except ImportError as exc:
        if getattr(exc, "name", None) != "crm.services.geocoding":
            log.warning("geocoding unavailable: %s", exc)  # a broken module, not a missing one
        geocode_physician = None
    if geocode_physician is None:
        physician.geocode_status = GeocodeStatus.PENDING
        return False
    try:
        # Pending after an outage (retried by the geocode_retry job), failed when not found.
        return bool(geocode_physician(physician, fresh=True))
    except Exception as exc:  # noqa: BLE001 - a geocoder bug must not lose the admin's edit
        log.exception("geocoding physician %s failed", physician.id)
        physician.geocode_status = GeocodeStatus.FAILED
        physician.geocode_error = f"{type(exc).__name__}"[:300]
        return False


def _timezone_for(lat: float, lon: float) -> str | None:
    try:
        from tzfpy import get_tz
    except ImportError:  # pragma: no cover - tzfpy is a pinned requirement
        return None
    return get_tz(lon, lat) or None


def save_physician(
    data: PhysicianData,
    physician: Physician | None = None,
    *,
    conditions_by_slug: dict[str, Condition] | None = None,
    coordinates_are_authoritative: bool = True,
    geocode_later: bool = False,
    geocode_after_commit: bool = False,
) -> SaveResult:
    """Create or update one physician with its conditions and registrations.

    Coordinates: see ``geocode_needed`` (new coordinates are used as given; the stored ones
    with a changed address, or none, mean the address is geocoded). ``geocode_later``: leave
    the address ``pending`` for the ``geocode_retry`` job instead of calling the geocoder now.
    ``geocode_after_commit``: ``pending`` under a short lease, for the caller to locate once the
    save is committed (``locate_saved_physician``): an online geocoder takes seconds, and inside
    the save's transaction every other write would wait for it (on SQLite, intake included).
    """
    # Both ways in (the form, the CSV import) end here: the names lose invisible characters (a bidi
    # override shows "\u202eevil" as "live"); a control character fails this physician (the CSV line).
    data = replace(
        data,
        first_name=clean_name(data.first_name, "First name"),
        last_name=clean_name(data.last_name, "Last name"),
        practice_name=clean_name(data.practice_name, "Practice name"),
    )
    created = physician is None
    changes = changed_fields(physician, data)
    geocode = geocode_needed(physician, data, changes, coordinates_are_authoritative=coordinates_are_authoritative)
    if created:
        physician = Physician(npi=data.npi)
        db.session.add(physician)
    address_changed = created or any(name in changes for name in ADDRESS_FIELDS)
    coords_new = data.latitude is not None and data.longitude is not None and (created or "coordinates" in changes)

    for name in SCALAR_FIELDS:
        setattr(physician, name, getattr(data, name))
    physician.languages = list(data.languages)
    if data.notes is not None:
        physician.notes = data.notes

    if created or "conditions" in changes:
        if conditions_by_slug is None:
            conditions_by_slug = {c.slug: c for c in db.session.scalars(sa.select(Condition))}
        unknown = [s for s in data.conditions if s not in conditions_by_slug]
        if unknown:
            raise ValueError(f"Unknown condition slug(s): {', '.join(unknown)}.")
        physician.conditions = [conditions_by_slug[s] for s in sorted(set(data.conditions))]

    if created or "registrations" in changes:
        _sync_registrations(physician, data.registrations)

    geocoded: bool | None = None
    locate_after_commit = bool(geocode) and geocode_after_commit and not geocode_later
    if geocode:
        if address_changed:  # old coordinates belong to the old address
            physician.latitude = physician.longitude = physician.geocode_precision = None
        if geocode_later or geocode_after_commit:
            physician.geocode_status = GeocodeStatus.PENDING
            physician.geocode_attempts, physician.geocode_error = 0, None
            # After the commit the request locates it; the job takes it only if that never happens.
            lease = LOCATE_AFTER_COMMIT_LEASE if locate_after_commit else timedelta(0)
            physician.geocode_next_at = datetime.now(UTC) + lease
        else:
            geocoded = _geocode(physician)
    elif coords_new:
        check_coordinates_near_zip(data.latitude, data.longitude, data.zip)
        physician.latitude, physician.longitude = data.latitude, data.longitude
        physician.geocode_precision = GeocodePrecision.ROOFTOP
        physician.geocode_status = GeocodeStatus.OK
        physician.timezone = _timezone_for(data.latitude, data.longitude) or physician.timezone
    db.session.flush()
    return SaveResult(physician, created, changes, geocoded, locate_after_commit=locate_after_commit)


# How long a physician saved for locating after the commit is left to that request before the
# geocode_retry job may take it (the request died, or its lookup raised).
LOCATE_AFTER_COMMIT_LEASE = timedelta(minutes=2)


def geocoder_is_online(config) -> bool:
    """Whether saving a physician should locate it after the commit: an online service (seconds, and
    it may hang up to its timeout); the offline ZIP table answers in microseconds, inside the save."""
    try:
        from crm.services.geocoding import get_geocoder

        return get_geocoder(config).online
    except Exception:  # noqa: BLE001 - a broken geocoder setting: the save's own call reports it
        return False


def locate_saved_physician(physician_id: int, config, now: datetime | None = None) -> bool | None:
    """Locate a physician whose save was just committed ``pending`` (``geocode_after_commit``), holding
    no lock while the geocoder answers; commits. True located, False not (``pending`` with a backoff
    after an outage, ``failed`` when not found), None when someone saved another address meanwhile
    (their save locates that one) or it is no longer waiting."""
    from crm.services.edit_guard import lock_for_edit
    from crm.services.geocoding import Address, lookup, record_physician_result

    now = now or datetime.now(UTC)
    physician = db.session.get(Physician, physician_id)
    if physician is None or physician.geocode_status != GeocodeStatus.PENDING:
        return None
    addr = Address.of(physician)
    db.session.commit()  # no transaction stays open across the lookup
    try:
        result, error, final = lookup(addr, config, f"physician {physician_id}")
    except Exception:  # noqa: BLE001 - a geocoder bug leaves it pending for the job, never loses the save
        log.exception("geocoding physician %s failed", physician_id)
        return None
    physician = db.session.get(Physician, physician_id)
    lock_for_edit(physician)  # the row as committed now, held until our commit
    if physician.geocode_status != GeocodeStatus.PENDING or Address.of(physician) != addr:
        db.session.commit()
        return None
    located = record_physician_result(physician, result, error, final, now, config)
    db.session.commit()
    return located


def _sync_registrations(physician: Physician, wanted: list[RegistrationData]) -> None:
    check_unique_registration_states(wanted)
    by_state = {r.state: r for r in physician.registrations}
    keep = set()
    for reg in wanted:
        keep.add(reg.state)
        existing = by_state.get(reg.state)
        if existing is None:
            physician.registrations.append(Registration(state=reg.state, number=reg.number, expires_on=reg.expires_on))
            continue
        existing.number = reg.number
        if existing.expires_on != reg.expires_on:
            existing.expires_on = reg.expires_on
            existing.expiry_warned_at = None  # renewed (or corrected): warn again before the new date
    for state, existing in by_state.items():
        if state not in keep:
            physician.registrations.remove(existing)


def set_physician_active(physician: Physician, active: bool) -> bool:
    """Deactivate (never delete) or reactivate; returns whether anything changed."""
    if physician.active == active:
        return False
    physician.active = active
    db.session.flush()
    return True


def upcoming_appointments(physician: Physician, now: datetime | None = None, limit: int = 20) -> tuple[list, int]:
    """The physician's appointments still to happen (booked or confirmed, from now on), soonest
    first, at most ``limit``, and how many there are. Deactivating a physician leaves them booked:
    the admin is shown them to rebook or cancel."""
    now = now or datetime.now(UTC)
    where = (
        Appointment.physician_id == physician.id,
        Appointment.starts_at >= now,
        Appointment.status.in_(LIVE_APPOINTMENT),
    )
    rows = db.session.scalars(sa.select(Appointment).where(*where).order_by(Appointment.starts_at).limit(limit)).all()
    total = len(rows) if len(rows) < limit else db.session.scalar(sa.select(sa.func.count()).where(*where))
    return list(rows), total


# --- search -------------------------------------------------------------------------------------


@dataclass
class PhysicianFilters:
    q: str = ""
    state: str = ""
    active: str = ""  # "", "yes", "no"
    accepting: str = ""
    telehealth: str = ""
    expiring: str = ""  # "", "soon", "expired", "any" (soon or expired)
    located: str = ""  # "", "yes", "no" (no = geocoding pending or failed)


def desk_today(now: datetime | None = None) -> date:
    """The desk's date (``BUSINESS_TIMEZONE``, as the reports count days) for registration expiry
    in the admin lists, the directory and the warnings: from 19:00 in New York the UTC date has
    already turned, and a registration valid through today was shown expired. (Matching and
    booking go by the patient's own date.)"""
    tz = current_app.config.get("BUSINESS_TIMEZONE") or "America/New_York"
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(tz)).date()


def _yes_no(column, value: str):
    if value == "yes":
        return column.is_(True)
    if value == "no":
        return column.is_(False)
    return None


def physician_select(filters: PhysicianFilters, today: date | None = None) -> sa.Select:
    today = today or desk_today()
    stmt = sa.select(Physician).options(selectinload(Physician.registrations))
    q = (filters.q or "").strip()
    if q:
        digits = re.sub(r"\D", "", q)
        # A phone number as people write it: (305) 555-0100, 305.555.0100, +1 305 555 0100. Phones are
        # stored E.164 (+13055550100), so its last 10 digits are looked for.
        phone = digits[-10:] if len(digits) >= 7 and PHONE_QUERY_RE.match(q) else ""
        if len(digits) == 10 and digits == q:
            # Ten digits: an NPI, or a phone number typed without punctuation.
            stmt = stmt.where(sa.or_(Physician.npi == digits, Physician.phone == f"+1{digits}"))
        else:
            # autoescape: a typed % or _ is that character, not LIKE's "anything" (q=% listed everyone).
            needle = q.lower()
            full = sa.func.lower(Physician.first_name + " " + Physician.last_name, type_=sa.String)
            # "Garcia, Omar" as the list writes names, or "garcia omar": the last name first.
            last_first = sa.func.lower(Physician.last_name + " " + Physician.first_name, type_=sa.String)
            words = " ".join(re.split(r"[\s,]+", needle)).strip()
            stmt = stmt.where(
                sa.or_(
                    full.contains(needle, autoescape=True),
                    last_first.contains(words, autoescape=True) if words else sa.false(),
                    *(
                        sa.func.lower(column, type_=sa.String).contains(needle, autoescape=True)
                        for column in (Physician.last_name, Physician.city, Physician.practice_name)
                    ),
                    sa.func.lower(Physician.email, type_=sa.String).contains(needle, autoescape=True)
                    if "@" in q
                    else sa.false(),
                    Physician.phone.like(f"%{phone}%") if phone else sa.false(),
                    Physician.npi.like(f"{digits}%") if digits and digits == q else sa.false(),
                    Physician.zip.like(f"{q}%") if q.isdigit() else sa.false(),
                )
            )
    if filters.state:
        registered_there = sa.exists().where(
            Registration.physician_id == Physician.id, Registration.state == filters.state
        )
        stmt = stmt.where(sa.or_(Physician.state == filters.state, registered_there))
    for column, value in (
        (Physician.active, filters.active),
        (Physician.accepting_new, filters.accepting),
        (Physician.offers_telehealth, filters.telehealth),
    ):
        clause = _yes_no(column, value)
        if clause is not None:
            stmt = stmt.where(clause)
    if filters.located == "yes":
        stmt = stmt.where(Physician.geocode_status == GeocodeStatus.OK)
    elif filters.located == "no":
        stmt = stmt.where(Physician.geocode_status != GeocodeStatus.OK)
    if filters.expiring:
        soon = today + timedelta(days=EXPIRY_WARNING_DAYS)
        cond = {
            "soon": sa.and_(Registration.expires_on >= today, Registration.expires_on <= soon),
            "expired": Registration.expires_on < today,
            "any": Registration.expires_on <= soon,
        }.get(filters.expiring)
        if cond is not None:
            stmt = stmt.where(sa.exists().where(Registration.physician_id == Physician.id, cond))
    return stmt.order_by(Physician.last_name, Physician.first_name, Physician.id)


def registration_status(reg: Registration | RegistrationData, today: date | None = None) -> tuple[str, int]:
    """("expired" | "expiring" | "ok", days until expiry)."""
    today = today or desk_today()
    days = (reg.expires_on - today).days
    if days < 0:
        return "expired", days
    if days <= EXPIRY_WARNING_DAYS:
        return "expiring", days
    return "ok", days


def expiry_summary(today: date | None = None) -> dict[str, int]:
    """How many registrations of active physicians have expired or expire within 30 days."""
    today = today or desk_today()
    soon = today + timedelta(days=EXPIRY_WARNING_DAYS)
    base = sa.select(sa.func.count()).select_from(Registration).join(Physician).where(Physician.active.is_(True))
    return {
        "expired": db.session.scalar(base.where(Registration.expires_on < today)) or 0,
        "expiring": db.session.scalar(base.where(Registration.expires_on >= today, Registration.expires_on <= soon))
        or 0,
    }


def unlocated_count() -> int:
    """Active physicians without usable coordinates (geocoding pending or failed): not matched by distance."""
    return (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Physician)
            .where(Physician.active.is_(True), Physician.geocode_status != GeocodeStatus.OK)
        )
        or 0
    )


def expiring_registrations(today: date | None = None, limit: int = 20) -> list[Registration]:
    today = today or desk_today()
    soon = today + timedelta(days=EXPIRY_WARNING_DAYS)
    return list(
        db.session.scalars(
            sa.select(Registration)
            .join(Physician)
            .options(selectinload(Registration.physician))
            .where(Physician.active.is_(True), Registration.expires_on <= soon)
            .order_by(Registration.expires_on, Registration.id)
            .limit(limit)
        )
    )


# --- scheduler job ------------------------------------------------------------------------------


def warn_expiring_registrations(now: datetime) -> int:
    """Notify every active admin once about each registration that expires within 30 days.

    Only registrations of active physicians that have not expired yet and were not
    warned about already (``expiry_warned_at``); each notification has a dedupe key,
    so running twice never notifies twice. Returns the number of registrations warned.
    """
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    today = desk_today(now)
    soon = today + timedelta(days=EXPIRY_WARNING_DAYS)
    regs = list(
        db.session.scalars(
            sa.select(Registration)
            .join(Physician)
            .options(selectinload(Registration.physician))
            .where(
                Physician.active.is_(True),
                Registration.expiry_warned_at.is_(None),
                Registration.expires_on >= today,
                Registration.expires_on <= soon,
            )
            .order_by(Registration.expires_on, Registration.id)
        )
    )
    if not regs:
        return 0
    admins = active_admins()
    if not admins:
        # Nobody to tell: marking them warned would keep the admin created later from ever hearing.
        log.warning("registration expiry warnings: %d registration(s) expiring, no active admin to notify", len(regs))
        return 0
    keys = {
        (reg.id, admin.id): f"{REG_EXPIRY_KEY}:{reg.id}:{reg.expires_on.isoformat()}:{admin.id}"
        for reg in regs
        for admin in admins
    }
    existing = set()
    key_list = list(keys.values())
    for i in range(0, len(key_list), 500):
        existing.update(
            db.session.scalars(
                sa.select(Notification.dedupe_key).where(Notification.dedupe_key.in_(key_list[i : i + 500]))
            )
        )
    for reg in regs:
        doc = reg.physician
        days = (reg.expires_on - today).days
        when = "today" if days == 0 else ("tomorrow" if days == 1 else f"in {days} days")
        message = (
            f"Registration {reg.state} {reg.number} of {doc.full_name} (NPI {doc.npi}) "
            f"expires {when}, on {reg.expires_on.isoformat()}. Renew it or update the record."
        )
        for admin in admins:
            key = keys[(reg.id, admin.id)]
            if key in existing:
                continue
            db.session.add(
                Notification(user_id=admin.id, kind="registration_expiring", message=message, dedupe_key=key)
            )
        reg.expiry_warned_at = now
    db.session.flush()
    log.info("registration expiry warnings: %d registration(s), %d admin(s)", len(regs), len(admins))
    return len(regs)


REG_EXPIRY_KEY = "reg-expiry"  # an expiry alert's dedupe key: reg-expiry:<registration id>:<date>:<admin id>


def physicians_of_alerts(notes) -> dict[int, int]:
    """For "registration expiring" alerts (dedupe key ``reg-expiry:<registration id>:…``): alert id ->
    the physician whose registration it is, so the alert can open the physician's page."""
    reg_of = {}
    for note in notes:
        parts = (note.dedupe_key or "").split(":")
        if (
            note.kind == "registration_expiring"
            and len(parts) > 1
            and parts[0] == REG_EXPIRY_KEY
            and parts[1].isdigit()
        ):
            reg_of[note.id] = int(parts[1])
    if not reg_of:
        return {}
    doc_of_reg = dict(
        db.session.execute(
            sa.select(Registration.id, Registration.physician_id).where(Registration.id.in_(set(reg_of.values())))
        ).all()
    )
    return {note_id: doc_of_reg[reg_id] for note_id, reg_id in reg_of.items() if reg_id in doc_of_reg}


# --- state programs and conditions --------------------------------------------------------------

STATE_PROGRAM_FIELDS = (
    "program_type", "physician_discretion", "telehealth_allowed", "minimum_age", "patient_fee_note",
    "registry_url", "reviewed_on", "notes",
)  # fmt: skip


def update_state_program(program: StateProgram, values: dict, condition_ids: list[int]) -> list[str]:
    """Apply an admin's edit; returns the changed field names (empty: nothing to save)."""
    changes = []
    for name in STATE_PROGRAM_FIELDS:
        if name in values and getattr(program, name) != values[name]:
            setattr(program, name, values[name])
            changes.append(name)
    wanted = sorted(set(condition_ids))
    if wanted != sorted(c.id for c in program.qualifying_conditions):
        found = list(db.session.scalars(sa.select(Condition).where(Condition.id.in_(wanted))))
        if len(found) != len(wanted):
            raise ValueError("One of the chosen conditions no longer exists: reload the page.")
        program.qualifying_conditions = sorted(found, key=lambda c: c.name)
        changes.append("qualifying_conditions")
    if changes:
        db.session.flush()
    return changes


def requeue_state_leads(state: str) -> int:
    """Every open lead of a patient in ``state`` is checked again by the ``enrich_new`` job
    (eligibility and match), as a new request is: after its program's rules changed, the stored
    results speak of the old ones. Returns how many."""
    from crm.models import Lead, Patient
    from crm.models.enums import OPEN_STATUSES

    in_state = sa.select(Patient.id).where(Patient.state == state)
    result = db.session.execute(
        sa.update(Lead)
        .where(Lead.patient_id.in_(in_state), Lead.status.in_([s.value for s in OPEN_STATUSES]))
        .where(Lead.matched_at.is_not(None))
        .values(matched_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


CONDITION_FIELDS = ("name", "slug", "synonyms", "summary", "body", "published")


class ConditionClash(ValueError):
    """A condition value another condition already has; ``field`` names the form field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def _check_condition_terms(condition: Condition | None, values: dict) -> None:
    """A name, slug or synonym being added may not be another condition's name, synonym or slug words:
    free text ("pain") maps to one condition, so the second one would silently never get it."""
    from crm.services.intake import words_of

    def norm(text: str) -> str:
        return " ".join(words_of(text))

    had = set()
    if condition is not None:
        had = {norm(t) for t in [condition.name, condition.slug.replace("-", " "), *(condition.synonyms or [])]}
    # The slug's words count as the condition's own ("trauma" as a slug would take "trauma" from PTSD).
    adding = [("name", values["name"]), ("slug", values.get("slug") or "")]
    adding += [("synonyms", s) for s in values["synonyms"]]
    adding = [(f, t) for f, t in adding if norm(t) and norm(t) not in had]
    if not adding:
        return
    for other in db.session.scalars(sa.select(Condition).where(Condition.id != (condition.id if condition else -1))):
        theirs = {norm(t) for t in [other.name, other.slug.replace("-", " "), *(other.synonyms or [])]}
        for field_name, text in adding:
            if norm(text) in theirs:
                what = {"name": "The name", "slug": "The page address (slug)"}.get(field_name, "The synonym")
                raise ConditionClash(
                    f"{what} {text!r} already stands for {other.name}: patients' free text can map to one "
                    "condition only. Remove it there first, or use another word.",
                    field_name,
                )


def _same_value(stored, given) -> bool:
    """Text compared as the form cleans it (line ends, surrounding blanks): a seeded body ends in a
    newline the form strips, and saving it untouched was logged as a change to the page text."""
    if isinstance(stored, str) and isinstance(given, str):
        return stored.replace("\r\n", "\n").strip() == given.replace("\r\n", "\n").strip()
    return stored == given


def save_condition(condition: Condition | None, values: dict) -> tuple[Condition, list[str]]:
    """Create or update a condition; the slug must be unique, and so must a name or synonym being
    added (see ``_check_condition_terms``). Returns (condition, changed fields)."""
    values = {**values, "name": clean_name(values["name"], refuse_controls=False)}  # the form refuses controls
    slug = values["slug"]
    clash = db.session.scalar(
        sa.select(Condition).where(Condition.slug == slug, Condition.id != (condition.id if condition else -1))
    )
    if clash is not None:
        raise ValueError(f"The slug {slug!r} is already used by {clash.name}.")
    _check_condition_terms(condition, values)
    created = condition is None
    if created:
        condition = Condition(slug=slug, name=values["name"])
        db.session.add(condition)
    elif condition.slug != slug:
        # The old address keeps working (a redirect) and old payloads still map.
        condition.former_slugs = [s for s in [*(condition.former_slugs or []), condition.slug] if s != slug]
    # A slug in use now is nobody's former one any more, or two conditions would claim it.
    with db.session.no_autoflush:  # the new row is written by the flush below, where a clash is caught
        others = db.session.scalars(sa.select(Condition).where(Condition.id != (condition.id or -1))).all()
    for other in others:
        if slug in (other.former_slugs or []):
            other.former_slugs = [s for s in other.former_slugs if s != slug]
    changes = [name for name in CONDITION_FIELDS if created or not _same_value(getattr(condition, name), values[name])]
    for name in changes:
        setattr(condition, name, values[name])
    try:
        db.session.flush()
    except sa.exc.IntegrityError:
        # Saved a moment ago with this slug (a double click on Save, two admins): the unique index
        # refuses the second; the caller rolls back and shows this on the slug field.
        raise ValueError(f"The slug {slug!r} was taken a moment ago by another save: reload the list.") from None
    return condition, (["new"] if created else changes)
