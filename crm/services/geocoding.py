"""Geocoding behind geopy's interface: an offline US geocoder by default, any geopy service by configuration.

``GEOCODER=offline`` resolves addresses by ZIP (then by city + state, then by state) from the
``zipcodes`` package, compiled into the package: nothing is ever downloaded. Any other name is a
geopy service (``nominatim``, ``arcgis``, ...) built with ``GEOCODER_USER_AGENT``,
``GEOCODER_TIMEOUT`` and ``GEOCODER_OPTIONS`` and wrapped in geopy's ``RateLimiter``; its time zone
comes from ``tzfpy``. Online answers are cached in ``geocode_cache`` by normalised address.

Only the address (street, city, state, ZIP, country) is ever sent to a geocoder: never a name,
email, phone or condition. Geocoders form a small registry (name -> factory) so tests can put a
fake online service in place of a real one.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from geopy.exc import GeopyError
from geopy.geocoders.base import Geocoder
from geopy.location import Location

from crm.extensions import db
from crm.models import GeocodeCache, Patient, Physician
from crm.models.enums import GeocodePrecision, GeocodeStatus

log = logging.getLogger(__name__)

OFFLINE = "offline"
COUNTRY = "USA"
TRAILING_ZIP_RE = re.compile(r"\b(\d{5})(?:-\d{4})?\s*(?:,\s*USA?)?\s*$", re.IGNORECASE)
STATE_RE = re.compile(r"(?:^|,)\s*([A-Za-z]{2})\s*(?:\d{5}(?:-\d{4})?)?\s*(?:,\s*USA?)?\s*$")


class GeocodeError(RuntimeError):
    """The geocoder could not answer (outage, timeout, quota): try again later."""


@dataclass(frozen=True)
class Address:
    """The only thing a geocoder ever sees."""

    street: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""

    @classmethod
    def of(cls, obj) -> Address:
        return cls(
            street=(getattr(obj, "street", "") or "").strip(),
            city=(getattr(obj, "city", "") or "").strip(),
            state=(getattr(obj, "state", "") or "").strip().upper(),
            zip=(getattr(obj, "zip", "") or "").strip(),
        )

    @property
    def empty(self) -> bool:
        return not (self.zip or (self.city and self.state) or self.state)

    def query(self) -> str:
        """One line, e.g. ``12 Main St, Miami, FL 33101, USA``."""
        region = " ".join(p for p in (self.state, self.zip[:10]) if p)
        return ", ".join(p for p in (self.street, self.city, region, COUNTRY) if p)

    def parts(self) -> dict[str, str]:
        """The address as a structured query (``OfflineGeocoder`` reads it without parsing)."""
        return {"street": self.street, "city": self.city, "state": self.state, "postalcode": self.zip}

    def key(self) -> str:
        """Normalised cache key: case, punctuation and spacing do not matter."""
        text = re.sub(r"[^a-z0-9]+", " ", self.query().lower())
        return re.sub(r"\s+", " ", text).strip()[:400]


@dataclass(frozen=True)
class GeocodeResult:
    latitude: float
    longitude: float
    precision: GeocodePrecision
    state: str | None
    timezone: str | None


# --------------------------------------------------------------------------- offline data


def _coords(z: Mapping) -> tuple[float, float] | None:
    try:
        lat, lon = float(z.get("lat") or 0), float(z.get("long") or 0)
    except (TypeError, ValueError):
        return None
    return None if lat == 0 and lon == 0 else (lat, lon)  # "0","0" = unknown (APO/FPO and a few others)


@lru_cache(maxsize=1)
def _zip_index() -> tuple[dict[str, dict], dict[tuple[str, str], list[dict]], dict[str, list[dict]]]:
    """The located ZIPs, by ZIP, by (city, state) and by state (from ``_all_zips``: one load)."""
    by_zip: dict[str, dict] = {}
    by_city: dict[tuple[str, str], list[dict]] = {}
    by_state: dict[str, list[dict]] = {}
    for z in _all_zips().values():
        if _coords(z) is None:
            continue
        by_zip[z["zip_code"]] = z
        by_state.setdefault(z["state"], []).append(z)
        for city in [z["city"], *(z.get("acceptable_cities") or [])]:
            by_city.setdefault((city.lower(), z["state"]), []).append(z)
    return by_zip, by_city, by_state


def _centroid(rows: list[dict]) -> tuple[float, float, str | None]:
    pts = [_coords(z) for z in rows]
    lat = sum(p[0] for p in pts) / len(pts)
    lon = sum(p[1] for p in pts) / len(pts)
    tz = Counter(z.get("timezone") for z in rows if z.get("timezone")).most_common(1)
    return round(lat, 5), round(lon, 5), tz[0][0] if tz else None


@lru_cache(maxsize=1)
def _all_zips() -> dict[str, dict]:
    """Every ZIP of the ``zipcodes`` data, located or not."""
    import zipcodes

    return {z["zip_code"]: z for z in zipcodes.list_all()}


def zip_row(zip_code: str | None) -> dict | None:
    """The ``zipcodes`` row of a 5-digit ZIP (a ZIP+4 is read by its first five), located or not."""
    return _all_zips().get((zip_code or "")[:5])


def zip_known(zip_code: str) -> bool:
    """Whether the ``zipcodes`` data has this 5-digit ZIP (any kind: standard, PO box, unique,
    military, retired), located or not."""
    return (zip_code or "")[:5] in _all_zips()


def zip_location(zip_code: str) -> GeocodeResult | None:
    """Where the ``zipcodes`` package puts a ZIP: its centroid, or None when unknown.

    A ZIP the data has without coordinates (a PO box or a single firm's ZIP, "0","0" in the data)
    still names its city and state: it is placed at its city's centroid (precision ``city``),
    else its state's (``state``), with its own time zone, so the patient still gets a state
    program, a calling window and a telehealth list. Military ZIPs (AA, AE, AP) name no state of
    ours and stay unknown."""
    zip5 = (zip_code or "")[:5]
    by_zip, by_city, by_state = _zip_index()
    z = by_zip.get(zip5)
    if z is not None:
        lat, lon = _coords(z)
        return GeocodeResult(lat, lon, GeocodePrecision.ZIP, z["state"], z.get("timezone") or None)
    row = _all_zips().get(zip5)
    if row is None or row["state"] not in by_state:
        return None
    area = by_city.get((row["city"].lower(), row["state"]))
    lat, lon, tz = _centroid(area or by_state[row["state"]])
    precision = GeocodePrecision.CITY if area else GeocodePrecision.STATE
    return GeocodeResult(lat, lon, precision, row["state"], row.get("timezone") or tz)


@lru_cache(maxsize=64)
def state_timezone(state: str | None) -> str | None:
    """The time zone of most of the state's ZIPs (for a patient known only by state), or None."""
    rows = _zip_index()[2].get((state or "").upper())
    return _centroid(rows)[2] if rows else None


def _parse(query: str | Mapping) -> Address:
    if isinstance(query, Mapping):
        return Address(
            street=str(query.get("street") or ""),
            city=str(query.get("city") or ""),
            state=str(query.get("state") or "").upper(),
            zip=str(query.get("postalcode") or query.get("zip") or ""),
        )
    # The ZIP is read from the end of the line only: a house number has five digits too
    # ("10001 NW 7th Ave, Miami, FL 33150" is in Florida, not at New York's 10001).
    text = str(query).strip()
    zip_match = TRAILING_ZIP_RE.search(text)
    state_match = STATE_RE.search(text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and parts[-1].upper() in ("US", "USA"):
        parts = parts[:-1]
    city = ""
    if state_match and len(parts) >= 2:
        city = parts[-2]
    return Address(
        street=", ".join(parts[:-2]) if len(parts) > 2 else "",
        city=city,
        state=state_match.group(1).upper() if state_match else "",
        zip=zip_match.group(1) if zip_match else "",
    )


class OfflineGeocoder(Geocoder):
    """US ZIP / city + state / state lookups from the ``zipcodes`` package, through geopy's interface.

    ``Location.raw`` carries ``precision``, ``state`` and ``timezone``. Never touches the network.
    """

    deterministic = True  # the same address always gets the same answer: no point retrying "not found"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def geocode(self, query, *, exactly_one=True, **kwargs):
        addr = _parse(query)
        found = self._lookup(addr)
        if found is None:
            return None
        lat, lon, precision, state, tz, label = found
        raw = {"precision": str(precision), "state": state, "timezone": tz}
        loc = Location(label, (lat, lon), raw)
        return loc if exactly_one else [loc]

    def _lookup(self, addr: Address):
        by_zip, by_city, by_state = _zip_index()
        z = by_zip.get(addr.zip[:5]) if addr.zip else None
        if z is not None:
            lat, lon = _coords(z)
            label = f"{z['city']}, {z['state']} {z['zip_code']}"
            return lat, lon, GeocodePrecision.ZIP, z["state"], z.get("timezone") or None, label
        area = zip_location(addr.zip) if addr.zip else None  # a ZIP the data has without coordinates
        if area is not None and area.precision == GeocodePrecision.CITY:
            return area.latitude, area.longitude, area.precision, area.state, area.timezone, addr.zip[:5]
        if addr.city and addr.state:
            rows = by_city.get((addr.city.lower(), addr.state))
            if rows:
                lat, lon, tz = _centroid(rows)
                return lat, lon, GeocodePrecision.CITY, addr.state, tz, f"{rows[0]['city']}, {addr.state}"
        if area is not None:
            return area.latitude, area.longitude, area.precision, area.state, area.timezone, addr.zip[:5]
        if addr.state and addr.state in by_state:
            lat, lon, tz = _centroid(by_state[addr.state])
            return lat, lon, GeocodePrecision.STATE, addr.state, tz, addr.state
        return None

    def reverse(self, query, *, exactly_one=True, **kwargs):
        """The nearest ZIP centroid (a linear scan: reverse lookups are rare here)."""
        from crm.services.matching import haversine_miles

        lat, lon = (float(v) for v in (query if isinstance(query, list | tuple) else str(query).split(",")))
        best = min(_zip_index()[0].values(), key=lambda z: haversine_miles(lat, lon, *_coords(z)))
        b_lat, b_lon = _coords(best)
        raw = {"precision": "zip", "state": best["state"], "timezone": best.get("timezone"), "zip": best["zip_code"]}
        loc = Location(f"{best['city']}, {best['state']} {best['zip_code']}", (b_lat, b_lon), raw)
        return loc if exactly_one else [loc]


# --------------------------------------------------------------------------- the registry


def _config_get(config: Mapping | None, name: str, default=None):
    if config is None:
        from flask import current_app

        config = current_app.config
    value = config.get(name)
    return default if value in (None, "") else value


def _options(config: Mapping | None) -> dict[str, Any]:
    raw = _config_get(config, "GEOCODER_OPTIONS", "")
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ValueError("GEOCODER_OPTIONS must be a JSON object") from exc
    if not isinstance(value, dict):
        raise ValueError("GEOCODER_OPTIONS must be a JSON object")
    return value


def _geopy_factory(name: str) -> Callable[[Mapping | None], Geocoder]:
    def build(config: Mapping | None) -> Geocoder:
        from geopy.geocoders import get_geocoder_for_service

        cls = get_geocoder_for_service(name)
        options = {"user_agent": _config_get(config, "GEOCODER_USER_AGENT", "appointment-desk")}
        options["timeout"] = float(_config_get(config, "GEOCODER_TIMEOUT", 5))
        options.update(_options(config))
        return cls(**options)

    return build


GEOCODERS: dict[str, Callable[[Mapping | None], Geocoder]] = {OFFLINE: lambda config: OfflineGeocoder()}


def register_geocoder(name: str, factory: Callable[[Mapping | None], Geocoder]) -> None:
    """Add or replace a geocoder factory (tests put fakes here)."""
    GEOCODERS[name.lower()] = factory
    _cached_geocoder.cache_clear()


def provider_name(config: Mapping | None = None) -> str:
    return str(_config_get(config, "GEOCODER", OFFLINE)).strip().lower()


@dataclass
class ConfiguredGeocoder:
    """A geocoder plus what we need to know about it."""

    name: str
    geocoder: Geocoder
    call: Callable  # geocode(query) through the rate limiter for online services
    online: bool

    @property
    def deterministic(self) -> bool:
        return bool(getattr(self.geocoder, "deterministic", False))


@lru_cache(maxsize=8)
def _cached_geocoder(name: str, frozen: tuple) -> ConfiguredGeocoder:
    config = dict(frozen)
    factory = GEOCODERS.get(name) or _geopy_factory(name)
    geocoder = factory(config)
    if name == OFFLINE:
        return ConfiguredGeocoder(name, geocoder, geocoder.geocode, online=False)
    from geopy.extra.rate_limiter import RateLimiter

    delay = float(config.get("GEOCODER_MIN_DELAY") or (1.0 if name == "nominatim" else 0.0))
    # swallow_exceptions=False: an outage must surface, so the patient stays pending and is retried.
    call = RateLimiter(geocoder.geocode, min_delay_seconds=delay, max_retries=0, swallow_exceptions=False)
    return ConfiguredGeocoder(name, geocoder, call, online=True)


CONFIG_KEYS = ("GEOCODER", "GEOCODER_OPTIONS", "GEOCODER_USER_AGENT", "GEOCODER_TIMEOUT", "GEOCODER_MIN_DELAY")


def get_geocoder(config: Mapping | None = None) -> ConfiguredGeocoder:
    """The configured geocoder (built once per configuration). Unknown service names raise ValueError."""
    name = provider_name(config)
    frozen = tuple((k, str(_config_get(config, k, ""))) for k in CONFIG_KEYS)
    try:
        return _cached_geocoder(name, frozen)
    except Exception as exc:
        if isinstance(exc, GeopyError | ValueError | TypeError):
            raise ValueError(f"Geocoder {name!r} cannot be configured: {exc}") from exc
        raise


# --------------------------------------------------------------------------- resolving an address

ONLINE_PRECISION = {
    "house": GeocodePrecision.ROOFTOP,
    "building": GeocodePrecision.ROOFTOP,
    "rooftop": GeocodePrecision.ROOFTOP,
    "point_address": GeocodePrecision.ROOFTOP,
    "pointaddress": GeocodePrecision.ROOFTOP,
    "road": GeocodePrecision.STREET,
    "street": GeocodePrecision.STREET,
    "streetaddress": GeocodePrecision.STREET,
    "range_interpolated": GeocodePrecision.STREET,
    "postcode": GeocodePrecision.ZIP,
    "postal": GeocodePrecision.ZIP,
    "zip": GeocodePrecision.ZIP,
    "city": GeocodePrecision.CITY,
    "town": GeocodePrecision.CITY,
    "village": GeocodePrecision.CITY,
    "locality": GeocodePrecision.CITY,
    "state": GeocodePrecision.STATE,
    "region": GeocodePrecision.STATE,
}


def _online_precision(raw: Mapping, addr: Address) -> GeocodePrecision:
    for key in ("precision", "addresstype", "type", "location_type", "Addr_type", "result_type"):
        value = raw.get(key) if isinstance(raw, Mapping) else None
        if isinstance(value, str):
            found = ONLINE_PRECISION.get(value.lower())
            if found:
                return found
    if addr.street:
        return GeocodePrecision.STREET
    if addr.zip:
        return GeocodePrecision.ZIP
    return GeocodePrecision.CITY if addr.city else GeocodePrecision.STATE


def _online_state(raw: Mapping, addr: Address, lat: float, lon: float) -> str | None:
    details = raw.get("address") if isinstance(raw, Mapping) else None
    if isinstance(details, Mapping):
        iso = details.get("ISO3166-2-lvl4") or ""
        if isinstance(iso, str) and iso.startswith("US-") and len(iso) == 5:
            return iso[3:]
    if isinstance(raw, Mapping) and isinstance(raw.get("state"), str) and len(raw["state"]) == 2:
        return raw["state"].upper()
    if addr.zip:
        z = zip_location(addr.zip)
        if z is not None:
            return z.state
    return addr.state or None


def timezone_at(latitude: float, longitude: float) -> str | None:
    from tzfpy import get_tz

    return get_tz(longitude, latitude) or None


def _from_location(loc: Location, addr: Address, online: bool) -> GeocodeResult:
    raw = loc.raw if isinstance(loc.raw, Mapping) else {}
    lat, lon = float(loc.latitude), float(loc.longitude)
    if not online:
        return GeocodeResult(lat, lon, GeocodePrecision(raw["precision"]), raw.get("state"), raw.get("timezone"))
    return GeocodeResult(
        lat, lon, _online_precision(raw, addr), _online_state(raw, addr, lat, lon), timezone_at(lat, lon)
    )


def _cache_get(provider: str, key: str) -> GeocodeResult | None:
    row = db.session.scalar(
        sa.select(GeocodeCache).where(GeocodeCache.provider == provider, GeocodeCache.query_key == key)
    )
    if row is None or row.latitude is None or row.longitude is None or row.precision is None:
        return None
    return GeocodeResult(row.latitude, row.longitude, row.precision, row.state, row.timezone)


def _cache_put(provider: str, key: str, result: GeocodeResult) -> None:
    try:
        with db.session.begin_nested():
            db.session.add(
                GeocodeCache(
                    provider=provider,
                    query_key=key,
                    latitude=result.latitude,
                    longitude=result.longitude,
                    precision=result.precision,
                    state=result.state,
                    timezone=result.timezone,
                )
            )
    except sa.exc.IntegrityError:
        pass  # another worker cached the same address first


def geocode_address(addr: Address, config: Mapping | None = None) -> GeocodeResult | None:
    """Resolve an address; None when the geocoder does not know it. Raises GeocodeError on an outage.

    Online services are asked once per normalised address (``geocode_cache``); the offline
    lookup is an in-memory dictionary, so it is not cached.
    """
    if addr.empty:
        return None
    geo = get_geocoder(config)
    key = addr.key()
    if geo.online:
        hit = _cache_get(geo.name, key)
        if hit is not None:
            return hit
    try:
        # The offline lookup takes the address's parts as they were typed; a service, one line.
        loc = geo.call(addr.query() if geo.online else addr.parts())
    except GeopyError as exc:
        raise GeocodeError(f"{geo.name}: {type(exc).__name__}") from exc
    except (OSError, TimeoutError) as exc:
        raise GeocodeError(f"{geo.name}: {type(exc).__name__}") from exc
    if isinstance(loc, list):
        loc = loc[0] if loc else None
    if loc is None:
        return None
    result = _from_location(loc, addr, geo.online)
    if geo.online:
        _cache_put(geo.name, key, result)
    return result


# --------------------------------------------------------------------------- physicians and patients


class AddressChanged(RuntimeError):
    """Someone saved a different address while the geocoder was answering for the old one."""


def ensure_address_unchanged(obj, located: Address) -> None:
    """Flush a geocoder result, then check the row still holds the address that was located.

    Jobs geocode outside any lock (an online service can take seconds); if a specialist or an admin
    saved a new address meanwhile, writing coordinates for the old one would be wrong and silent.
    After the flush this transaction holds the row (PostgreSQL row lock, SQLite's write lock), so
    the check and the commit that follows see the same row. A state the geocoder itself just set
    (patients take the state of their ZIP) is not a change.
    """
    db.session.flush()
    table = type(obj).__table__
    row = db.session.execute(
        sa.select(table.c.street, table.c.city, table.c.state, table.c.zip).where(table.c.id == obj.id)
    ).one()
    now_there = Address.of(row)
    same_place = (now_there.street, now_there.city, now_there.zip) == (located.street, located.city, located.zip)
    if not same_place or now_there.state not in (located.state, (getattr(obj, "state", "") or "").upper()):
        raise AddressChanged(f"{table.name} {obj.id}: the address changed while it was being located")


def geocode_physician(
    physician: Physician, config: Mapping | None = None, now: datetime | None = None, *, fresh: bool = False
) -> bool:
    """Locate a physician's practice address; True when located. ``fresh``: the address was just
    saved, so earlier attempts no longer count. A geocoder outage leaves the physician ``pending``
    with a backoff (the ``geocode_retry`` job tries again); not found, or the last attempt, ``failed``."""
    if fresh:
        physician.geocode_attempts = 0
    result, error, final_failure = _attempt(physician, config)
    return record_physician_result(physician, result, error, final_failure, now or datetime.now(UTC), config)


def record_physician_result(
    physician: Physician,
    result: GeocodeResult | None,
    error: str | None,
    final_failure: bool,
    now: datetime,
    config: Mapping | None,
) -> bool:
    """Store one lookup's answer for a physician, from any path (the save, the job, the command, an
    online lookup after the save's commit); True when located."""
    if result is not None and result.precision == GeocodePrecision.STATE:
        # A state's centre is no practice location: a distance from it would be made up, so the
        # physician is listed for telehealth only until an admin corrects the address.
        result, error, final_failure = None, STATE_ONLY, True
        physician.latitude = physician.longitude = physician.geocode_precision = None
    if result is None:
        record_geocode_failure(physician, error, final_failure, now, config)
        return False
    record_success(physician, result)
    return True


STATE_ONLY = "located only to the state: check the street, city and ZIP"


UNAVAILABLE = "geocoder unavailable"  # how geocode_error starts when the service did not answer


def unavailable(error: str | None) -> bool:
    """Whether a stored ``geocode_error`` says the geocoder did not answer (an outage, a bad API key),
    as opposed to the address not being found."""
    return bool(error) and error.startswith(UNAVAILABLE)


def _attempt(obj, config: Mapping | None) -> tuple[GeocodeResult | None, str | None, bool]:
    """One geocoder call for ``obj``'s address: (result, error, whether the failure is final)."""
    return lookup(Address.of(obj), config, f"{type(obj).__name__.lower()} {obj.id}")


def lookup(addr: Address, config: Mapping | None, what: str) -> tuple[GeocodeResult | None, str | None, bool]:
    """One geocoder call for an address, touching no row: (result, error, whether the failure is final).
    ``what`` names the record in the log line (never the address)."""
    if addr.empty:
        return None, "no address to locate (no ZIP, city or state)", True
    geo = get_geocoder(config)
    try:
        result = geocode_address(addr, config)
    except GeocodeError as exc:
        # the class name only: a geocoder's message may echo the address back
        log.warning("geocoding %s failed: %s", what, type(exc).__name__)
        return None, f"{UNAVAILABLE} ({exc})", False
    if result is None:
        return None, "address not found", geo.deterministic  # an online service may answer later
    return result, None, False


def record_success(obj, result: GeocodeResult) -> None:
    obj.latitude, obj.longitude = result.latitude, result.longitude
    obj.geocode_precision = result.precision
    obj.timezone = result.timezone or obj.timezone
    obj.geocode_status = GeocodeStatus.OK
    obj.geocode_attempts = (obj.geocode_attempts or 0) + 1
    obj.geocode_next_at = None
    obj.geocode_error = None


def record_geocode_failure(obj, error: str, final: bool, now: datetime, config: Mapping | None) -> bool:
    """Count the attempt; ``failed`` when final or the last one, else ``pending`` with a backoff.
    Returns whether it is failed for good."""
    obj.geocode_attempts = (obj.geocode_attempts or 0) + 1
    obj.geocode_error = error[:300]
    if final or obj.geocode_attempts >= max_attempts(config):
        obj.geocode_status = GeocodeStatus.FAILED
        obj.geocode_next_at = None
        return True
    obj.geocode_status = GeocodeStatus.PENDING
    obj.geocode_next_at = now + retry_delay(obj.geocode_attempts, config)
    return False


def retry_delay(attempts: int, config: Mapping | None = None) -> timedelta:
    """Backoff after ``attempts`` failures: base, 2x base, 4x base, ... capped at 12 h."""
    base = int(_config_get(config, "GEOCODE_RETRY_BASE_SECONDS", 300))
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 12 * 3600))


