"""WSGI entry point: ``gunicorn wsgi:app`` / ``flask --app wsgi ...``."""

import os
import sys

from crm import ConfigError, create_app

# gunicorn stops (rather than booting workers again and again) when one exits with this code.
APP_LOAD_ERROR = 4

try:
    app = create_app(os.environ.get("APP_CONFIG", "config.Config"))
except ConfigError as exc:
    # A setting the app cannot run with: its message, not a traceback (README, "Configuration").
    print(exc, file=sys.stderr)
    sys.exit(APP_LOAD_ERROR)
