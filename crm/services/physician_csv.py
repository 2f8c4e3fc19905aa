"""Physician CSV import and export in the SPEC 9 column format.

Import runs in two steps that share one code path:

1. ``plan_import(data)`` reads the bytes, validates every line and compares it with
   the directory: each line becomes ``create``, ``update``, ``unchanged`` or
   ``error`` (with its line number and reasons). Nothing is written.
2. ``apply_import(report)`` writes the ``create`` and ``update`` lines, each in its
   own savepoint, so a line that fails at write time is reported and no other line
   is affected. The caller commits.

The dry run is step 1 alone; committing an uploaded file runs step 1 again on the
kept file (the directory may have changed since the preview) and then step 2.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload

from crm.extensions import db
from crm.models import Condition, Physician
from crm.services import directory, spreadsheet
from crm.services.contact import clean_name, normalise_state, normalise_zip
from crm.services.directory import PhysicianData
from crm.services.geocoding import zip_location
from crm.services.intake import CONTROL_RE

log = logging.getLogger(__name__)

COLUMNS = (
    "npi", "first_name", "last_name", "credential", "practice_name", "street", "city", "state", "zip", "phone",
    "email", "website", "offers_in_person", "offers_telehealth", "languages", "conditions", "accepting_new",
    "active", "priority", "weekly_capacity", "registrations", "latitude", "longitude",
)  # fmt: skip
OPTIONAL_COLUMNS = ("latitude", "longitude")
REQUIRED_COLUMNS = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)
# Written first by ``error_lines_csv`` and skipped on import: the corrected file goes straight back in.
ERRORS_COLUMN = "import_errors"
BOOLEAN_DEFAULTS = {"offers_in_person": True, "offers_telehealth": False, "accepting_new": True, "active": True}

CREATE, UPDATE, UNCHANGED, ERROR = "create", "update", "unchanged", "error"


class CSVFileError(ValueError):
    """The file as a whole cannot be read (encoding, header): no line is looked at."""


@dataclass
class LineResult:
    line: int
    npi: str
    name: str
    action: str
    errors: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    data: PhysicianData | None = None
    physician_id: int | None = None
    geocode: str = ""  # why the address is geocoded on import (shown in the preview), or ""
    warning: str = ""  # what the change leaves to do (a deactivated physician's booked appointments)
    diff: dict[str, list] = field(default_factory=dict)  # an update's {field: [old, new]}, as audited

    def warn(self, text: str) -> None:
        self.warning = f"{self.warning}; {text}" if self.warning else text

    @property
    def message(self) -> str:
        return "; ".join(self.errors)


@dataclass
class ImportReport:
    lines: list[LineResult] = field(default_factory=list)
    file_error: str | None = None
    applied: bool = False
    geocode_later: bool = False  # addresses left to the geocode_retry job (an online geocoder)
    notes: list[str] = field(default_factory=list)  # how the file was read, when not as exported

    def count(self, action: str) -> int:
        return sum(1 for line in self.lines if line.action == action)

    @property
    def counts(self) -> dict[str, int]:
        return {a: self.count(a) for a in (CREATE, UPDATE, UNCHANGED, ERROR)}

    @property
    def background_geocodes(self) -> int:
        """Addresses this import leaves to the geocode_retry job."""
        if not self.geocode_later:
            return 0
        return sum(1 for line in self.lines if line.geocode and line.action in (CREATE, UPDATE))

    @property
    def errors(self) -> list[LineResult]:
        return [line for line in self.lines if line.action == ERROR]

    @property
    def changes(self) -> list[LineResult]:
        return [line for line in self.lines if line.action in (CREATE, UPDATE)]

    @property
    def ok(self) -> bool:
        return self.file_error is None and not self.errors

    def summary(self) -> str:
        if self.file_error:
            return f"Not imported: {self.file_error}"
        c = self.counts
        if self.applied:
            head = f"{c[CREATE]} created, {c[UPDATE]} updated, {c[UNCHANGED]} unchanged"
        else:
            head = f"Dry run: {c[CREATE]} would be created, {c[UPDATE]} updated, {c[UNCHANGED]} unchanged"
        tail = f", {c[ERROR]} line(s) with errors" if c[ERROR] else ", no errors"
        if self.background_geocodes:
            verb = "are" if self.applied else "would be"
            tail += f"; {self.background_geocodes} address(es) {verb} located in the background"
        return f"{head}{tail} ({len(self.lines)} line(s) read)."


# --- reading ------------------------------------------------------------------------------------


def decode(data: bytes) -> str:
    if not data or not data.strip():
        raise CSVFileError("The file is empty: it needs a header row and one line per physician.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CSVFileError(
            f"The file is not UTF-8 (byte 0x{data[exc.start]:02x} at position {exc.start}). "
            "Save it as 'CSV UTF-8' and upload it again."
        ) from None


DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs"}


def _column_name(cell: str) -> str:
    """ "NPI", " First Name", "offers-telehealth": what a person types for npi, first_name and friends."""
    return re.sub(r"[\s-]+", "_", cell.strip().lower())


def _delimiter(text: str) -> str:
    """The separator that makes the most known column names of the header row: a comma as exported,
    or the semicolon a spreadsheet set to a European locale saves "CSV" with (or a tab)."""
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]  # CR alone: "CSV (Macintosh)" from Excel for Mac

    def known(delimiter: str) -> int:
        try:
            cells = next(csv.reader([first], delimiter=delimiter), [])
        except csv.Error:
            return 0  # read_rows reports the unreadable header
        return sum(1 for h in cells if _column_name(h) in COLUMNS)

    return max(DELIMITERS, key=lambda d: (known(d), d == ","))


def read_rows(text: str, notes: list[str] | None = None) -> tuple[list[str], Iterable[tuple[int, list[str]]]]:
    """The normalised header and (line number, fields) per record; line numbers count the header as 1.

    Header cells left empty (the stray columns a spreadsheet saves after the last one) are kept as
    ``""`` so the fields still line up; the caller ignores them. ``notes`` receives how the file was
    read when that differs from an export (another separator, ignored columns)."""
    delimiter = _delimiter(text)
    # A quote left open swallows the rest of the file into one cell. Past the csv module's 128 KiB
    # cell limit that used to be a "field larger than field limit" error on the quote's line, and
    # the reader went on from mid-file: the hundreds of lines in between were never mentioned. With
    # the limit at the file's size the record ends at the end of the file, and records() below says
    # which lines the quote swallowed. (The limit is process-wide; it only ever grows.)
    if csv.field_size_limit() <= len(text):
        csv.field_size_limit(len(text) + 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise CSVFileError(f"The header row cannot be read: {exc}") from None
    header = [_column_name(h) for h in header]
    # The reasons column of a file of refused lines (error_lines_csv), corrected and sent back: dropped.
    reasons_at = header.index(ERRORS_COLUMN) if ERRORS_COLUMN in header else None
    if reasons_at is not None:
        del header[reasons_at]
    named = [h for h in header if h]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [h for h in named if h not in COLUMNS]
    duplicated = sorted({h for h in named if named.count(h) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(repr(u) for u in unknown)}")
    if duplicated:
        problems.append(f"repeated column(s): {', '.join(duplicated)}")
    if ("latitude" in header) != ("longitude" in header):
        problems.append("latitude and longitude columns go together")
    if problems:
        raise CSVFileError(
            "The header row does not match the physician CSV format: " + "; ".join(problems) + ". "
            "Expected columns: " + ", ".join(COLUMNS) + "."
        )
    if notes is not None:
        if delimiter != ",":
            notes.append(f"The file is separated by {DELIMITERS[delimiter]}, not commas: it was read that way.")
        if len(named) < len(header):
            notes.append(
                f"{len(header) - len(named)} column(s) without a name in the header row (as a spreadsheet saves "
                "stray cells) are ignored; a line with a value in one is reported."
            )

    def records():
        start = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, exc
                start = reader.line_num + 1
                continue
            if reasons_at is not None and len(fields) > reasons_at:
                del fields[reasons_at]
            if len(fields) != len(header) and reader.line_num > start and any("\n" in f for f in fields):
                # A quote left open swallows the lines after it into one record: say where, or
                # the report shows one odd field count and those lines are never mentioned.
                yield (
                    start,
                    csv.Error(
                        f"a quote opened on line {start} is not closed, so lines {start}-{reader.line_num} were read "
                        'as one record (close the quote, or write a quote inside a cell as two: "")'
                    ),
                )
            else:
                yield start, fields
            start = reader.line_num + 1

    return header, records()


def _bool(name: str, value: str) -> bool:
    v = (value or "").strip().lower()
    if v == "":
        return BOOLEAN_DEFAULTS[name]
    if v == "true":
        return True
    if v == "false":
        return False
    raise ValueError(f"must be true or false (got {value!r}).")


def _csv_zip(value: str, state: str | None) -> str:
    """A ZIP cell; ``2101`` is taken as ``02101`` when that ZIP lies in the line's state.

    A spreadsheet that opens the file reads 5-digit ZIPs as numbers and saves New England's, New
    Jersey's and Puerto Rico's without their leading zeros. Padding is safe only where the padded
    ZIP is in the state the line gives; anything else is refused, saying why."""
    v = (value or "").strip()
    if v.isascii() and v.isdigit() and 3 <= len(v) <= 4:
        padded = v.zfill(5)
        located = zip_location(padded)
        if state and located is not None and located.state == state:
            return padded
        raise ValueError(
            f"Enter a 5-digit ZIP code (got {v!r}: if a spreadsheet dropped its leading zeros, "
            "format the column as text before saving)."
        )
    return normalise_zip(v)


def parse_registrations(value: str) -> list[directory.RegistrationData]:
    regs = []
    for part in (value or "").split(";"):
        part = part.strip()
        if not part:
            continue
        if part.count(":") < 2:
            raise ValueError(f"Registration {part!r} must look like STATE:NUMBER:YYYY-MM-DD.")
        state, rest = part.split(":", 1)
        number, expires = rest.rsplit(":", 1)
        regs.append(directory.clean_registration(state, number, expires))
    directory.check_unique_registration_states(regs)
    return sorted(regs)


def condition_slugs() -> dict[str, str]:
    """Every slug a CSV may name, former ones included, to the condition's current slug."""
    slugs: dict[str, str] = {}
    for c in db.session.scalars(sa.select(Condition)):
        slugs.update({old: c.slug for old in c.former_slugs or []})
    for c in db.session.scalars(sa.select(Condition)):
        slugs[c.slug] = c.slug  # a current slug wins over another condition's former one
    return slugs


