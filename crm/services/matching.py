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
reason: up to the farthest candidate of a full list, else the whole radius (at most ``EXCLUDED_LIMIT``).

The indexed path never scans the directory. SQLite reads physicians ring by ring around the
patient with bounding-box queries on a spatial index (R*Tree, else the B-tree
``ix_physicians_lat_lon``) and resolves registration, conditions and bookings in bulk only for the
physicians that can still change the answer. PostgreSQL reads the nearest physicians and the
nearest telehealth contenders, everything resolved, with one GiST KNN statement per round
(``match_knn``; usually one round). Both stop as soon as nothing unread can change the answer.
``match_bruteforce`` computes the same answer from every physician; tests and ``bench/match.py``
check that both agree. Decisions and measurements: docs/matching.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Appointment, Lead, Physician, Registration
from crm.models.directory import physician_conditions
from crm.models.enums import AppointmentStatus, GeocodePrecision
from crm.services.calling_window import zone
from crm.services.eligibility import PROGRAM_ROWS_JSON_PG, condition_words, evaluate_lead, program_from_rows
from crm.services.followups import patient_timezone
from crm.services.geocoding import state_timezone

EARTH_RADIUS_MILES = 3958.7613
RADIUS_STEPS = (25, 50, 100, 250)
# Rings (miles): the first box, then each next one sized from the density seen so far (area grows
# with the square of the radius), growing 1.5x to 4x, up to the last radius step.
FIRST_RING, IN_PERSON_TARGET = 2.0, 40  # physicians read before the in-person answer usually settles
TELEHEALTH_TARGET, LAST_TELEHEALTH_RING = 12, 500.0
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
    today: date  # the patient's own date (patient_today): registrations and age
    since: datetime  # bookings window start


