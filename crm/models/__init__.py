"""All models, importable from one place."""

from crm.models.base import Base, utcnow
from crm.models.directory import Condition, Physician, Registration, StateProgram
from crm.models.intake import InboxItem, WebhookSecret, WebhookSource
from crm.models.leads import Appointment, FollowUp, Lead, LeadEvent, Patient
from crm.models.reports import (
    ReportChange,
    ReportDailyBookings,
    ReportDailyConditions,
    ReportDailyFirstContact,
    ReportDailyLeads,
    ReportDailySources,
    ReportDailyStates,
    ReportRollupState,
)
from crm.models.system import GeocodeCache, JobRun, Notification, OutboxEmail, Setting
from crm.models.users import AuditLog, LoginThrottle, User

__all__ = [
    "Appointment",
    "AuditLog",
    "Base",
    "Condition",
    "FollowUp",
    "GeocodeCache",
    "InboxItem",
    "JobRun",
    "Lead",
    "LeadEvent",
    "LoginThrottle",
    "Notification",
    "OutboxEmail",
    "Patient",
    "Physician",
    "Registration",
    "ReportChange",
    "ReportDailyBookings",
    "ReportDailyConditions",
    "ReportDailyFirstContact",
    "ReportDailyLeads",
    "ReportDailySources",
    "ReportDailyStates",
    "ReportRollupState",
    "Setting",
    "StateProgram",
    "User",
    "WebhookSecret",
    "WebhookSource",
    "utcnow",
]