def validate_row(row: dict[str, str], known_slugs: set[str] | dict[str, str]) -> tuple[PhysicianData | None, list[str]]:
    """Validate one CSV record; returns the values or every problem found on the line."""
    # Control characters (a NUL byte, say) are never meant, and PostgreSQL refuses NUL at write
    # time: the line is refused here, naming the cells, as the preview must say what the import does.
    unreadable = [name for name in COLUMNS if CONTROL_RE.search(row.get(name) or "")]
    if unreadable:
        return None, [
            f"{name}: contains a control character (such as a NUL byte); use plain text." for name in unreadable
        ]
    errors: list[str] = []
    values: dict = {}

    def take(name: str, fn: Callable[[str], object]) -> None:
        try:
            values[name] = fn(row.get(name, ""))
        except ValueError as exc:
            errors.append(f"{name}: {exc}")

    def text(name: str, max_len: int, required: bool = False) -> Callable[[str], str]:
        def fn(v: str) -> str:
            v = (v or "").strip()
            if required and not v:
                raise ValueError("is required.")
            if len(v) > max_len:
                raise ValueError(f"is longer than {max_len} characters.")
            return v

        return fn

    take("npi", directory.clean_npi)

    def name_text(name: str, max_len: int, required: bool = False) -> Callable[[str], str]:
        # As save_physician will clean it, so the preview says what the import does (a tab refused).
        checked = text(name, max_len, required)
        return lambda v: checked(clean_name(v, "It"))

    take("first_name", name_text("first_name", 100, required=True))
    take("last_name", name_text("last_name", 100, required=True))
    take("credential", directory.clean_credential)
    take("practice_name", name_text("practice_name", 200))
    take("street", text("street", 200))
    take("city", text("city", 100))
    take("state", normalise_state)
    take("phone", directory.clean_optional_phone)
    take("email", directory.clean_optional_email)
    take("website", directory.clean_website)
    for name in BOOLEAN_DEFAULTS:
        take(name, lambda v, name=name: _bool(name, v))
    take("languages", directory.clean_languages)
    take("priority", directory.clean_priority)
    take("weekly_capacity", directory.clean_capacity)
    take("registrations", parse_registrations)

    try:
        values["latitude"], values["longitude"] = directory.clean_coordinates(row.get("latitude"), row.get("longitude"))
    except ValueError as exc:
        errors.append(f"latitude/longitude: {exc}")
        values["latitude"] = values["longitude"] = None
    zip_raw = (row.get("zip") or "").strip()
    if zip_raw:
        take("zip", lambda v: _csv_zip(v, values.get("state")))
    elif values.get("latitude") is None:
        errors.append("zip: is required (or give latitude and longitude).")
    else:
        values["zip"] = ""

    slugs = [s.strip().lower() for s in (row.get("conditions") or "").split(";") if s.strip()]
    unknown = [s for s in slugs if s not in known_slugs]
    if unknown:
        errors.append(f"conditions: unknown condition slug(s): {', '.join(unknown)}.")
    # A mapping also knows renamed conditions' former slugs (an export from before the rename).
    current = known_slugs if isinstance(known_slugs, dict) else {s: s for s in known_slugs}
    values["conditions"] = sorted({current.get(s, s) for s in slugs})

    if values.get("zip") and values.get("state") and not errors:
        try:
            directory.check_zip_in_state(values["zip"], values["state"])
        except ValueError as exc:
            errors.append(f"zip: {exc}")
    if errors:
        return None, errors
    return PhysicianData(**values), []


