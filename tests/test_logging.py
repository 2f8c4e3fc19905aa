"""No patient contact details in logs (SPEC 12)."""

from __future__ import annotations

import logging

from crm.logging_setup import mask_email, mask_phone, scrub


def test_scrub_masks_emails_and_phone_numbers_but_not_addresses_or_dates():
    assert scrub("from jane.doe@example.com") == "from j***@example.com"
    assert "5550100" not in scrub("call +13055550100 or (305) 555-0100 or 305.555.0100")
    assert scrub("Running on http://127.0.0.1:5000") == "Running on http://127.0.0.1:5000"
    assert scrub("at 2026-11-24 19:27:32") == "at 2026-11-24 19:27:32"


def test_scrub_masks_query_string_values_an_access_log_would_show():
    line = '127.0.0.1 - - "GET /queue?q=Zelda+Quixote&view=all&page=2 HTTP/1.1" 200 -'
    assert scrub(line) == '127.0.0.1 - - "GET /queue?q=***&view=all&page=2 HTTP/1.1" 200 -'
    for phone in ("(305)+555-0199", "305+555+0199", "%2B13055550199"):
        assert "0199" not in scrub(f'"GET /queue?q={phone} HTTP/1.1" 200'), phone
    assert scrub('"GET /login?next=/leads/7 HTTP/1.1" 302') == '"GET /login?next=*** HTTP/1.1" 302'
    assert scrub("GET /healthz HTTP/1.1") == "GET /healthz HTTP/1.1"


def test_masks():
    assert mask_email("jane@example.com") == "j***@example.com"
    assert mask_phone("+13055550100") == "***00"


def test_every_log_record_is_scrubbed(app, caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("crm.anything").info("patient %s phoned from %s", "canary@example.com", "+13055550199")
    assert "canary@example.com" not in caplog.text
    assert "3055550199" not in caplog.text
    assert "c***@example.com" in caplog.text


def test_a_database_error_quoting_the_row_is_logged_without_it(app, db, caplog):
    """PostgreSQL's DETAIL quotes a failing row's values: a logged traceback and the stored
    error text withhold it (SQLite's messages name the column only)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError

    from crm.logging_setup import error_text
    from crm.models import Patient

    canary = "Vex" + "marten"  # built here, so the traceback's source line does not show it
    try:
        db.session.execute(sa.insert(Patient).values(first_name=None, last_name=canary, email="q@example.org"))
    except IntegrityError as exc:
        caught = exc
        with caplog.at_level(logging.INFO):
            logging.getLogger("crm.anything").exception("could not store %s", "it")
    db.session.rollback()
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Traceback" in logged and "first_name" in logged and canary not in logged
    assert "first_name" in error_text(caught) and canary not in error_text(caught)
    if db.engine.dialect.name == "postgresql":
        assert canary in str(caught)  # what would have been written without the withholding
        assert "detail withheld" in logged and "detail withheld" in error_text(caught)


def test_the_scheduler_does_not_log_every_run_of_every_job(app, caplog):
    """enrich_new runs every 5 s: APScheduler's own "Running job" / "executed successfully" lines
    would bury the log. Our run_job logs runs that did something; a misfire warning still shows."""
    import logging
    import threading

    from apscheduler.schedulers.background import BackgroundScheduler

    ran = threading.Event()
    scheduler = BackgroundScheduler()
    scheduler.add_job(ran.set, id="tick")
    with caplog.at_level(logging.INFO):  # the root logger at INFO, as `make run` and production log
        scheduler.start()
        assert ran.wait(5)
        scheduler.shutdown(wait=True)
    executor_lines = [r for r in caplog.records if r.name.startswith("apscheduler.executors")]
    assert executor_lines == []
    assert logging.getLogger("apscheduler.executors").isEnabledFor(logging.WARNING)