def max_attempts(config: Mapping | None = None) -> int:
    return int(_config_get(config, "GEOCODE_MAX_ATTEMPTS", 6))


@dataclass
class PatientGeocode:
    ok: bool
    final: bool  # True: located, or given up (status failed)
    error: str | None = None
    changed: bool = False  # the location (coordinates or state) is not what it was

    @property
    def unavailable(self) -> bool:
        return unavailable(self.error)

    def __bool__(self) -> bool:
        return self.ok


def geocode_patient(patient: Patient, now: datetime | None = None, config: Mapping | None = None) -> PatientGeocode:
    """Locate a patient; on failure schedule a retry with backoff, and give up after the last attempt.

    Sets latitude, longitude, precision, state (from the ZIP when it has one) and time zone. A
    failure still gives a patient without a state the state and time zone of their ZIP.
    """
    before = (patient.latitude, patient.longitude, patient.state)
    result, error, final_failure = _attempt(patient, config)
    if result is None:
        final = record_geocode_failure(patient, error, final_failure, now or datetime.now(UTC), config)
        state_from_zip(patient)
        return PatientGeocode(ok=False, final=final, error=error, changed=patient.state != before[2])
    record_success(patient, result)
    if result.state:
        patient.state = result.state  # where the patient lives decides the state program
    changed = (patient.latitude, patient.longitude, patient.state) != before
    return PatientGeocode(ok=True, final=True, changed=changed)


def state_from_zip(patient: Patient) -> bool:
    """A patient without a state (a form asks only for the ZIP) takes their ZIP's state and time
    zone from the offline table, so eligibility and the telehealth list need not wait for an
    online geocoder that is down, or gave up. Coordinates stay empty: the patient is not located
    yet, and a later answer replaces both. True when a state was set."""
    if patient.state or not patient.zip:
        return False
    found = zip_location(patient.zip)
    if found is None:
        return False
    patient.state = found.state
    patient.timezone = patient.timezone or found.timezone
    return True


def reset_patient_location(patient: Patient, now: datetime | None = None) -> None:
    """The address changed: the old coordinates belong to the old address; locate again."""
    patient.latitude = patient.longitude = patient.geocode_precision = None
    patient.timezone = None  # the old address's: until located, the new ZIP's zone is used
    patient.geocode_status = GeocodeStatus.PENDING
    patient.geocode_attempts = 0
    patient.geocode_error = None
    patient.geocode_next_at = now or datetime.now(UTC)