# --- planning and applying ----------------------------------------------------------------------


def _load_existing(npis: list[str]) -> dict[str, Physician]:
    found: dict[str, Physician] = {}
    for i in range(0, len(npis), 500):
        chunk = npis[i : i + 500]
        stmt = (
            sa.select(Physician)
            .where(Physician.npi.in_(chunk))
            .options(selectinload(Physician.conditions), selectinload(Physician.registrations))
        )
        found.update({p.npi: p for p in db.session.scalars(stmt)})
    return found


def error_lines_csv(data: bytes, report: ImportReport | None = None) -> str | None:
    """The lines of an uploaded file that the import refuses, as CSV: the reasons in a first column
    ``import_errors``, then the line as it was. Corrected in a spreadsheet, the file can be imported
    as it is (the import skips that column). None when the file itself cannot be read.

    ``report``: the import already run on ``data`` (its write-time refusals included); planned
    afresh otherwise."""
    report = report if report is not None else plan_import(data)
    if report.file_error:
        return None
    reasons = {r.line: r.errors for r in report.errors}
    header, records = read_rows(decode(data))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([ERRORS_COLUMN] + header)  # unnamed columns too: a stray value may be the error
    for line_no, fields in records:
        if line_no not in reasons:
            continue
        # Every cell, extra ones included (an unquoted comma splits a cell: that is the error), read as
        # the import reads it and guarded again against spreadsheet formulas, as the export is.
        cells = [] if isinstance(fields, csv.Error) else fields
        writer.writerow(
            [spreadsheet.neutralise(f"Line {line_no}: " + " ".join(reasons[line_no]))]
            + [spreadsheet.neutralise(spreadsheet.restore(c)) for c in cells]
        )
    return out.getvalue()


