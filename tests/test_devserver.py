"""``make run``'s server process: stopping it stops the scheduler it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a request thread that ended meanwhile
            continue
    return children


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.split(")")[1].split()[0] != "Z"  # a zombie has exited


def _migrated_dev_env(tmp_path) -> dict:
    """The environment of a dev server on a migrated SQLite database of its own."""
    env = dict(
        os.environ,
        APP_CONFIG="config.DevelopmentConfig",
        DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite3'}",
        RUN_SCHEDULER_IN_PROCESS="false",
        LOG_LEVEL="WARNING",
    )
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    return env


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_sigterm_stops_the_server_and_its_scheduler(tmp_path):
    env = _migrated_dev_env(tmp_path)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "crm.devserver", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scheduler: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the dev server did not come up"
                time.sleep(0.2)
        scheduler += _children(server.pid)
        assert len(scheduler) == 1
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert not _alive(scheduler[0]), "the scheduler outlived the server"
    finally:
        if server.poll() is None:
            scheduler += [pid for pid in _children(server.pid) if pid not in scheduler]
            server.terminate()  # SIGTERM: the server stops its scheduler itself
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        for pid in scheduler:  # never leave one running, whatever the outcome
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_the_server_says_so_when_its_scheduler_dies(tmp_path):
    """The pages went on answering while nothing was matched, assigned or emailed, without a word."""
    env = _migrated_dev_env(tmp_path)
    port = _free_port()
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "crm.devserver", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while not _children(server.pid):
            assert time.monotonic() < deadline, "no scheduler started"
            time.sleep(0.2)
        (scheduler,) = _children(server.pid)
        os.kill(scheduler, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while "The scheduler stopped" not in errors.read_text():
            assert time.monotonic() < deadline, errors.read_text()[-2000:]
            time.sleep(0.2)
        assert "exit code -9" in errors.read_text() and server.poll() is None  # the server goes on
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert errors.read_text().count("The scheduler stopped") == 1  # not again when the server stops


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_both_without_a_warning_about_the_scheduler(tmp_path):
    """Ctrl-C reaches the server and its scheduler at once; the scheduler ending first is no failure."""
    env = _migrated_dev_env(tmp_path)
    port = _free_port()
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "crm.devserver", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group, as a terminal's foreground job
            # ... where Ctrl-C is not ignored: a test run started in the background by a shell
            # without job control ignores SIGINT, and its children would inherit that.
            preexec_fn=_ctrl_c_as_in_a_terminal,
        )
    try:
        deadline = time.monotonic() + 60
        while not _children(server.pid):
            assert time.monotonic() < deadline, "no scheduler started"
            time.sleep(0.2)
        time.sleep(3)  # both up and running their signal handlers
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=45)
        except subprocess.TimeoutExpired:
            # Say what the two processes were doing.
            children, said = _children(server.pid), errors.read_text()[-3000:]
            pytest.fail(f"still running 45 s after Ctrl-C; children {children}; stderr:\n{said}")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert "The scheduler stopped" not in errors.read_text(), errors.read_text()[-2000:]