class Doc:
    """One physician as matching sees it. Cheap fields come from the box query; the rest
    (registration, conditions, bookings, name) are resolved in bulk only for physicians that matter."""

    __slots__ = (
        "id", "latitude", "longitude", "accepting_new", "offers_in_person", "offers_telehealth", "priority",
        "weekly_capacity", "d", "resolved", "npi", "name", "reg_expires", "n_conditions", "treats", "bookings",
        "reason", "in_person", "telehealth",
    )  # fmt: skip

    def __init__(self, row, origin):
        (self.id, self.latitude, self.longitude, accepting, in_person, telehealth, priority, capacity) = row[:8]
        self.accepting_new, self.offers_in_person, self.offers_telehealth = (
            bool(accepting),
            bool(in_person),
            bool(telehealth),
        )
        self.priority, self.weekly_capacity = int(priority), int(capacity)
        self.d = None
        if origin is not None and self.latitude is not None and self.longitude is not None:
            self.d = haversine_miles(origin[0], origin[1], self.latitude, self.longitude)
        self.resolved = False
        self.reason = None
        self.in_person = self.telehealth = False

    def resolve(self, npi, first, last, credential, reg_expires, n_conditions, treats, bookings, ctx) -> None:
        if isinstance(reg_expires, str):  # SQLite may hand a subquery's date back as text
            reg_expires = date.fromisoformat(reg_expires)
        self.npi, self.name = npi, f"{first} {last}, {credential}"
        self.reg_expires, self.n_conditions = reg_expires, int(n_conditions or 0)
        self.treats, self.bookings = bool(treats), int(bookings or 0)
        self.resolved = True
        classify(self, ctx)


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
# more (about 2 ms) than running it. The box query has one form per spatial index (migration 0003):
# the SQLite R*Tree (whose auxiliary columns carry everything the first pass needs), the
# PostgreSQL GiST on point(longitude, latitude), or the plain B-tree on (latitude, longitude).
_CHEAP = (
    "p.id, p.latitude, p.longitude, p.accepting_new, p.offers_in_person, p.offers_telehealth, p.priority, "
    "p.weekly_capacity"
)
_RTREE_CHEAP = (
    "t.id, t.lat, t.lon, t.accepting_new, t.offers_in_person, t.offers_telehealth, t.priority, t.weekly_capacity"
)
# Literally the WHERE clause of the partial GiST index, so PostgreSQL can prove it applies.
TELE_P1 = "{a}.active AND {a}.accepting_new AND {a}.offers_telehealth AND {a}.priority = 1"
_BOXES = {
    # Overlap with the stored (float32, rounded outwards) boxes: a superset of the exact box.
    "rtree": "t.max_lat >= :{p}lat0 AND t.min_lat <= :{p}lat1 AND t.max_lon >= :{p}lon0 AND t.min_lon <= :{p}lon1",
    "gist": "point(p.longitude, p.latitude) <@ box(point(:{p}lon0, :{p}lat0), point(:{p}lon1, :{p}lat1))",
    "btree": "p.latitude BETWEEN :{p}lat0 AND :{p}lat1 AND p.longitude BETWEEN :{p}lon0 AND :{p}lon1",
}
# Registration, conditions and recent bookings as correlated subqueries, each an index lookup
# (uq_registrations_physician_state, the physician_conditions key, ix_appointments_physician_starts_at).
_DETAILS = """
SELECT p.id, p.npi, p.first_name, p.last_name, p.credential,
       (SELECT r.expires_on FROM registrations r WHERE r.physician_id = p.id AND r.state = :state) AS reg_expires,
       (SELECT count(*) FROM physician_conditions pc WHERE pc.physician_id = p.id) AS n_conditions,
       {treats} AS treats,
       (SELECT count(*) FROM appointments a
         WHERE a.physician_id = p.id AND a.created_at >= :since AND a.status <> 'cancelled') AS bookings
FROM physicians p
"""
# A count, not EXISTS: PostgreSQL would turn an EXISTS into one hashed scan of every physician
# treating the condition; this stays a primary-key lookup per physician.
_TREATS = "(SELECT count(*) FROM physician_conditions t WHERE t.physician_id = p.id AND t.condition_id = :condition_id)"
_DETAILS_PG = """
SELECT p.id, p.npi, p.first_name, p.last_name, p.credential, r.expires_on,
       coalesce(pc.n, 0), coalesce(pc.treats, 0), coalesce(b.n, 0)
FROM physicians p
LEFT JOIN registrations r ON r.physician_id = p.id AND r.state = :state
LEFT JOIN (SELECT physician_id, count(*) AS n, sum(CASE WHEN {treats} THEN 1 ELSE 0 END) AS treats
           FROM physician_conditions WHERE physician_id = ANY(:ids) GROUP BY physician_id) pc
       ON pc.physician_id = p.id
LEFT JOIN (SELECT physician_id, count(*) AS n FROM appointments
           WHERE physician_id = ANY(:ids) AND created_at >= :since AND status <> 'cancelled'
           GROUP BY physician_id) b ON b.physician_id = p.id
WHERE p.id = ANY(:ids)
"""
_SQLITE_IDS = "WHERE p.id IN (SELECT value FROM json_each(:ids))"
# PostgreSQL: one statement per round (``match_knn``). Two nearest-neighbour walks, both plain
# GiST KNN scans (a box condition would make the planner, which guesses 0.1 % of rows for any box,
# sort the whole box instead): the nearest active physicians (ix_physicians_location_gist), and the
# nearest priority-1 telehealth physicians (the partial ix_physicians_telehealth_p1_gist) of whom
# only those who pass every rule with no booking are kept (nobody else can be among the first ten);
# that walk stops after {walk} rows, and its last row comes back whatever it is (``last``: how far
# the walk got). Every row comes with its
# registration, conditions and recent bookings; and the state's latest registration expiry
# (one probe of ix_registrations_state_expires_on) says whether anyone can be eligible at all; the
# first row also carries the state program (eligibility's rows as JSON), saving its own query.
_KNN_DISTANCE = "point(p.longitude, p.latitude) <-> point(%(lon)s, %(lat)s)"
_KNN_NEAR = f"""
  (SELECT {_CHEAP}, p.npi, p.first_name, p.last_name, p.credential,
          {_KNN_DISTANCE} AS planar, false AS tele, false AS last
   FROM physicians p
   WHERE p.active AND p.latitude IS NOT NULL AND p.longitude IS NOT NULL AND p.id <> ALL(%(seen)s)
   ORDER BY {_KNN_DISTANCE} LIMIT {{k_near}})"""  # noqa: S608 - constants only
_KNN_TELE = f"""
  (SELECT w.id, w.latitude, w.longitude, w.accepting_new, w.offers_in_person, w.offers_telehealth, w.priority,
          w.weekly_capacity, w.npi, w.first_name, w.last_name, w.credential, w.planar, true AS tele,
          w.n = {{walk}} AS last
   FROM (SELECT {_CHEAP}, p.npi, p.first_name, p.last_name, p.credential, {_KNN_DISTANCE} AS planar,
                row_number() OVER (ORDER BY {_KNN_DISTANCE}) AS n
         FROM physicians p
         WHERE {TELE_P1.format(a="p")} AND p.latitude IS NOT NULL AND p.longitude IS NOT NULL
           AND p.id <> ALL(%(seen)s)
         ORDER BY {_KNN_DISTANCE} LIMIT {{walk}}) w
   WHERE w.n = {{walk}}
      OR (w.weekly_capacity > 0
          AND (SELECT t.expires_on FROM registrations t WHERE t.physician_id = w.id AND t.state = %(state)s)
              >= %(today)s
          AND (%(condition_id)s::integer IS NULL
               OR (SELECT count(*) = 0 OR count(*) FILTER (WHERE c.condition_id = %(condition_id)s) > 0
                   FROM physician_conditions c WHERE c.physician_id = w.id))
          AND (SELECT count(*) FROM appointments a
               WHERE a.physician_id = w.id AND a.created_at >= %(since)s AND a.status <> 'cancelled') = 0)
   ORDER BY w.planar LIMIT {{k_tele}})"""  # noqa: S608 - constants only