def plan_import(data: bytes, *, geocode_later: bool = False) -> ImportReport:
    """Validate every line and say what it would do. Reads the database, writes nothing.

    ``geocode_later``: addresses are left to the ``geocode_retry`` job rather than geocoded line
    by line (a web request cannot wait for an online geocoder's one call a second)."""
    report = ImportReport(geocode_later=geocode_later)
    try:
        header, records = read_rows(decode(data), report.notes)
    except CSVFileError as exc:
        report.file_error = str(exc)
        return report
    known_slugs = condition_slugs()
    today = directory.desk_today()
    parsed: list[tuple[LineResult, PhysicianData | None]] = []
    first_line_of: dict[str, int] = {}
    for line_no, fields in records:
        if isinstance(fields, csv.Error):
            parsed.append((LineResult(line_no, "", "", ERROR, [f"Unreadable CSV: {fields}"]), None))
            continue
        if not any(f.strip() for f in fields):
            continue  # blank line
        raw_npi = CONTROL_RE.sub("", fields[0].strip()) if fields else ""
        # An exported cell that a spreadsheet could have run carries a leading quote: drop it. A line
        # with too few or too many cells still names the physician from the cells it has.
        row = {h: spreadsheet.restore(f) for h, f in zip(header, fields, strict=False) if h}
        name = f"{row.get('first_name', '').strip()} {row.get('last_name', '').strip()}".strip()
        name = CONTROL_RE.sub("", name)  # shown in the report; the line itself is refused below
        if len(fields) != len(header):
            result = LineResult(
                line_no, raw_npi, name, ERROR, [f"Has {len(fields)} field(s); the header has {len(header)}."]
            )
            parsed.append((result, None))
            continue
        stray = [str(i + 1) for i, (h, f) in enumerate(zip(header, fields, strict=True)) if not h and f.strip()]
        if stray:
            message = f"Has a value in column(s) {', '.join(stray)}, which have no name in the header row."
            parsed.append((LineResult(line_no, raw_npi, name, ERROR, [message]), None))
            continue
        values, errors = validate_row(row, known_slugs)
        npi = values.npi if values else CONTROL_RE.sub("", row.get("npi", "").strip())
        if values and npi in first_line_of:
            errors = [f"Duplicate NPI {npi}: already on line {first_line_of[npi]} of this file."]
            values = None
        elif values:
            first_line_of[npi] = line_no
        parsed.append((LineResult(line_no, npi, name, ERROR if errors else "", errors, data=values), values))

    existing = _load_existing(list(first_line_of))
    for result, values in parsed:
        if values is None:
            result.action = ERROR
        else:
            current = existing.get(values.npi)
            before = None
            if current is None:
                result.action, result.changes = CREATE, []
            else:
                result.physician_id = current.id
                result.changes = directory.changed_fields(current, values)
                result.action = UPDATE if result.changes else UNCHANGED
            if result.action == UPDATE:
                # Old -> new for the preview: an empty phone cell blanks the stored phone, say so.
                before = directory.physician_data(current)
                result.diff = directory.physician_changes(before, values, result.changes)
                if "active" in result.changes and not values.active:
                    upcoming = directory.upcoming_appointments(current, limit=1)[1]
                    if upcoming:
                        result.warn(
                            f"deactivated with {upcoming} upcoming appointment{'' if upcoming == 1 else 's'}, which "
                            f"{'stays' if upcoming == 1 else 'stay'} booked: rebook or cancel "
                            f"{'it' if upcoming == 1 else 'them'} from the physician's page"
                        )
            if result.action != UNCHANGED:
                expired = directory.expired_registrations(values, before, today)
                if expired:
                    result.warn(f"registration {directory.expired_warning(expired)}")
            if result.action != UNCHANGED and directory.geocode_needed(current, values, result.changes):
                stale = current is not None and values.latitude is not None
                result.geocode = (
                    "new address geocoded (the file's latitude/longitude are the old address's)"
                    if stale
                    else "address geocoded"
                )
                if geocode_later:
                    result.geocode += " in the background, within minutes"
        report.lines.append(result)
    return report


