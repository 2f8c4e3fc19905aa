"""Enumerations shared by models, services and forms."""

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    SPECIALIST = "specialist"


class Credential(StrEnum):
    MD = "MD"
    DO = "DO"
    NP = "NP"
    PA = "PA"


class GeocodePrecision(StrEnum):
    ROOFTOP = "rooftop"
    STREET = "street"
    ZIP = "zip"
    CITY = "city"
    STATE = "state"


class GeocodeStatus(StrEnum):
    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"


class ProgramType(StrEnum):
    MEDICAL = "medical"
    MEDICAL_AND_ADULT_USE = "medical_and_adult_use"
    CBD_ONLY = "cbd_only"
    NONE = "none"


class ContactMethod(StrEnum):
    PHONE = "phone"
    TEXT = "text"
    EMAIL = "email"


class ContactTime(StrEnum):
    ANY = "any"
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"


class LeadStatus(StrEnum):
    NEW = "new"
    ATTEMPTING = "attempting"
    CONTACTED = "contacted"
    BOOKED = "booked"
    COMPLETED = "completed"
    LOST = "lost"


OPEN_STATUSES = (LeadStatus.NEW, LeadStatus.ATTEMPTING, LeadStatus.CONTACTED, LeadStatus.BOOKED)


class LostReason(StrEnum):
    UNREACHABLE = "unreachable"
    NOT_ELIGIBLE = "not_eligible"
    NOT_INTERESTED = "not_interested"
    PRICE = "price"
    CHOSE_ELSEWHERE = "chose_elsewhere"
    DUPLICATE = "duplicate"
    SPAM = "spam"
    OTHER = "other"


class LeadSourceKind(StrEnum):
    FORM = "form"
    WEBHOOK = "webhook"
    MANUAL = "manual"


class VisitMode(StrEnum):
    IN_PERSON = "in_person"
    TELEHEALTH = "telehealth"


class PreferredMode(StrEnum):
    EITHER = "either"
    IN_PERSON = "in_person"
    TELEHEALTH = "telehealth"


class EventKind(StrEnum):
    CREATED = "created"
    RESUBMITTED = "resubmitted"
    GEOCODED = "geocoded"
    GEOCODE_FAILED = "geocode_failed"
    ELIGIBILITY_CHECKED = "eligibility_checked"
    MATCHED = "matched"
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    STATUS_CHANGED = "status_changed"
    NOTE = "note"
    CALL_ATTEMPT = "call_attempt"
    EMAIL_SENT = "email_sent"
    EMAIL_FAILED = "email_failed"
    FOLLOW_UP_SCHEDULED = "follow_up_scheduled"
    FOLLOW_UP_DONE = "follow_up_done"
    APPOINTMENT_BOOKED = "appointment_booked"
    APPOINTMENT_UPDATED = "appointment_updated"
    APPOINTMENT_RESCHEDULED = "appointment_rescheduled"
    SLA_BREACHED = "sla_breached"
    UPDATED = "updated"


class FollowUpKind(StrEnum):
    CALL = "call"
    EMAIL = "email"
    SMS = "sms"


class CallOutcome(StrEnum):
    NO_ANSWER = "no_answer"
    VOICEMAIL = "voicemail"
    WRONG_NUMBER = "wrong_number"
    REACHED = "reached"


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


# An appointment still to happen (the others have their outcome).
LIVE_APPOINTMENT = (AppointmentStatus.BOOKED, AppointmentStatus.CONFIRMED)


class InboxStatus(StrEnum):
    RECEIVED = "received"  # stored, not processed yet
    ACCEPTED = "accepted"  # made a new lead
    RESUBMITTED = "resubmitted"  # folded into the same patient's open lead (SPEC 2.2)
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    SPAM = "spam"  # a form caught by the honeypot: its fields kept, replayable if a real patient sent it
    FAILED = "failed"
    DISMISSED = "dismissed"  # an admin set a failed or refused item aside (why: in the audit log); replayable


class InboxChannel(StrEnum):
    FORM = "form"
    WEBHOOK = "webhook"


class OutboxStatus(StrEnum):
    QUEUED = "queued"  # waiting for its first try, or for its next one (``next_attempt_at``)
    SENDING = "sending"  # claimed by a runner until ``next_attempt_at`` (a lease)
    WITHDRAWN = "withdrawn"  # not sent: overtaken while it waited (the visit cancelled, moved or past)
    SENT = "sent"
    STORED = "stored"  # no SMTP configured: kept and logged, not sent
    FAILED = "failed"