# Details as correlated subqueries: index lookups per row, whatever the planner guesses.
_KNN_PG = """
SELECT k.id, k.latitude, k.longitude, k.accepting_new, k.offers_in_person, k.offers_telehealth, k.priority,
       k.weekly_capacity, k.npi, k.first_name, k.last_name, k.credential,
       (SELECT r.expires_on FROM registrations r WHERE r.physician_id = k.id AND r.state = %(state)s),
       pc.n, pc.treats,
       (SELECT count(*) FROM appointments a
         WHERE a.physician_id = k.id AND a.created_at >= %(since)s AND a.status <> 'cancelled'),
       k.planar, k.tele, k.last,
       (SELECT max(s.expires_on) FROM registrations s WHERE s.state = %(state)s) >= %(today)s,
       CASE WHEN row_number() OVER () = 1 THEN {program} END
FROM ({branches}) k
CROSS JOIN LATERAL (SELECT count(*) AS n, count(*) FILTER (WHERE c.condition_id = %(condition_id)s) AS treats
                    FROM physician_conditions c WHERE c.physician_id = k.id) pc
"""  # noqa: S608 - constants only


def _knn_sql(k_near: int, k_tele: int) -> str:
    """The round's statement, its row limits written in (a generic plan then knows how few rows
    it handles, so it stays the nested-loop plan, and PostgreSQL can keep it prepared)."""
    key = ("knn", k_near, k_tele)
    sql = _STATEMENTS.get(key)
    if sql is None:
        branches = []
        if k_near:
            branches.append(_KNN_NEAR.format(k_near=int(k_near)))
        if k_tele:
            branches.append(_KNN_TELE.format(k_tele=int(k_tele), walk=int(TELE_WALK * k_tele)))
        sql = _KNN_PG.format(branches="\n  UNION ALL".join(branches), program=PROGRAM_ROWS_JSON_PG)
        _STATEMENTS[key] = sql
    return sql


_STATEMENTS: dict[tuple, str] = {}
_SPATIAL: dict[str, str] = {}


def spatial_index() -> str:
    """Which box query this database supports: "rtree", "gist" or "btree" (checked once per database)."""
    engine = db.engine
    key = engine.url.render_as_string(hide_password=True)
    found = _SPATIAL.get(key)
    if found is None:
        conn = db.session.connection()
        if engine.dialect.name == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'physicians_rtree'"
            found = "rtree" if conn.exec_driver_sql(sql).first() else "btree"
        elif engine.dialect.name == "postgresql":
            sql = "SELECT 1 FROM pg_indexes WHERE indexname = 'ix_physicians_location_gist'"
            found = "gist" if conn.exec_driver_sql(sql).first() else "btree"
        else:
            found = "btree"
        _SPATIAL[key] = found
    return found


def _ring_sql(index: str, telehealth: bool, with_inner: bool) -> str:
    if index == "rtree" and telehealth:
        index = "btree"  # SQLite: the partial B-tree ix_physicians_telehealth_p1 beats filtering R*Tree rows
    box = _BOXES[index]
    if index == "rtree":
        where = TELE_P1.format(a="t") if telehealth else "t.active"
        sql = f"SELECT {_RTREE_CHEAP} FROM physicians_rtree t WHERE {where} AND {box.format(p='')}"  # noqa: S608
    else:
        where = TELE_P1.format(a="p") if telehealth else "p.active"
        sql = f"SELECT {_CHEAP} FROM physicians p WHERE {where} AND {box.format(p='')}"  # noqa: S608
    if with_inner:
        sql += f" AND NOT ({box.format(p='i')})"
    return sql