def apply_import(
    report: ImportReport, progress: Callable[[int], None] | None = None, *, detail: dict | None = None
) -> ImportReport:
    """Write the create/update lines of a planned report, one savepoint per line.

    Audited as one ``import_physicians`` entry (plus one entry per written line).
    Flushes; the caller commits.
    """
    from crm.services import audit

    if report.file_error:
        return report
    todo = report.changes
    # Written first, so the transaction is open before the per-line savepoints (with
    # pysqlite a SAVEPOINT outside a transaction would commit at every RELEASE).
    summary = audit.record("import_physicians", "physician", None, detail={"planned": report.counts, **(detail or {})})
    conditions_by_slug = {c.slug: c for c in db.session.scalars(sa.select(Condition))}
    existing = _load_existing([line.npi for line in todo if line.action == UPDATE])
    for line in todo:
        try:
            with db.session.begin_nested():
                current = existing.get(line.npi)
                before = directory.physician_data(current) if current is not None else None
                result = directory.save_physician(
                    line.data,
                    current,
                    conditions_by_slug=conditions_by_slug,
                    geocode_later=report.geocode_later,
                )
                line.physician_id = result.physician.id
                detail = {"via": "csv", "line": line.line, "fields": result.changes}
                if before is not None:
                    detail["changes"] = directory.physician_changes(before, line.data, result.changes)
                audit.record(
                    "create_physician" if result.created else "update_physician",
                    "physician",
                    result.physician.id,
                    detail=detail,
                )
        # Any refusal by the database (a duplicate NPI inserted meanwhile, a value it cannot store
        # that validation missed) fails this line alone: the savepoint is rolled back.
        except (DBAPIError, ValueError) as exc:
            log.warning("physician CSV line %s not saved: %s", line.line, exc)
            reason = str(getattr(exc, "orig", exc)).splitlines()[0]
            if isinstance(exc, IntegrityError) and "npi" in reason.lower():
                reason = (
                    f"NPI {line.npi} was added by another import or save while this one ran; "
                    "import the file again to update that physician."
                )
            line.action, line.errors = ERROR, [f"Not saved: {reason}"]
        if progress:
            progress(1)
    report.applied = True
    summary.detail = {**summary.detail, "counts": report.counts}
    db.session.flush()
    return report


