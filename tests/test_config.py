"""Settings from the environment, and the check that stops a start with a bad one (README,
"Configuration")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import ConfigError, TestConfig, env_bool, env_float, env_int, env_proxies
from crm import create_app

ROOT = Path(__file__).resolve().parent.parent


def settings_in_a_fresh_process(env: dict[str, str], *names: str) -> list[str]:
    """``Config`` reads the environment once, at import: read it in a process of its own."""
    code = f"import config\nfor name in {names!r}: print(repr(getattr(config.Config, name)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_trust_proxy_is_read_from_the_environment():
    assert settings_in_a_fresh_process({"TRUST_PROXY": "true"}, "TRUST_PROXY") == ["1"]
    assert settings_in_a_fresh_process({"TRUST_PROXY": "2"}, "TRUST_PROXY") == ["2"]
    assert settings_in_a_fresh_process({"TRUST_PROXY": ""}, "TRUST_PROXY") == ["0"]


def test_mail_over_ssl_does_not_also_try_starttls():
    names = ("MAIL_USE_SSL", "MAIL_USE_TLS", "MAIL_PORT")
    assert settings_in_a_fresh_process({"MAIL_USE_SSL": "true"}, *names) == ["True", "False", "465"]
    assert settings_in_a_fresh_process({"MAIL_USE_SSL": ""}, *names) == ["False", "True", "587"]
    assert settings_in_a_fresh_process({"MAIL_USE_SSL": "yes", "MAIL_PORT": "2465"}, *names)[2] == "2465"


def test_a_typo_in_a_yes_no_setting_stops_the_start(monkeypatch):
    monkeypatch.setenv("CRM_TEST_FLAG", "ture")
    with pytest.raises(ConfigError, match="CRM_TEST_FLAG='ture'"):
        env_bool("CRM_TEST_FLAG", True)
    for value, expected in (("On", True), ("0", False), ("no", False), ("", True)):
        monkeypatch.setenv("CRM_TEST_FLAG", value)
        assert env_bool("CRM_TEST_FLAG", True) is expected


def test_numbers_and_proxy_counts_name_the_variable(monkeypatch):
    monkeypatch.setenv("CRM_TEST_NUMBER", "15m")
    with pytest.raises(ConfigError, match="CRM_TEST_NUMBER='15m': expected a whole number"):
        env_int("CRM_TEST_NUMBER", 15)
    for value, expected in (("yes", 1), ("off", 0), ("3", 3)):
        monkeypatch.setenv("CRM_TEST_PROXIES", value)
        assert env_proxies("CRM_TEST_PROXIES") == expected
    monkeypatch.setenv("CRM_TEST_PROXIES", "-1")
    with pytest.raises(ConfigError, match="CRM_TEST_PROXIES"):
        env_proxies("CRM_TEST_PROXIES")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"BUSINESS_HOURS": "garbage"}, "BUSINESS_HOURS='garbage'"),
        ({"BUSINESS_HOURS": "8:00-20:00"}, "BUSINESS_HOURS"),
        ({"BUSINESS_DAYS": "weekdays"}, "BUSINESS_DAYS='weekdays'"),
        ({"CALLING_WINDOW": "9am-8pm"}, "CALLING_WINDOW='9am-8pm'"),
        ({"CALLING_DAYS": "xyz"}, "CALLING_DAYS='xyz'"),
        ({"NEXT_ATTEMPT_HOURS": "4h,1d"}, "NEXT_ATTEMPT_HOURS='4h,1d': expected whole hours"),
        ({"NEXT_ATTEMPT_HOURS": "4,0"}, "NEXT_ATTEMPT_HOURS='4,0'"),
        ({"BUSINESS_TIMEZONE": "Mars/Base"}, "BUSINESS_TIMEZONE='Mars/Base'"),
        ({"LOGIN_RATE_LIMIT": "garbage"}, "LOGIN_RATE_LIMIT='garbage'"),
        ({"LOGIN_DAILY_MAX_FAILURES": 3}, "LOGIN_DAILY_MAX_FAILURES=3: must be at least LOGIN_MAX_FAILURES (5)"),
        ({"WEBHOOK_RATE_LIMIT": "600 per fortnight"}, "WEBHOOK_RATE_LIMIT"),
        ({"GEOCODER": "nominatim", "GEOCODER_OPTIONS": "not-json"}, "GEOCODER_OPTIONS must be a JSON object"),
        ({"GEOCODER": "no-such-service"}, "no-such-service"),
        ({"GEOCODER": "nominatim", "GEOCODER_MIN_DELAY": "1s"}, "GEOCODER_MIN_DELAY"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL='verbose'"),
        ({"MAIL_USE_SSL": True, "MAIL_USE_TLS": True}, "MAIL_USE_SSL and MAIL_USE_TLS"),
        ({"RATELIMIT_STORAGE_URI": "foo://cache:1"}, "RATELIMIT_STORAGE_URI: unsupported scheme 'foo'"),
        ({"RATELIMIT_STORAGE_URI": "async+redis://cache:6379"}, "unsupported scheme 'async+redis'"),
        ({"RATELIMIT_STORAGE_URI": "localhost:6379"}, "RATELIMIT_STORAGE_URI: unsupported scheme"),
    ],
)
def test_a_bad_setting_stops_the_start_and_names_the_variable(make_app, settings, named):
    with pytest.raises(ConfigError, match="Configuration error") as refused:
        make_app(**settings)
    assert named in str(refused.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("not a url", "DATABASE_URL: not a database URL; expected sqlite:///"),
        (
            "postgresql+psycopg://desk:s3cret@db:fivefour/desk",
            "DATABASE_URL: not a database URL (is the port a number?)",
        ),
        ("oracle+nosuchdriver://desk:s3cret@db/desk", "DATABASE_URL: unknown kind of database 'oracle+nosuchdriver'"),
        ("nosuchdb://desk:s3cret@db/desk", "DATABASE_URL: unknown kind of database 'nosuchdb'"),
        (
            "postgresql+asyncpg://desk:s3cret@db/desk",
            "DATABASE_URL: the driver for 'postgresql+asyncpg' is not installed",
        ),
    ],
)
def test_a_bad_database_url_stops_the_start_without_quoting_the_password(url, said):
    with pytest.raises(ConfigError) as refused:
        create_app(TestConfig, SQLALCHEMY_DATABASE_URI=url)
    assert said in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_an_unknown_app_config_names_the_variable():
    for name in ("config.ProductionConfig", "settings.Config"):
        with pytest.raises(ConfigError, match=rf"APP_CONFIG='{name}': no such configuration; expected config.Config"):
            create_app(name)


def test_numbers_outside_their_range_stop_the_start(monkeypatch):
    monkeypatch.setenv("CRM_TEST_NUMBER", "-5")
    with pytest.raises(ConfigError, match="CRM_TEST_NUMBER='-5': expected at least 1"):
        env_int("CRM_TEST_NUMBER", 15, minimum=1)
    assert env_int("CRM_TEST_NUMBER", 15) == -5  # no range given: any whole number
    monkeypatch.setenv("CRM_TEST_NUMBER", "70000")
    with pytest.raises(ConfigError, match="expected at most 65535"):
        env_int("CRM_TEST_NUMBER", 587, minimum=1, maximum=65535)
    for bad in ("5s", "nan", "inf"):
        monkeypatch.setenv("CRM_TEST_NUMBER", bad)
        with pytest.raises(ConfigError, match=f"CRM_TEST_NUMBER='{bad}': expected a number such as 5 or 2.5"):
            env_float("CRM_TEST_NUMBER", 5, minimum=0.1)
    monkeypatch.setenv("CRM_TEST_NUMBER", "0")
    with pytest.raises(ConfigError, match="expected at least 0.1"):
        env_float("CRM_TEST_NUMBER", 5, minimum=0.1)
    monkeypatch.setenv("CRM_TEST_NUMBER", "2.5")
    assert env_float("CRM_TEST_NUMBER", 5, minimum=0.1) == 2.5


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"DATABASE_URL": "desk-db"}, "DATABASE_URL: not a database URL"),
        ({"APP_CONFIG": "config.Production"}, "APP_CONFIG='config.Production': no such configuration"),
        ({"GEOCODER_TIMEOUT": "5s"}, "GEOCODER_TIMEOUT='5s': expected a number"),
        ({"GEOCODER_TIMEOUT": "-1"}, "GEOCODER_TIMEOUT='-1': expected at least 0.1"),
        ({"RATELIMIT_STORAGE_URI": "reddis://cache:6379/0"}, "RATELIMIT_STORAGE_URI: unsupported scheme 'reddis'"),
        ({"SLA_MINUTES": "-15"}, "SLA_MINUTES='-15': expected at least 1"),
        ({"GEOCODE_RETRY_BATCH": "0"}, "GEOCODE_RETRY_BATCH='0': expected at least 1"),
        ({"MAIL_PORT": "-587"}, "MAIL_PORT='-587': expected at least 1"),
    ],
)
def test_a_flask_command_with_a_bad_setting_says_so_in_a_line_without_a_traceback(env, said, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "crm", "--help"],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "x", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, done.stderr  # wsgi.APP_LOAD_ERROR: gunicorn stops instead of retrying
    assert said in done.stderr and "Traceback" not in done.stderr
    assert not done.stdout


def test_every_problem_is_listed_at_once(make_app):
    with pytest.raises(ConfigError) as refused:
        make_app(BUSINESS_TIMEZONE="Mars/Base", LOG_LEVEL="loud")
    assert "BUSINESS_TIMEZONE" in str(refused.value) and "LOG_LEVEL" in str(refused.value)


def test_empty_windows_and_time_zone_mean_the_defaults(make_app):
    app = make_app(BUSINESS_HOURS="", BUSINESS_DAYS="", CALLING_WINDOW="", BUSINESS_TIMEZONE="")
    assert app.test_client().get("/healthz").status_code == 200


def test_the_local_secret_key_is_made_once_and_shared(monkeypatch, tmp_path):
    import config

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setattr(config, "INSTANCE_DIR", tmp_path)
    first = config._secret_key()
    assert len(first) == 64 and config._secret_key() == first  # a second worker reads the same key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        config._secret_key()


def test_the_demo_is_refused_outside_development_unless_forced(make_app, db):
    production_like = make_app(DEMO_DATA_ALLOWED=False)  # as config.Config
    runner = production_like.test_cli_runner()
    with production_like.app_context():  # pytest-flask keeps the session app's context pushed
        refused = runner.invoke(args=["crm", "demo", "--physicians", "2", "--leads", "1"])
        forced = runner.invoke(args=["crm", "demo", "--physicians", "2", "--leads", "1", "--force"])
    assert refused.exit_code == 1 and "the demo's logins and webhook secret are public" in refused.output
    assert forced.exit_code == 0 and "Demo data: 4 users, 2 physicians, 1 leads." in forced.output


def test_production_session_cookie_defaults_follow_spec_12():
    """Secure (outside debug), HttpOnly, SameSite=Lax, 15 idle minutes, when nothing is set."""
    names = ("SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "IDLE_TIMEOUT")
    env = {"SESSION_COOKIE_SECURE": "", "IDLE_TIMEOUT_MINUTES": ""}
    assert settings_in_a_fresh_process(env, *names) == [
        "True",
        "True",
        "'Lax'",
        "datetime.timedelta(seconds=900)",
    ]
