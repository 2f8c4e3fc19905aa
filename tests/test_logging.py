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