def import_csv(
    data: bytes,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    detail: dict | None = None,
    geocode_later: bool = False,
) -> ImportReport:
    report = plan_import(data, geocode_later=geocode_later)
    return report if dry_run else apply_import(report, progress, detail=detail)


# --- export -------------------------------------------------------------------------------------


def _fmt_bool(value: bool) -> str:
    return "true" if value else "false"


def physician_row(p: Physician) -> list[str]:
    regs = ";".join(
        f"{r.state}:{r.number}:{r.expires_on.isoformat()}" for r in sorted(p.registrations, key=lambda r: r.state)
    )
    return [
        p.npi, p.first_name, p.last_name, str(p.credential), p.practice_name or "", p.street or "", p.city or "",
        p.state, p.zip or "", p.phone or "", p.email or "", p.website or "", _fmt_bool(p.offers_in_person),
        _fmt_bool(p.offers_telehealth), ";".join(p.languages or []), ";".join(sorted(c.slug for c in p.conditions)),
        _fmt_bool(p.accepting_new), _fmt_bool(p.active), str(p.priority), str(p.weekly_capacity), regs,
        "" if p.latitude is None else f"{p.latitude:.6f}", "" if p.longitude is None else f"{p.longitude:.6f}",
    ]  # fmt: skip


def export_rows(
    stmt: sa.Select | None = None, batch: int = 1000, session: Session | None = None
) -> Iterable[list[str]]:
    """The header and one row per physician (all of them, or those ``stmt`` selects), streamed in
    batches, read through ``session`` (the request's by default)."""
    yield list(COLUMNS)
    stmt = stmt if stmt is not None else sa.select(Physician).order_by(Physician.id)
    stmt = stmt.options(selectinload(Physician.conditions), selectinload(Physician.registrations))
    for p in (session or db.session).scalars(stmt.execution_options(yield_per=batch)):
        yield physician_row(p)


