"""Physician matching (SPEC 6), explainable and indexed.

A physician is eligible for a lead when: active and accepting new patients; an unexpired
registration in the patient's state; treats the condition (or treats all); under weekly capacity;
and the mode fits (in person: inside the search radius; telehealth: the state allows it and the
physician offers it).

In person: the radius widens 25 -> 50 -> 100 -> 250 miles until at least 3 eligible physicians lie
inside it; those inside are ranked by great-circle distance, ties within 0.1 mile broken by
priority, then by fewest bookings in the last 7 days; the first 10 are kept. Telehealth: eligible
physicians offering telehealth, ranked by priority, fewest bookings, distance; the first 10.
Excluded: the physicians inside the final radius that failed a rule, nearest first, each with its
reason (at most ``EXCLUDED_LIMIT``).

The indexed path never scans the directory: it reads physicians ring by ring around the patient
with bounding-box queries on ``ix_physicians_lat_lon`` (registration, conditions and bookings come
with each row as indexed correlated subqueries), and stops as soon as the answer cannot change.
``match_bruteforce`` computes the same answer from every physician; tests and ``bench/match.py``
check that both agree. Decisions and measurements: docs/matching.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Appointment, Lead, Physician, Registration
from crm.models.directory import physician_conditions
from crm.models.enums import AppointmentStatus, GeocodePrecision
from crm.services.eligibility import condition_words, evaluate_lead

EARTH_RADIUS_MILES = 3958.7613
RADIUS_STEPS = (25, 50, 100, 250)
RINGS = (2, 5, 10, 25, 50, 100, 250)  # read order; every radius step is a ring boundary
MIN_IN_PERSON = 3
LIMIT = 10
TIE_MILES = 0.1
EXCLUDED_LIMIT = 25
BOOKINGS_WINDOW = timedelta(days=7)
EPS = 1e-9

P = Physician.__table__
R = Registration.__table__
PC = physician_conditions
A = Appointment.__table__


def haversine_miles(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_MILES * math.asin(min(1.0, math.sqrt(h)))


def bounding_box(lat: float, lon: float, miles: float) -> tuple[float, float, float, float]:
    """(min_lat, max_lat, min_lon, max_lon) containing every point within ``miles`` (great circle)."""
    ang = miles / EARTH_RADIUS_MILES
    dlat = math.degrees(ang) + 1e-7
    lat0, lat1 = lat - dlat, lat + dlat
    cos_lat = math.cos(math.radians(lat))
    if lat0 <= -90 or lat1 >= 90 or math.sin(ang) >= cos_lat:
        return max(lat0, -90.0), min(lat1, 90.0), -180.0, 180.0  # the circle reaches a pole
    dlon = math.degrees(math.asin(math.sin(ang) / cos_lat)) + 1e-7
    lon0, lon1 = lon - dlon, lon + dlon
    if lon0 < -180 or lon1 > 180:
        return lat0, lat1, -180.0, 180.0  # crosses the antimeridian (western Aleutians): whole band
    return lat0, lat1, lon0, lon1


@dataclass(frozen=True)
class Context:
    lead_id: int | None
    origin: tuple[float, float] | None
    precision: str | None
    state: str | None
    condition_id: int | None
    condition_name: str | None
    telehealth: bool  # the state allows telehealth certification
    today: date
    since: datetime  # bookings window start


@dataclass(slots=True)
class Doc:
    id: int
    npi: str
    name: str
    latitude: float | None
    longitude: float | None
    accepting_new: bool
    offers_in_person: bool
    offers_telehealth: bool
    priority: int
    weekly_capacity: int
    reg_expires: date | None
    n_conditions: int
    treats: bool
    bookings: int
    d: float | None = None
    reason: str | None = None  # why excluded (None: passes the rules for at least one mode)
    in_person: bool = False
    telehealth: bool = False


def classify(doc: Doc, ctx: Context) -> Doc:
    """Apply the rules in order; the first that fails is the reason."""
    reason = None
    if not doc.accepting_new:
        reason = "not accepting new patients"
    elif not ctx.state:
        reason = "patient's state unknown"
    elif doc.reg_expires is None:
        reason = f"no registration in {ctx.state}"
    elif doc.reg_expires < ctx.today:
        reason = f"registration expired {doc.reg_expires.isoformat()}"
    elif ctx.condition_id is not None and doc.n_conditions > 0 and not doc.treats:
        reason = f"does not treat {condition_words(ctx.condition_name or 'this condition')}"
    elif doc.bookings >= doc.weekly_capacity:
        reason = "at weekly capacity"
    if reason is None:
        doc.in_person = doc.offers_in_person
        doc.telehealth = ctx.telehealth and doc.offers_telehealth
        if not (doc.in_person or doc.telehealth):
            if doc.offers_telehealth:
                reason = f"telehealth only, and {ctx.state} does not allow telehealth certification"
            else:
                reason = "offers neither in-person nor telehealth visits"
    doc.reason = reason
    return doc


# --------------------------------------------------------------------------- ranking (shared)


def _by_distance(doc: Doc) -> tuple:
    return (doc.d, doc.id)


def rank_in_person(eligible: list[Doc]) -> list[Doc]:
    """Distance order; a run of physicians within 0.1 mile of its nearest member is one tie,
    ordered by priority, then fewest bookings (then distance, then id, so the order is total)."""
    eligible = sorted(eligible, key=_by_distance)
    out: list[Doc] = []
    i = 0
    while i < len(eligible):
        anchor = eligible[i].d
        j = i
        while j < len(eligible) and eligible[j].d - anchor <= TIE_MILES:
            j += 1
        out.extend(sorted(eligible[i:j], key=lambda x: (x.priority, x.bookings, x.d, x.id)))
        i = j
    return out


def telehealth_key(doc: Doc) -> tuple:
    return (doc.priority, doc.bookings, math.inf if doc.d is None else doc.d, doc.id)


def radius_for(eligible_sorted: list[Doc]) -> int:
    """The first radius step with at least MIN_IN_PERSON eligible physicians inside, else the last."""
    if len(eligible_sorted) >= MIN_IN_PERSON:
        d3 = eligible_sorted[MIN_IN_PERSON - 1].d
        for step in RADIUS_STEPS:
            if d3 <= step:
                return step
    return RADIUS_STEPS[-1]


# --------------------------------------------------------------------------- reading physicians


# Hand-written SQL, built once: constructing and cache-keying an equivalent Core statement costs
# more (about 2 ms) than running it. Registration, conditions and recent bookings come with each
# physician as correlated subqueries, each an index lookup (uq_registrations_physician_state,
# the physician_conditions primary key, ix_appointments_physician_starts_at).
_SELECT = """
SELECT p.id, p.npi, p.first_name, p.last_name, p.credential, p.latitude, p.longitude,
       p.accepting_new, p.offers_in_person, p.offers_telehealth, p.priority, p.weekly_capacity,
       (SELECT r.expires_on FROM registrations r WHERE r.physician_id = p.id AND r.state = :state) AS reg_expires,
       (SELECT count(*) FROM physician_conditions pc WHERE pc.physician_id = p.id) AS n_conditions,
       {treats} AS treats,
       (SELECT count(*) FROM appointments a
         WHERE a.physician_id = p.id AND a.created_at >= :since AND a.status <> 'cancelled') AS bookings