def _sql(kind: str, dialect: str, with_condition: bool = False, with_inner: bool = False) -> str:
    """The SQL text for one kind of query, in the driver's own parameter style (built once)."""
    index = spatial_index()
    key = (kind, dialect, with_condition, with_inner, index)
    sql = _STATEMENTS.get(key)
    if sql is not None:
        return sql
    if kind in ("ring", "tele_ring"):
        sql = _ring_sql(index, kind == "tele_ring", with_inner)
    elif kind == "details" and dialect == "sqlite":
        sql = _DETAILS.format(treats=_TREATS if with_condition else "1") + _SQLITE_IDS
    elif kind == "details":  # PostgreSQL: set-based joins run faster there than a subplan per row
        sql = _DETAILS_PG.format(treats="condition_id = :condition_id" if with_condition else "true")
    elif kind == "telehealth":  # every telehealth candidate registered in the state: (state, expires_on) index
        sql = (
            f"SELECT {_CHEAP} FROM physicians p "  # noqa: S608 - constants only
            "JOIN registrations tr ON tr.physician_id = p.id AND tr.state = :state "
            "WHERE tr.expires_on >= :today AND p.active AND p.accepting_new AND p.offers_telehealth"
        )
    else:  # does anyone hold an unexpired registration in the state?
        sql = "SELECT 1 FROM registrations WHERE state = :state AND expires_on >= :today LIMIT 1"
    if dialect != "sqlite":  # psycopg's pyformat
        sql = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)
    _STATEMENTS[key] = sql
    return sql