def export_chunks(
    stmt: sa.Select | None = None, size: int = 64 * 1024, session: Session | None = None
) -> Iterator[str]:
    """The CSV in pieces of about ``size`` characters, header first: what the web export streams,
    so a large directory is never held whole in memory."""
    return _csv_pieces(export_rows(stmt, session=session), size)


def _csv_pieces(rows: Iterable[list[str]], size: int) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([spreadsheet.neutralise(cell) for cell in row])  # safe to open in a spreadsheet
        if out.tell() >= size:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    if out.tell():
        yield out.getvalue()


def export_count(stmt: sa.Select | None = None) -> int:
    """How many physicians ``stmt`` (or the whole directory) exports."""
    stmt = stmt if stmt is not None else sa.select(Physician)
    return db.session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())) or 0


def export_csv(stmt: sa.Select | None = None) -> tuple[str, int]:
    """The whole CSV as text (UTF-8 when encoded) and the number of physicians in it."""
    rows = list(export_rows(stmt))
    return "".join(_csv_pieces(rows, 64 * 1024)), len(rows) - 1


# --- uploads kept between the preview and the commit --------------------------------------------

UPLOAD_MAX_AGE_SECONDS = 24 * 3600
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def _upload_path(folder: str, user_id: int, token: str) -> Path | None:
    if not _TOKEN_RE.match(token or ""):
        return None
    return Path(folder) / f"physicians-{int(user_id)}-{token}.csv"


def _new_token(folder: str) -> str:
    """A random file token, after removing the folder's stale files (uploads and refused lines)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - UPLOAD_MAX_AGE_SECONDS
    for old in path.glob("physicians-*.csv"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass
    return secrets.token_urlsafe(24)


def _keep(target: Path, data: bytes) -> None:
    target.write_bytes(data)
    target.chmod(0o600)


def _kept(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None and path.is_file() else None


def store_upload(folder: str, user_id: int, data: bytes) -> str:
    """Keep an uploaded file for its commit; returns the random token that names it."""
    token = _new_token(folder)
    _keep(_upload_path(folder, user_id, token), data)
    return token


def load_upload(folder: str, user_id: int, token: str) -> bytes | None:
    """The kept file for this user and token, or None (unknown, expired or already imported)."""
    return _kept(_upload_path(folder, user_id, token))


def _error_lines_path(folder: str, user_id: int, token: str) -> Path | None:
    # Another name than an upload's: a token of refused lines can never be committed as an import.
    if not _TOKEN_RE.match(token or ""):
        return None
    return Path(folder) / f"physicians-errors-{int(user_id)}-{token}.csv"


def store_error_lines(folder: str, user_id: int, text: str) -> str:
    """Keep the refused lines of a committed import (the upload itself is deleted) so the result
    page can still offer them; removed with the stale uploads after 24 hours. Returns the token."""
    token = _new_token(folder)
    _keep(_error_lines_path(folder, user_id, token), text.encode("utf-8"))
    return token


def load_error_lines(folder: str, user_id: int, token: str) -> str | None:
    data = _kept(_error_lines_path(folder, user_id, token))
    return None if data is None else data.decode("utf-8")


def discard_upload(folder: str, user_id: int, token: str) -> None:
    path = _upload_path(folder, user_id, token)
    if path is not None:
        path.unlink(missing_ok=True)
