"""Flask-Mail with a socket timeout on its SMTP connection.

Flask-Mail 0.10 opens ``smtplib.SMTP(server, port)`` with no timeout, so a server that accepts the
connection and then stalls would hold the ``outbox`` job (one run at a time) until the operating
system gave up on the socket. ``MAIL_TIMEOUT`` seconds bound every connect, greeting and reply; a try
that runs out fails like any other SMTP error and the row is retried with backoff.
"""

from __future__ import annotations

import smtplib

from flask import current_app
from flask_mail import Connection, Mail

DEFAULT_TIMEOUT_SECONDS = 30


class TimedConnection(Connection):
    def __init__(self, state, timeout: float) -> None:
        super().__init__(state)
        self.timeout = timeout

    def configure_host(self) -> smtplib.SMTP:
        # The library's own steps, with the timeout it has no setting for.
        smtp_class = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = smtp_class(self.mail.server, self.mail.port, timeout=self.timeout)
        host.set_debuglevel(int(self.mail.debug))
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


class TimedMail(Mail):
    def connect(self) -> TimedConnection:
        app = getattr(self, "app", None) or current_app
        timeout = app.config.get("MAIL_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)
        try:
            return TimedConnection(app.extensions["mail"], timeout)
        except KeyError as err:
            raise RuntimeError("the application was not set up with Flask-Mail") from err