FROM physicians p
"""
_TREATS = "EXISTS (SELECT 1 FROM physician_conditions t WHERE t.physician_id = p.id AND t.condition_id = :condition_id)"
_BOX = "p.latitude BETWEEN :lat0 AND :lat1 AND p.longitude BETWEEN :lon0 AND :lon1"
_INNER = "p.latitude BETWEEN :ilat0 AND :ilat1 AND p.longitude BETWEEN :ilon0 AND :ilon1"
_STATEMENTS: dict[tuple, sa.TextClause] = {}


def _statement(kind: str, with_condition: bool, with_inner: bool = False):
    key = (kind, with_condition, with_inner)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        sql = _SELECT.format(treats=_TREATS if with_condition else "1")
        if kind == "ring":
            sql += f"WHERE p.active = :yes AND {_BOX}"
            if with_inner:
                sql += f" AND NOT ({_INNER})"
        else:  # every telehealth candidate registered in the state: the (state, expires_on) index
            sql += (
                "JOIN registrations tr ON tr.physician_id = p.id AND tr.state = :state "
                "WHERE tr.expires_on >= :today AND p.active = :yes AND p.accepting_new = :yes "
                "AND p.offers_telehealth = :yes"
            )
        stmt = (
            sa.text(sql)
            .bindparams(
                sa.bindparam("since", type_=Appointment.__table__.c.created_at.type),
                sa.bindparam("today", type_=sa.Date()) if kind != "ring" else sa.bindparam("yes", type_=sa.Boolean()),
            )
            .columns(reg_expires=sa.Date())
        )
        _STATEMENTS[key] = stmt
    return stmt


def _params(ctx: Context, **extra) -> dict:
    params = {"state": ctx.state or "", "since": ctx.since, "yes": True, **extra}
    if ctx.condition_id is not None:
        params["condition_id"] = ctx.condition_id
    return params


def _doc(row, ctx: Context) -> Doc:
    reg = row.reg_expires
    if isinstance(reg, str):  # SQLite through a scalar subquery may hand back text
        reg = date.fromisoformat(reg)
    doc = Doc(
        id=row.id,
        npi=row.npi,
        name=f"{row.first_name} {row.last_name}, {row.credential}",
        latitude=row.latitude,
        longitude=row.longitude,
        accepting_new=bool(row.accepting_new),
        offers_in_person=bool(row.offers_in_person),
        offers_telehealth=bool(row.offers_telehealth),
        priority=int(row.priority),
        weekly_capacity=int(row.weekly_capacity),
        reg_expires=reg,
        n_conditions=int(row.n_conditions or 0),
        treats=bool(row.treats),
        bookings=int(row.bookings or 0),
    )
    if ctx.origin is not None and doc.latitude is not None and doc.longitude is not None:
        doc.d = haversine_miles(ctx.origin[0], ctx.origin[1], doc.latitude, doc.longitude)
    return classify(doc, ctx)


def _ring_docs(ctx: Context, box, inner) -> list[Doc]:
    """Active physicians inside ``box`` but not inside ``inner`` (read before): one indexed query."""
    stmt = _statement("ring", ctx.condition_id is not None, inner is not None)
    params = _params(ctx, lat0=box[0], lat1=box[1], lon0=box[2], lon1=box[3])
    if inner is not None:
        params.update(ilat0=inner[0], ilat1=inner[1], ilon0=inner[2], ilon1=inner[3])
    return [_doc(row, ctx) for row in db.session.connection().execute(stmt, params)]


def _telehealth_docs(ctx: Context) -> list[Doc]:
    """Every telehealth candidate registered in the state (the fallback when rings cannot settle)."""
    stmt = _statement("telehealth", ctx.condition_id is not None)
    return [_doc(row, ctx) for row in db.session.connection().execute(stmt, _params(ctx, today=ctx.today))]


def _all_docs(ctx: Context) -> list[Doc]:
    """Every active physician, for the brute-force scan (bulk reads, no per-row subqueries)."""
    base = db.session.execute(
        sa.select(
            P.c.id,
            P.c.npi,
            P.c.first_name,
            P.c.last_name,
            P.c.credential,
            P.c.latitude,
            P.c.longitude,
            P.c.accepting_new,
            P.c.offers_in_person,
            P.c.offers_telehealth,
            P.c.priority,
            P.c.weekly_capacity,
        ).where(P.c.active.is_(True))
    ).all()
    regs = dict(
        db.session.execute(sa.select(R.c.physician_id, R.c.expires_on).where(R.c.state == (ctx.state or ""))).all()
    )
    counts: dict[int, int] = dict(
        db.session.execute(sa.select(PC.c.physician_id, sa.func.count()).group_by(PC.c.physician_id)).all()
    )
    treating: set[int] = set()
    if ctx.condition_id is not None:
        treating = set(db.session.scalars(sa.select(PC.c.physician_id).where(PC.c.condition_id == ctx.condition_id)))
    bookings = dict(
        db.session.execute(
            sa.select(A.c.physician_id, sa.func.count())
            .where(A.c.created_at >= ctx.since, A.c.status != AppointmentStatus.CANCELLED.value)
            .group_by(A.c.physician_id)
        ).all()
    )
    docs = []
    for row in base:
        full = _Row(
            row,
            reg_expires=regs.get(row.id),
            n_conditions=counts.get(row.id, 0),
            treats=ctx.condition_id is None or row.id in treating,
            bookings=bookings.get(row.id, 0),
        )
        docs.append(_doc(full, ctx))
    return docs


class _Row:
    __slots__ = ("_row", "reg_expires", "n_conditions", "treats", "bookings")

    def __init__(self, row, **extra):
        self._row = row
        for k, v in extra.items():
            setattr(self, k, v)

    def __getattr__(self, name):
        return getattr(self._row, name)


# --------------------------------------------------------------------------- the two paths


@dataclass
class Outcome:
    radius: int | None
    in_person: list[Doc]
    telehealth: list[Doc]
    excluded: list[Doc]
    rings: int = 0  # queries spent reading rings (diagnostics)
    telehealth_scan: bool = False


def _settle_in_person(within: list[Doc], r_done: float):
    eligible = sorted((x for x in within if x.in_person), key=_by_distance)
    if len(eligible) < MIN_IN_PERSON and r_done < RADIUS_STEPS[-1]:
        return None
    radius = radius_for(eligible)
    inside = [x for x in eligible if x.d <= radius]
    complete = r_done >= radius
    top_ok = complete or (len(inside) >= LIMIT and r_done >= inside[LIMIT - 1].d + TIE_MILES + EPS)
    excluded = sorted((x for x in within if x.reason is not None and x.d <= radius), key=_by_distance)
    excluded_ok = complete or len(excluded) >= EXCLUDED_LIMIT
    if not (top_ok and excluded_ok):
        return None
    return radius, rank_in_person(inside)[:LIMIT], excluded[:EXCLUDED_LIMIT]


def _settle_telehealth(within: list[Doc]):
    eligible = sorted((x for x in within if x.telehealth), key=telehealth_key)[:LIMIT]
    # Unread physicians are farther than everything read, so nobody unread can beat ten
    # priority-1 physicians without bookings already found.
    if len(eligible) == LIMIT and all(x.priority == 1 and x.bookings == 0 for x in eligible):
        return eligible
    return None


def match_indexed(ctx: Context) -> Outcome:
    out = Outcome(radius=None, in_person=[], telehealth=[], excluded=[])
    tele: list[Doc] | None = None if ctx.telehealth else []
    if ctx.origin is not None:
        seen: dict[int, Doc] = {}
        inner = None
        in_person = None
        for r in RINGS:
            box = bounding_box(ctx.origin[0], ctx.origin[1], r)
            for doc in _ring_docs(ctx, box, inner):
                seen[doc.id] = doc
            out.rings += 1
            inner = box
            within = [x for x in seen.values() if x.d is not None and x.d <= r]
            if in_person is None:
                in_person = _settle_in_person(within, r)
            if tele is None:
                tele = _settle_telehealth(within)
            if in_person is not None and tele is not None:
                break
        out.radius, out.in_person, out.excluded = in_person
    if tele is None:
        out.telehealth_scan = True
        tele = sorted((x for x in _telehealth_docs(ctx) if x.telehealth), key=telehealth_key)[:LIMIT]
    out.telehealth = tele
    return out


def match_bruteforce(ctx: Context) -> Outcome:
    """The same answer from every active physician: the reference the index is checked against."""
    docs = _all_docs(ctx)
    out = Outcome(radius=None, in_person=[], telehealth=[], excluded=[])
    if ctx.origin is not None:
        located = [x for x in docs if x.d is not None]
        eligible = sorted((x for x in located if x.in_person), key=_by_distance)
        out.radius = radius_for(eligible)
        out.in_person = rank_in_person([x for x in eligible if x.d <= out.radius])[:LIMIT]
        excluded = [x for x in located if x.reason is not None and x.d <= out.radius]
        out.excluded = sorted(excluded, key=_by_distance)[:EXCLUDED_LIMIT]
    if ctx.telehealth:
        out.telehealth = sorted((x for x in docs if x.telehealth), key=telehealth_key)[:LIMIT]
    return out


# --------------------------------------------------------------------------- leads


def usable_origin(patient) -> tuple[float, float] | None:
    """Coordinates good enough for distances: a state centroid is not."""
    if patient.latitude is None or patient.longitude is None:
        return None
    if patient.geocode_precision == GeocodePrecision.STATE:
        return None
    return float(patient.latitude), float(patient.longitude)


def context_for(lead: Lead, eligibility: dict, now: datetime) -> Context:
    patient = lead.patient
    return Context(
        lead_id=lead.id,
        origin=usable_origin(patient),
        precision=str(patient.geocode_precision) if patient.geocode_precision else None,
        state=(patient.state or "").upper() or None,
        condition_id=lead.condition_id,
        condition_name=lead.condition.name if lead.condition is not None else None,
        telehealth=bool(eligibility.get("telehealth_allowed")),
        today=now.date(),
        since=now - BOOKINGS_WINDOW,
    )


def _miles(d: float | None) -> float | None:
    return None if d is None else round(d, 2)


def to_json(ctx: Context, outcome: Outcome, eligibility: dict, now: datetime, method: str) -> dict:
    """The SPEC 6 shape, plus the rules and radius that produced it."""
    candidates = []
    for mode, docs in (("in_person", outcome.in_person), ("telehealth", outcome.telehealth)):
        for rank, x in enumerate(docs, start=1):
            candidates.append(
                {
                    "physician_id": x.id,
                    "npi": x.npi,
                    "name": x.name,
                    "distance_miles": _miles(x.d),
                    "mode": mode,
                    "priority": x.priority,
                    "rank": rank,
                    "bookings_7d": x.bookings,
                    "weekly_capacity": x.weekly_capacity,
                }
            )
    return {
        "lead_id": ctx.lead_id,
        "origin": {
            "latitude": ctx.origin[0] if ctx.origin else None,
            "longitude": ctx.origin[1] if ctx.origin else None,
            "precision": ctx.precision if ctx.origin else None,
        },
        "state": ctx.state,
        "condition": ctx.condition_name,
        "eligibility": eligibility,
        "candidates": candidates,
        "excluded": [
            {"physician_id": x.id, "npi": x.npi, "name": x.name, "distance_miles": _miles(x.d), "reason": x.reason}
            for x in outcome.excluded
        ],
        "rules": {
            "radius_miles": outcome.radius,
            "radius_steps": list(RADIUS_STEPS),
            "min_in_person": MIN_IN_PERSON,
            "limit": LIMIT,
            "tie_miles": TIE_MILES,
            "bookings_window_days": BOOKINGS_WINDOW.days,
            "telehealth": ctx.telehealth,
            "excluded_limit": EXCLUDED_LIMIT,
            "method": method,
        },
        "matched_at": now.isoformat(),
    }


def match_lead(lead: Lead, now: datetime | None = None, *, bruteforce: bool = False) -> dict:
    """Eligibility + matching for one lead, as the SPEC 6 JSON (not stored: see enrichment)."""
    now = now or datetime.now(UTC)
    eligibility = evaluate_lead(lead, now.date())
    ctx = context_for(lead, eligibility, now)
    outcome = match_bruteforce(ctx) if bruteforce else match_indexed(ctx)
    return to_json(ctx, outcome, eligibility, now, "bruteforce" if bruteforce else "index")


def comparable(result: dict) -> dict:
    """A match result without what legitimately differs between two runs (time, method)."""
    rules = {k: v for k, v in result["rules"].items() if k != "method"}
    return {**{k: v for k, v in result.items() if k not in ("matched_at", "rules")}, "rules": rules}


def candidate_ids(result: dict | None) -> Iterable[int]:
    return [int(c["physician_id"]) for c in (result or {}).get("candidates", [])]