def _execute(kind: str, params: dict, **variant) -> list[tuple]:
    """Run on the session's own DBAPI connection (same transaction, sees flushed rows), skipping
    SQLAlchemy's per-statement work, which costs more than these small indexed queries."""
    conn = db.session.connection()
    dialect = conn.dialect.name  # SQLite (sqlite3) or PostgreSQL (psycopg 3): the two we support
    params = dict(params)
    if dialect == "sqlite":  # stored as SQLAlchemy writes them: text dates, naive UTC datetimes
        if "since" in params:
            params["since"] = params["since"].astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        if "today" in params:
            params["today"] = params["today"].isoformat()
        if "ids" in params:
            params["ids"] = json.dumps(params["ids"])
    elif "since" in params:
        params["since"] = params["since"].astimezone(UTC).replace(tzinfo=None)
    dbapi = conn.connection
    cursor = dbapi.driver_connection.cursor()
    try:
        # psycopg prepares a statement on the server once it has run it prepare_threshold (5) times
        # on a connection; PostgreSQL then keeps a generic plan: planned about once per connection.
        cursor.execute(_knn_sql(**variant) if kind == "knn" else _sql(kind, dialect, **variant), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _ring_docs(ctx: Context, box, inner, seen: dict[int, Doc], kind: str = "ring") -> list[Doc]:
    """Active physicians inside ``box`` but not inside ``inner`` (read before): one indexed query.
    A physician already in ``seen`` keeps its object (and whatever was resolved for it)."""
    params = {"lat0": box[0], "lat1": box[1], "lon0": box[2], "lon1": box[3]}
    if inner is not None:
        params.update(ilat0=inner[0], ilat1=inner[1], ilon0=inner[2], ilon1=inner[3])
    out = []
    for row in _execute(kind, params, with_inner=inner is not None):
        doc = seen.get(row[0])
        if doc is None:
            doc = seen[row[0]] = Doc(row, ctx.origin)
        out.append(doc)
    return out


def _resolve(ctx: Context, docs: list[Doc]) -> None:
    """Registration, conditions, bookings and name for these physicians: one query."""
    if not docs:
        return
    by_id = {x.id: x for x in docs}
    params = {"ids": list(by_id), "state": ctx.state or "", "since": ctx.since}
    if ctx.condition_id is not None:
        params["condition_id"] = ctx.condition_id
    for row in _execute("details", params, with_condition=ctx.condition_id is not None):
        by_id[row[0]].resolve(*row[1:], ctx)


def _telehealth_docs(ctx: Context) -> list[Doc]:
    """Every telehealth candidate registered in the state (when rings cannot settle the list)."""
    rows = _execute("telehealth", {"state": ctx.state or "", "today": ctx.today})
    docs = [Doc(row, ctx.origin) for row in rows]
    for k in range(0, len(docs), 500):
        _resolve(ctx, docs[k : k + 500])
    return docs


def _anyone_registered(ctx: Context) -> bool:
    if not ctx.state:
        return False
    return bool(_execute("registered", {"state": ctx.state, "today": ctx.today}))


def _all_docs(ctx: Context) -> list[Doc]:
    """Every active physician with everything resolved, for the brute-force scan (bulk reads)."""
    base = db.session.execute(
        sa.select(
            P.c.id,
            P.c.latitude,
            P.c.longitude,
            P.c.accepting_new,
            P.c.offers_in_person,
            P.c.offers_telehealth,
            P.c.priority,
            P.c.weekly_capacity,
            P.c.npi,
            P.c.first_name,
            P.c.last_name,
            P.c.credential,
        ).where(P.c.active.is_(True))
    ).all()
    state_regs = sa.select(R.c.physician_id, R.c.expires_on).where(R.c.state == (ctx.state or ""))
    regs = dict(db.session.execute(state_regs).all())
    counts = dict(db.session.execute(sa.select(PC.c.physician_id, sa.func.count()).group_by(PC.c.physician_id)).all())
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
        doc = Doc(row, ctx.origin)
        pid = row.id
        doc.resolve(
            row.npi,
            row.first_name,
            row.last_name,
            row.credential,
            regs.get(pid),
            counts.get(pid, 0),
            ctx.condition_id is None or pid in treating,
            bookings.get(pid, 0),
            ctx,
        )
        docs.append(doc)
    return docs


# --------------------------------------------------------------------------- the two paths


@dataclass
class Outcome:
    radius: int | None
    in_person: list[Doc]
    telehealth: list[Doc]
    excluded: list[Doc]
    queries: int = 0  # ring and detail queries (diagnostics)
    telehealth_scan: bool = False


IN_PERSON_CHUNK = 24  # physicians resolved per detail query, nearest first
TELEHEALTH_CHUNK = 16


def _settle_in_person(within: list[Doc], r_done: float, possible: bool):
    """(result, docs to resolve): result is (radius, ranked, excluded) once nothing unread can change it."""
    eligible: list[Doc] = []
    excluded: list[Doc] = []
    first_unresolved = None
    for i, x in enumerate(within):
        if not x.resolved:
            first_unresolved = i
            break
        if x.in_person:
            eligible.append(x)
        elif x.reason is not None:
            excluded.append(x)
    if first_unresolved is None:

        def known(v: float) -> bool:  # every physician at distance <= v has been read and resolved
            return v <= r_done

    else:
        edge = within[first_unresolved].d

        def known(v: float) -> bool:
            return v < edge

    def more():
        if first_unresolved is None:
            return None, []  # read the next ring
        return None, [x for x in within[first_unresolved:] if not x.resolved][:IN_PERSON_CHUNK]

    if possible and len(eligible) < MIN_IN_PERSON and not known(RADIUS_STEPS[-1]):
        return more()
    radius = radius_for(eligible)
    inside = [x for x in eligible if x.d <= radius]
    complete = known(radius)
    top_ok = complete or not possible or (len(inside) >= LIMIT and known(inside[LIMIT - 1].d + TIE_MILES + EPS))
    if not top_ok:
        return more()
    ranked = rank_in_person(inside)[:LIMIT]
    near = [x for x in excluded if x.d <= exclusion_horizon(ranked, radius)]
    if not (known(exclusion_horizon(ranked, radius)) or len(near) >= EXCLUDED_LIMIT):
        return more()
    return (radius, ranked, near[:EXCLUDED_LIMIT]), []


def exclusion_horizon(ranked: list[Doc], radius: int) -> float:
    """Exclusions are listed up to the farthest candidate shown (a full list), else the whole radius:
    they answer "why is this nearer physician not on the list?"."""
    return max(x.d for x in ranked) if len(ranked) == LIMIT else radius


def _settle_telehealth(within: list[Doc]):
    """Ten resolved priority-1 physicians without bookings, nearest first, beat anyone unread
    (who is farther away). Returns (list or None, docs to resolve)."""
    found: list[Doc] = []
    for i, x in enumerate(within):
        if not (x.offers_telehealth and x.accepting_new and x.priority == 1):
            continue
        if not x.resolved:
            rest = [y for y in within[i:] if y.offers_telehealth and y.accepting_new and y.priority == 1]
            return None, [y for y in rest if not y.resolved][:TELEHEALTH_CHUNK]
        if x.telehealth and x.bookings == 0:
            found.append(x)
            if len(found) == LIMIT:
                return found, []
    return None, []


def next_ring(r: float, found: int, target: int, last: float) -> float | None:
    """The next ring radius, or None after the last one."""
    if r >= last:
        return None
    factor = 4.0 if found == 0 else min(4.0, max(1.5, math.sqrt(target / found)))
    return min(last, r * factor)


def match_indexed(ctx: Context, first: FirstRound | None = None) -> Outcome:
    if knn_applies(ctx.origin):
        return match_knn(ctx, first)
    out = Outcome(radius=None, in_person=[], telehealth=[], excluded=[])
    tele: list[Doc] | None = None if ctx.telehealth else []
    seen: dict[int, Doc] = {}
    if ctx.origin is not None:
        possible, checked = True, False  # could anyone at all be eligible in person? (asked lazily)
        inner = None
        nearby: list[Doc] = []
        in_person = None
        r = FIRST_RING
        while r is not None:
            box = bounding_box(ctx.origin[0], ctx.origin[1], r)
            nearby += _ring_docs(ctx, box, inner, seen)
            out.queries += 1
            inner = box
            within = sorted((x for x in nearby if x.d <= r), key=_by_distance)
            if not checked and r >= RADIUS_STEPS[0] and not any(x.in_person for x in within):
                # Nobody eligible within 25 miles: perhaps nobody holds a registration in the
                # state at all (no program); then the rings need only the exclusions.
                possible, checked = _anyone_registered(ctx), True
                out.queries += 1
            while in_person is None:
                in_person, need = _settle_in_person(within, r, possible)
                if not need:
                    break
                if tele is None:  # resolve the nearby telehealth contenders in the same query
                    tele, more = _settle_telehealth(within)
                    need = list({x.id: x for x in need + more}.values())
                _resolve(ctx, need)
                out.queries += 1
            if in_person is not None:
                break
            r = next_ring(r, len(within), IN_PERSON_TARGET, RADIUS_STEPS[-1])
        out.radius, out.in_person, out.excluded = in_person
        # Telehealth: the nearest ten priority-1 physicians without bookings win. Those inside the
        # boxes read so far are known; farther ones come through their own small partial index.
        candidates = [x for x in nearby if x.offers_telehealth and x.accepting_new and x.priority == 1]
        r_known = r
        while tele is None:
            within = sorted((x for x in candidates if x.d <= r_known), key=_by_distance)
            tele, need = _settle_telehealth(within)
            if tele is not None:
                break
            if need:
                _resolve(ctx, need)
                out.queries += 1
                continue
            r_known = next_ring(r_known, len(within), TELEHEALTH_TARGET, LAST_TELEHEALTH_RING)
            if r_known is None:
                break
            box = bounding_box(ctx.origin[0], ctx.origin[1], r_known)
            candidates += _ring_docs(ctx, box, inner, seen, kind="tele_ring")
            out.queries += 1
            inner = box
    if tele is None:
        out.telehealth_scan = True
        tele = sorted((x for x in _telehealth_docs(ctx) if x.telehealth), key=telehealth_key)[:LIMIT]
    out.telehealth = tele
    return out


# Nearest-neighbour rounds (PostgreSQL): rows of each kind in the first round. A walk's reach
# covers about cos(latitude) of the rows it read (the planar circle against the great-circle one);
# 56 and 20 settle ~97 % of leads in one round at 100,000 physicians. Fixed, not scaled by
# latitude: each row limit is its own statement text, prepared and planned per connection. A
# further round asks four times as many, at most 640 a walk (the plan's estimated cost then stays
# far below PostgreSQL's default jit_above_cost, 100,000: compiling costs more than running it).
NEAR_K, TELE_K, MAX_NEAR_ROWS = 56, 20, 640
TELE_WALK = 4  # the telehealth walk reads up to this many times its rows to find them


def covered_miles(lat: float, planar_deg: float) -> float:
    """A great-circle radius r such that every point within r of an origin at latitude ``lat``
    lies at a planar distance below ``planar_deg`` (degrees of longitude and latitude, as
    PostgreSQL's ``point <-> point`` measures), so a nearest-neighbour read that stopped at
    ``planar_deg`` has read everything within r.

    hav(a) = hav(dlat) + cos(lat) cos(lat') hav(dlon). For a point within r <= D of the origin,
    cos(lat) cos(lat') >= c = cos(lat) cos(|lat| + D); and on dlat^2 + dlon^2 >= D^2 the sum
    hav(dlat) + c hav(dlon) is smallest with dlat = 0 (hav(sqrt(t)) is concave in t, c <= 1), so
    every point at planar distance >= D has hav(a) >= c hav(D) = hav(r). About D cos(lat).
    Longitude differences are taken as stored, so callers must not use this across the
    antimeridian (see ``_reach``)."""
    d = math.radians(planar_deg)
    phi = abs(math.radians(lat))
    if phi + d >= math.pi / 2:
        return 0.0
    c = math.cos(phi) * math.cos(phi + d)
    return 2 * math.asin(math.sqrt(c) * math.sin(d / 2)) * EARTH_RADIUS_MILES * (1 - 1e-9)


def _reach(radius: float, lat: float, rows: int, asked: int, farthest: float | None) -> float:
    """How far (great circle, at most ``radius``) a nearest-neighbour walk that returned ``rows``
    of ``asked`` has read everything: all of it when the walk ran out of rows, else up to the
    planar distance of the farthest row."""
    if rows < asked:
        return radius
    return 0.0 if farthest is None else min(radius, covered_miles(lat, farthest))


def wraps(lat: float, lon: float, miles: float) -> bool:
    """Does the circle reach across the antimeridian or over a pole (where planar distances on
    stored longitudes say nothing)? ``bounding_box`` gives up on longitude there."""
    box = bounding_box(lat, lon, miles)
    return box[2] <= -180.0 and box[3] >= 180.0


@dataclass
class FirstRound:
    """The first nearest-neighbour round, read together with the state program (``prefetch``)."""

    rows: list[tuple]
    program: object  # eligibility.ProgramFacts or None
    k_near: int  # the row limits it was read with
    k_tele: int


def _knn_params(origin, state, condition_id, today: date, since: datetime) -> dict:
    return {
        "lat": origin[0],
        "lon": origin[1],
        "state": state or "",
        "today": today,
        "since": since,
        "condition_id": condition_id,
        "seen": [],
    }


def knn_applies(origin) -> bool:
    """Does this patient's match run as nearest-neighbour rounds (PostgreSQL GiST, away from the
    antimeridian)?"""
    return origin is not None and spatial_index() == "gist" and not wraps(*origin, LAST_TELEHEALTH_RING)


def prefetch(lead: Lead, now: datetime, today: date) -> FirstRound | None:
    """PostgreSQL: the first round and the state program in one statement, before eligibility
    (whose verdict the rules need) is known. None where matching does not run in rounds, or
    when the round found nobody to carry the program."""
    patient = lead.patient
    origin = usable_origin(patient)
    if not knn_applies(origin):
        return None
    state = (patient.state or "").upper() or None
    params = _knn_params(origin, state, lead.condition_id, today, now - BOOKINGS_WINDOW)
    rows = _execute("knn", params, k_near=NEAR_K, k_tele=TELE_K)
    if not rows:
        return None
    programs = [row[20] for row in rows if row[20] is not None]
    program = program_from_rows(programs[0]) if programs else None
    return FirstRound(rows=rows, program=program, k_near=NEAR_K, k_tele=TELE_K)


def match_knn(ctx: Context, first: FirstRound | None = None) -> Outcome:
    """PostgreSQL, patient located: rounds of one statement each (``_KNN_PG``). A round reads the
    nearest active physicians and the nearest priority-1 telehealth physicians who pass every rule
    with no booking, everything resolved, by GiST KNN; the rules then run on what was read, as far as it is
    known to be complete (``_reach``). A typical match is a single round; a further round asks
    for four times as many rows of whichever list is still open, skipping those already read."""
    out = Outcome(radius=None, in_person=[], telehealth=[], excluded=[])
    lat = ctx.origin[0]
    params = _knn_params(ctx.origin, ctx.state, ctx.condition_id, ctx.today, ctx.since)
    seen: dict[int, Doc] = {}
    in_person = None
    tele: list[Doc] | None = None if ctx.telehealth else []
    possible, r_near, r_tele = True, 0.0, 0.0
    k_near, k_tele = NEAR_K, TELE_K
    while in_person is None or (tele is None and not out.telehealth_scan):
        if first is not None:  # read with the program, before the rules were known
            asked_near, asked_tele, result, first = first.k_near, first.k_tele, first.rows, None
        else:
            asked_near = k_near if in_person is None else 0
            asked_tele = k_tele if tele is None and not out.telehealth_scan else 0
            params["seen"] = list(seen)
            result = _execute("knn", params, k_near=asked_near, k_tele=asked_tele)
        rows = {False: 0, True: 0}
        farthest: dict[bool, float] = {}
        walked_to = None  # the tele walk's last row: it went that far and no farther
        for row in result:
            doc = seen.get(row[0])
            if doc is None:
                doc = seen[row[0]] = Doc(row, ctx.origin)
                doc.resolve(*row[8:16], ctx)
            planar, is_tele = row[16], bool(row[17])
            rows[is_tele] += 1
            farthest[is_tele] = max(planar, farthest.get(is_tele, planar))
            if row[18]:
                walked_to = planar
            possible = bool(row[19])  # does anyone hold an unexpired registration in the state?
        out.queries += 1
        if asked_near:
            r_near = max(r_near, _reach(RADIUS_STEPS[-1], lat, rows[False], asked_near, farthest.get(False)))
            within = sorted((x for x in seen.values() if x.d <= r_near), key=_by_distance)
            in_person, _ = _settle_in_person(within, r_near, possible)
        if asked_tele and tele is None:
            if rows[True] < asked_tele and walked_to is None:
                r_tele = math.inf  # the walk ran out: every contender has been read
            elif rows[True] < asked_tele:
                r_tele = max(r_tele, min(LAST_TELEHEALTH_RING, covered_miles(lat, walked_to)))
            else:
                r_tele = max(r_tele, min(LAST_TELEHEALTH_RING, covered_miles(lat, farthest[True])))
            # Each walk is complete up to its own reach: every contender within the larger one is known.
            known = max(r_near, r_tele)
            tele, _ = _settle_telehealth(sorted((x for x in seen.values() if x.d <= known), key=_by_distance))
            # Fewer than ten such physicians within 500 miles: the list comes from the state scan.
            out.telehealth_scan = tele is None and r_tele >= LAST_TELEHEALTH_RING
        k_near, k_tele = min(4 * k_near, MAX_NEAR_ROWS), min(4 * k_tele, MAX_NEAR_ROWS // TELE_WALK)
    out.radius, out.in_person, out.excluded = in_person
    if out.telehealth_scan:
        tele = sorted((x for x in _telehealth_docs(ctx) if x.telehealth), key=telehealth_key)[:LIMIT]
        out.queries += 1
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
        horizon = exclusion_horizon(out.in_person, out.radius)
        excluded = [x for x in located if x.reason is not None and x.d <= horizon]
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


def patient_today(patient, now: datetime) -> date:
    """The patient's own date at ``now``: a registration is valid through its expiry day and an
    age changes on the birthday where the patient lives, not at midnight UTC (19:00 in New York).
    The zone the lead page uses (geocoded, else the ZIP's), else the state's, else the business
    zone."""
    tz, known = patient_timezone(patient)
    if not known and patient.state:
        tz = state_timezone(patient.state) or tz
    return now.astimezone(zone(tz)).date()


def context_for(lead: Lead, eligibility: dict, now: datetime, today: date) -> Context:
    patient = lead.patient
    return Context(
        lead_id=lead.id,
        origin=usable_origin(patient),
        precision=str(patient.geocode_precision) if patient.geocode_precision else None,
        state=(patient.state or "").upper() or None,
        condition_id=lead.condition_id,
        condition_name=lead.condition.name if lead.condition is not None else None,
        telehealth=bool(eligibility.get("telehealth_allowed")),
        today=today,
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
    today = patient_today(lead.patient, now)
    first = None if bruteforce else prefetch(lead, now, today)
    if first is not None:
        eligibility = evaluate_lead(lead, today, program=first.program)
    else:
        eligibility = evaluate_lead(lead, today)
    ctx = context_for(lead, eligibility, now, today)
    outcome = match_bruteforce(ctx) if bruteforce else match_indexed(ctx, first)
    return to_json(ctx, outcome, eligibility, now, "bruteforce" if bruteforce else "index")


def recent_bookings(physician_ids: list[int], now: datetime) -> dict[int, int]:
    """Each physician's bookings in the matching window as of ``now`` (what ranks them), for a
    stored match list to show the current load rather than the load when it was made."""
    if not physician_ids:
        return {}
    rows = db.session.execute(
        sa.select(A.c.physician_id, sa.func.count())
        .where(
            A.c.physician_id.in_(physician_ids),
            A.c.created_at >= now - BOOKINGS_WINDOW,
            A.c.status != AppointmentStatus.CANCELLED.value,
        )
        .group_by(A.c.physician_id)
    ).all()
    return {pid: 0 for pid in physician_ids} | dict(rows)


def booking_refusal(lead: Lead, physician: Physician, mode: str, now: datetime) -> str | None:
    """Why ``physician`` cannot be booked for ``lead`` in ``mode`` now, in the words of the match
    list's exclusions; None when they can. A stored match is a snapshot: since it was made a
    registration may have expired or the week filled up. The rules of a match (``classify``) for
    this one physician, read with the same details query; distance is not checked again (the
    list placed them within reach, and a practice does not move between match and booking)."""
    today = patient_today(lead.patient, now)
    ctx = context_for(lead, evaluate_lead(lead, today), now, today)
    cheap = (
        physician.id,
        physician.latitude,
        physician.longitude,
        physician.accepting_new,
        physician.offers_in_person,
        physician.offers_telehealth,
        physician.priority,
        physician.weekly_capacity,
    )
    doc = Doc(cheap, ctx.origin)
    _resolve(ctx, [doc])
    if doc.reason is not None:
        return doc.reason
    if mode == "telehealth" and not doc.telehealth:
        if not doc.offers_telehealth:
            return "does not offer telehealth"
        return f"{ctx.state} does not allow telehealth certification"
    if mode == "in_person" and not doc.in_person:
        return "does not see patients in person"
    return None


def comparable(result: dict) -> dict:
    """A match result without what legitimately differs between two runs (time, method)."""
    rules = {k: v for k, v in result["rules"].items() if k != "method"}
    return {**{k: v for k, v in result.items() if k not in ("matched_at", "rules")}, "rules": rules}
