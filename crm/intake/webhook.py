"""``/webhooks/intake/<slug>``, answered in front of Flask.

A delivery is machine to machine: no cookie session, no CSRF token, no sign-in, no page. Flask's
request context, hooks and response objects cost a delivery more than the whole of ``/healthz``
(docs/intake.md, "Fourteenth round"), so the webhook is a small WSGI app wrapped around Flask's: it
answers its own path and hands every other request to Flask unchanged. ``create_app`` puts it
inside ProxyFix, so ``REMOTE_ADDR`` is the client's address when the app is behind a proxy.

It keeps what the Flask route gave a delivery:

- the body cap (``WEBHOOK_MAX_BYTES``), chunked bodies included;
- the rate limit per source and client IP (``WEBHOOK_RATE_LIMIT``), counted in the store
  ``RATELIMIT_STORAGE_URI`` names with ``limits`` (the library Flask-Limiter counts with), in the
  worker's memory while that store is down, with the ``X-RateLimit-*`` headers;
- the security headers every response carries (``crm.security.baseline_headers``);
- 503 with ``Retry-After`` when the database refuses the delivery, a logged JSON 500 for anything else.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import get_content_length, get_input_stream

from crm.errors import MESSAGES
from crm.security import baseline_headers

PATH_RE = re.compile(r"/webhooks/intake/([^/]+)\Z")
# Slugs that name no active source share one allowance per client IP: made-up slugs would each get
# their own otherwise, and every one of those deliveries is stored.
NO_SOURCE = "(no source)"
STORE_RETRY_SECONDS = 30  # how long a worker counts in memory after the shared store failed
ALLOW = ("Allow", "OPTIONS, POST")

log = logging.getLogger(__name__)

Answer = tuple[int, dict, list[tuple[str, str]]]


class WebhookLimit:
    """The webhook's rate limit, per source slug and client IP, as Flask-Limiter counted it."""

    def __init__(self, config):
        self.config = config
        self._parsed: tuple[str, list[RateLimitItem]] | None = None
        self._store: RateLimiter | None = None
        self._memory: RateLimiter | None = None
        self._store_down_until = 0.0
        # One store per worker, made on first use (after the fork): threads of a gthread worker
        # racing to make it would each count in a store of their own.
        self._making = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.config.get("RATELIMIT_ENABLED", True))

    def _items(self) -> list[RateLimitItem]:
        text = self.config["WEBHOOK_RATE_LIMIT"]
        if self._parsed is None or self._parsed[0] != text:
            self._parsed = (text, sorted(parse_many(text)))
        return self._parsed[1]

    def _strategy(self, storage: Storage) -> RateLimiter:
        return STRATEGIES[self.config.get("RATELIMIT_STRATEGY", "fixed-window")](storage)

    def _counter(self) -> RateLimiter:
        if time.monotonic() < self._store_down_until:
            return self._in_memory()
        if self._store is None:
            with self._making:
                if self._store is None:
                    uri, options = (
                        self.config["RATELIMIT_STORAGE_URI"],
                        self.config.get("RATELIMIT_STORAGE_OPTIONS", {}),
                    )
                    self._store = self._strategy(storage_from_string(uri, **options))
        return self._store

    def _in_memory(self) -> RateLimiter:
        if self._memory is None:
            with self._making:
                if self._memory is None:
                    self._memory = self._strategy(MemoryStorage())
        return self._memory

    def check(self, key: str) -> tuple[bool, list[tuple[str, str]]]:
        """Count this delivery: (allowed, the X-RateLimit-* headers and, when refused, Retry-After)."""
        keys = [k for k in (self.config.get("RATELIMIT_KEY_PREFIX"), key, "webhook") if k]
        try:
            return self._count(self._counter(), keys)
        except Exception:
            if not self.config.get("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"):
                raise
            # A shared store (Redis) that is down must not turn deliveries away: count in memory.
            log.warning("rate limit store unreachable: the webhook limit counts in this worker's memory for a while")
            self._store_down_until = time.monotonic() + STORE_RETRY_SECONDS
            return self._count(self._in_memory(), keys)

    def _count(self, counter: RateLimiter, keys: list[str]) -> tuple[bool, list[tuple[str, str]]]:
        items = self._items()
        shown, allowed = items[0], True
        for item in items:
            if not counter.hit(item, *keys):
                shown, allowed = item, False
                break
        reset_at, remaining = counter.get_window_stats(shown, *keys)
        wait = str(max(int(reset_at - time.time()), 1))
        headers = [
            ("X-RateLimit-Limit", str(shown.amount)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(int(reset_at))),
            ("X-RateLimit-Retry-After", wait),  # on every answer; Retry-After only on a refusal
        ]
        if not allowed:
            headers.append(("Retry-After", wait))
            # Refused deliveries are not stored (docs/intake.md): the log says an integration is throttled.
            log.info("webhook rate limit %s reached for %s", shown, keys[-2])
        return allowed, headers


