"""Configuration from the environment (see README, "Configuration")."""

from __future__ import annotations

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

from crm import ConfigError  # noqa: F401  (raised here, and by crm.config_check)

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"

load_dotenv(BASE_DIR / ".env")


TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    """A yes/no variable. A value that is neither (a typo such as "ture") stops the start: read as
    false it could silently turn a protection off (SESSION_COOKIE_SECURE)."""
    value = (os.environ.get(name) or "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS | FALSE_WORDS:
        return value in TRUE_WORDS
    raise ConfigError(f"{name}={os.environ[name]!r}: expected true or false (also 1/0, yes/no, on/off)")


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number; outside [minimum, maximum] it stops the start (a negative SLA or batch size
    would not fail loudly, it would make a job do nothing, or everything, every minute)."""
    value = (os.environ.get(name) or "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={os.environ[name]!r}: expected a whole number") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    """A number (decimals allowed), at least ``minimum``."""
    value = (os.environ.get(name) or "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={os.environ[name]!r}: expected a number such as 5 or 2.5") from None
    if number != number or number in (float("inf"), float("-inf")):  # nan, inf
        raise ConfigError(f"{name}={os.environ[name]!r}: expected a number such as 5 or 2.5")
    _check_range(name, number, minimum, None)
    return number


def _check_range(name: str, number: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={os.environ[name]!r}: expected at least {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name}={os.environ[name]!r}: expected at most {maximum}")


def env_proxies(name: str) -> int:
    """How many reverse proxies stand in front of the app (each adds one X-Forwarded-For hop);
    "true" means one."""
    value = (os.environ.get(name) or "").strip().lower()
    if value in TRUE_WORDS - {"1"}:
        return 1
    if value in FALSE_WORDS - {"0"}:
        return 0
    count = env_int(name, 0)
    if count < 0:
        raise ConfigError(f"{name}={os.environ[name]!r}: expected the number of proxies (or true)")
    return count


def rate_limit_storage_options(uri: str) -> dict:
    """Options for Flask-Limiter's store. Its failures surface as ``limits.errors.StorageError``
    whatever the store (our own calls to it catch that one type). A Redis that stops answering
    gets half a second, not a worker held until the kernel gives up on the connection (redis-py
    waits forever by default)."""
    if uri.startswith(("redis://", "rediss://", "redis+unix://")):
        return {"wrap_exceptions": True, "socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    return {"wrap_exceptions": True}


def _secret_key() -> str:
    """SECRET_KEY from the environment; for local use, a random key kept in instance/."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    INSTANCE_DIR.mkdir(exist_ok=True)
    key_file = INSTANCE_DIR / "secret_key"
    try:
        # Created at most once (O_EXCL): gunicorn workers starting together all read the same key,
        # where each writing its own would leave every worker refusing the others' sessions.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    for _ in range(50):  # another process may have created it and not written it yet
        key = key_file.read_text().strip()
        if key:
            return key
        time.sleep(0.01)
    raise ConfigError(f"{key_file} is empty: delete it, or set SECRET_KEY")


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'crm.sqlite3'}"
    # Heroku-style URLs name the driver-less scheme; we use psycopg 3.
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://") :]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Config:
    SECRET_KEY = _secret_key()
    SQLALCHEMY_DATABASE_URI = _database_url()
    # hide_parameters: a database error's message never carries the values (patient data, SPEC 12).
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "hide_parameters": True}

    # Sessions (SPEC 12): Secure outside debug, HttpOnly, SameSite=Lax, 15 idle minutes.
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_NAME = "appointment_desk"
    IDLE_TIMEOUT = timedelta(minutes=env_int("IDLE_TIMEOUT_MINUTES", 15, minimum=1))
    # The server ends an idle session (crm/security.py); the cookie outlives that by a few
    # minutes only so the next request can say why the user was signed out.
    PERMANENT_SESSION_LIFETIME = IDLE_TIMEOUT + timedelta(minutes=5)
    REMEMBER_COOKIE_DURATION = timedelta(seconds=0)

    WTF_CSRF_TIME_LIMIT = None  # the session's idle limit already bounds it
    MAX_CONTENT_LENGTH = 2 * 1024 * 1024  # uploads (CSV); webhooks have their own 64 KiB cap
    WEBHOOK_MAX_BYTES = 64 * 1024

    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_STORAGE_OPTIONS = rate_limit_storage_options(RATELIMIT_STORAGE_URI)
    # A shared store (Redis) that is down must not turn deliveries away: each worker then counts
    # in memory, and Flask-Limiter tries the store again at growing intervals.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_HEADERS_ENABLED = True
    # Flask-Limiter would put Retry-After on every response (a 202 included), and a sender that
    # honours it would hold back its next delivery: Retry-After stays on 429 and 503, which set it
    # themselves, and the limiter's figure goes in a header of its own.
    RATELIMIT_HEADER_RETRY_AFTER = "X-RateLimit-Retry-After"
    RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "30 per minute")
    LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5, minimum=1)
    LOGIN_LOCKOUT = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
    # Failures within 24 h that lock the email for 24 h: slow guessing, under the short limit.
    LOGIN_DAILY_MAX_FAILURES = env_int("LOGIN_DAILY_MAX_FAILURES", 20, minimum=1)
    JOB_RUN_RETENTION_DAYS = env_int("JOB_RUN_RETENTION_DAYS", 30, minimum=1)  # the housekeeping job
    SPAM_RETENTION_DAYS = env_int("SPAM_RETENTION_DAYS", 30, minimum=1)  # honeypot inbox items, same job
    INTAKE_RATE_LIMIT = os.environ.get("INTAKE_RATE_LIMIT", "10 per minute")
    # PostgreSQL: a new patient's delivery in one call to a per-connection temporary function
    # (docs/intake.md, "Fifth round"). Off behind a transaction-pooling PgBouncer, where the next
    # transaction may reach a server connection that has not got the function.
    INTAKE_ONE_CALL = env_bool("INTAKE_ONE_CALL", True)
    WEBHOOK_RATE_LIMIT = os.environ.get("WEBHOOK_RATE_LIMIT", "600 per minute")

    GEOCODER = os.environ.get("GEOCODER", "offline")
    GEOCODER_OPTIONS = os.environ.get("GEOCODER_OPTIONS", "")  # JSON object of geopy options
    GEOCODER_USER_AGENT = os.environ.get("GEOCODER_USER_AGENT", "appointment-desk")
    GEOCODER_TIMEOUT = env_float("GEOCODER_TIMEOUT", 5, minimum=0.1)  # seconds per online request
    GEOCODER_MIN_DELAY = os.environ.get("GEOCODER_MIN_DELAY", "")  # seconds between requests; 1 for nominatim
    GEOCODE_MAX_ATTEMPTS = env_int("GEOCODE_MAX_ATTEMPTS", 6, minimum=1)
    GEOCODE_RETRY_BASE_SECONDS = env_int("GEOCODE_RETRY_BASE_SECONDS", 300, minimum=1)  # doubles after each failure
    GEOCODE_RETRY_BATCH = env_int("GEOCODE_RETRY_BATCH", 100, minimum=1)

    AUTO_ASSIGN = env_bool("AUTO_ASSIGN", True)
    SLA_MINUTES = env_int("SLA_MINUTES", 15, minimum=1)
    BUSINESS_HOURS = os.environ.get("BUSINESS_HOURS", "08:00-20:00")
    BUSINESS_TIMEZONE = os.environ.get("BUSINESS_TIMEZONE", "America/New_York")
    BUSINESS_DAYS = os.environ.get("BUSINESS_DAYS", "mon,tue,wed,thu,fri")
    STALE_ASSIGNMENT_HOURS = env_int("STALE_ASSIGNMENT_HOURS", 24, minimum=1)
    # The next step planned for a worked lead left with none (SPEC 2.7, docs/queue.md "Next steps"):
    # hours to the next attempt after each unanswered one, and to a check-in after a reached patient.
    NEXT_ATTEMPT_HOURS = os.environ.get("NEXT_ATTEMPT_HOURS", "4,24,48")
    CHECK_IN_HOURS = env_int("CHECK_IN_HOURS", 24, minimum=1, maximum=720)
    UNREACHABLE_ATTEMPTS = env_int("UNREACHABLE_ATTEMPTS", 6, minimum=1)
    UNREACHABLE_DAYS = env_int("UNREACHABLE_DAYS", 10, minimum=0)
    CALLING_WINDOW = os.environ.get("CALLING_WINDOW", "09:00-20:00")
    CALLING_DAYS = os.environ.get("CALLING_DAYS", "mon,tue,wed,thu,fri,sat")
    RUN_SCHEDULER_IN_PROCESS = env_bool("RUN_SCHEDULER_IN_PROCESS", False)
    # Admins are warned when no job has started for this long (several record a run every minute);
    # raise it when the jobs run from cron with `flask crm scheduler --once` less often than that.
    SCHEDULER_SILENT_MINUTES = env_int("SCHEDULER_SILENT_MINUTES", 10, minimum=1)
    # Unset: one lock per database (crm/jobs.py SchedulerLock.lock_path: "<sqlite file>.scheduler.lock"), so
    # instances on different DATABASE_URLs from one checkout each run their own scheduler.
    SCHEDULER_LOCK_FILE = os.environ.get("SCHEDULER_LOCK_FILE", "")
    APPOINTMENT_REMINDER_HOURS = env_int("APPOINTMENT_REMINDER_HOURS", 24, minimum=1)
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "")  # links in reminder emails sent by the scheduler

    MAIL_SERVER = os.environ.get("MAIL_SERVER", "")
    # SSL from the first byte (port 465) or STARTTLS on a plain connection (587): never both,
    # which Flask-Mail would try (STARTTLS inside SSL) and every email would fail.
    MAIL_USE_SSL = env_bool("MAIL_USE_SSL", False)
    MAIL_USE_TLS = env_bool("MAIL_USE_TLS", not MAIL_USE_SSL)
    MAIL_PORT = env_int("MAIL_PORT", 465 if MAIL_USE_SSL else 587, minimum=1, maximum=65535)
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME")
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD")
    MAIL_DEFAULT_SENDER = os.environ.get("MAIL_DEFAULT_SENDER", "Appointment Desk <desk@example.com>")
    MAIL_MAX_ATTEMPTS = env_int("MAIL_MAX_ATTEMPTS", 8, minimum=1)
    # Seconds an SMTP connect or reply may take before the try fails and is retried later.
    MAIL_TIMEOUT = env_int("MAIL_TIMEOUT", 30, minimum=1, maximum=600)

    BOOTSTRAP_SERVE_LOCAL = True
    BOOTSTRAP_BOOTSWATCH_THEME = None
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    # Behind a reverse proxy: client IPs (rate limits, consent IPs, the audit log) and https come
    # from its X-Forwarded-For / X-Forwarded-Proto. Never set it without one: anybody could then
    # choose the IP we record.
    TRUST_PROXY = env_proxies("TRUST_PROXY")


class DevelopmentConfig(Config):
    DEBUG = True
    DEMO_DATA_ALLOWED = True  # flask crm demo (its logins are public)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
    RUN_SCHEDULER_IN_PROCESS = env_bool("RUN_SCHEDULER_IN_PROCESS", True)


class TestConfig(Config):
    TESTING = True
    DEMO_DATA_ALLOWED = True
    SECRET_KEY = "test-secret-key"
    SQLALCHEMY_DATABASE_URI = os.environ.get("TEST_DATABASE_URL_EFFECTIVE", "sqlite://")
    SESSION_COOKIE_SECURE = False
    WTF_CSRF_ENABLED = False  # tests that check CSRF switch it back on
    RATELIMIT_ENABLED = False  # tests that check limits switch it back on
    RATELIMIT_STORAGE_URI = "memory://"
    AUTO_ASSIGN = False
    GEOCODER = "offline"
    MAIL_SERVER = ""
    MAIL_SUPPRESS_SEND = True
    SCHEDULER_LOCK_FILE = ""
