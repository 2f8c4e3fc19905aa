"""WSGI entry point: ``gunicorn wsgi:app`` / ``flask --app wsgi ...``."""

import os
import sys

from crm import ConfigError, create_app

try:
    app = create_app(os.environ.get("APP_CONFIG", "config.Config"))
except ConfigError as exc:
    # A setting the app cannot run with: its message, not a traceback (README, "Configuration").
    sys.exit(str(exc))