class WebhookDoor:
    """WSGI middleware: the intake webhook's path here, everything else to ``wsgi_app`` (Flask)."""

    def __init__(self, app, wsgi_app: Callable):
        self.app = app
        self.wsgi_app = wsgi_app
        self.limit = WebhookLimit(app.config)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        found = PATH_RE.match(environ.get("PATH_INFO", ""))
        if found is None:
            return self.wsgi_app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method == "OPTIONS":  # as Flask answers it for a route
            start_response("200 OK", [ALLOW, ("Content-Length", "0"), *baseline_headers(self.app.debug)])
            return [b""]
        if method != "POST":
            code, body, headers = 405, {"error": MESSAGES[405]}, [ALLOW]
        else:
            # As Werkzeug decodes a path: the server gives it as Latin-1 characters of UTF-8 bytes.
            slug = found.group(1).encode("latin-1").decode("utf-8", "replace")[:80]
            with self.app.app_context():
                code, body, headers = self._deliver(slug, environ)
        return self._respond(start_response, code, body, headers, method == "HEAD")

    def _deliver(self, slug: str, environ: dict) -> Answer:
        from crm.extensions import db
        from crm.services import intake

        remote_ip = environ.get("REMOTE_ADDR")
        limit_headers: list[tuple[str, str]] = []
        try:
            if self.limit.enabled:
                allowed, limit_headers = self.limit.check(f"{self._limit_slug(slug)}:{remote_ip}")
                if not allowed:
                    return 429, {"error": MESSAGES[429]}, limit_headers
            cap = self.app.config["WEBHOOK_MAX_BYTES"]
            too_large = (get_content_length(environ) or 0) > cap
            body = None
            if not too_large:
                # Werkzeug's own reading: by Content-Length, or to the end of a chunked body.
                body = get_input_stream(environ).read(cap + 1)
                too_large = len(body) > cap
            outcome = intake.receive_webhook(
                slug,
                None if too_large else body,
                dict(EnvironHeaders(environ)),
                remote_ip=remote_ip,
                too_large=too_large,
            )
        except HTTPException as exc:
            # Werkzeug's own refusals while reading the body: a sender that hung up before sending all
            # of it (ClientDisconnected, a 400). The sender's fault, not ours: answered, not logged.
            db.session.rollback()
            code = exc.code or 400
            return code, {"error": MESSAGES.get(code, exc.description or "Error")}, limit_headers
        except SQLAlchemyError:
            # Nothing could be stored: tell the sender to retry later rather than pretend.
            self.app.logger.exception("intake: could not store a webhook delivery")
            db.session.rollback()
            error = {"error": "temporarily unable to store the delivery; retry later"}
            return 503, error, [*limit_headers, ("Retry-After", "30")]
        except Exception:
            self.app.logger.exception("unhandled error on POST %s", environ.get("PATH_INFO"))
            db.session.rollback()
            return 500, {"error": MESSAGES[500]}, limit_headers
        return outcome.http_status, outcome.json(), limit_headers

    @staticmethod
    def _limit_slug(slug: str) -> str:
        from crm.extensions import db
        from crm.services import intake

        try:
            source = intake.load_source(intake.storable(slug))
        except SQLAlchemyError:
            # The database is down: key by the slug as given; the delivery then gets the 503.
            db.session.rollback()
            return slug
        return slug if source is not None and source.active else NO_SOURCE

    def _respond(self, start_response: Callable, code: int, body: dict, headers: list, head: bool) -> list[bytes]:
        payload = (self.app.json.dumps(body) + "\n").encode()
        start_response(
            f"{code} {HTTPStatus(code).phrase}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                *headers,
                *baseline_headers(self.app.debug),
            ],
        )
        return [b"" if head else payload]
