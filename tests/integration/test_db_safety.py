"""The driver seam (quiesce/server/db.py) against servers that misbehave, on both drivers.

Every wait is bounded: connect + greeting + authentication within the connect timeout
(a socket that accepts and never greets, one that greets a byte a second, a SIGSTOPped
mariadbd), each statement within set_timeout(), and abandon() never waits. Credentials go
only to a socket root or the server's account runs: a fake server planted by `nobody` in
a world-writable sticky directory (as /tmp is) gets nothing, and no
server gets the password in clear text unless allow_cleartext; the same for a loopback
port another user listens on.
"""

import contextlib
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from quiesce.base.config import Target
from quiesce.base.errors import ConnectError
from quiesce.server import db

from . import fakeserver
from .mariadb import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SECRET = "Cl34r-Text-Secret"
MARGIN = 2.0      # seconds allowed beyond a timeout on a busy machine


def _target(socket_path: str, password: str = "") -> Target:
    return Target(name="default", socket=socket_path, host=None, port=3306, user="root", password=password,
                  position_file=None)


def _timed(call, limit: float):
    """Run call() on a thread; (seconds taken, result or exception). Fails if still running at limit."""
    outcome = {}

    def run():
        began = time.monotonic()
        try:
            outcome["value"] = call()
        except Exception as exc:
            outcome["value"] = exc
        outcome["took"] = time.monotonic() - began
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        pytest.fail("still waiting after %.1f s" % limit)
    return outcome["took"], outcome["value"]


@contextlib.contextmanager
def _stopped(server):
    """SIGSTOP the server and wait until every thread of it has stopped; SIGCONT afterwards."""
    pid = server.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = []
            for task in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/stat" % (pid, task)) as handle:
                    states.append(handle.read().rsplit(")", 1)[1].split()[0])
            if all(s in ("T", "t") for s in states):
                break
            time.sleep(0.01)
        else:
            pytest.fail("mariadbd did not stop within 10 s")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def fake(tmp_path):
    """fake(mode, plugin=...) -> (socket path, record path) of a fake server run by root."""
    servers = []

    def start(mode: str, plugin: str = "mysql_clear_password"):
        path = str(tmp_path / ("fake%d.sock" % len(servers)))
        record = path + ".received"
        open(record, "wb").close()
        servers.append(fakeserver.start_thread(path, mode, record, plugin))
        return path, record
    yield start
    for server in servers:
        server.close()


def _received(record: str) -> bytes:
    with open(record, "rb") as handle:
        return handle.read()


# ------------------------------------------------------------------ bounded waits
@pytest.mark.parametrize("mode", ("silent", "dribble"))
def test_connect_is_bounded_when_the_server_never_completes_a_greeting(driver, fake, mode):
    path, _ = fake(mode)
    took, error = _timed(lambda: db.connect(_target(path), driver, 1.5), 1.5 + 30)
    assert isinstance(error, db.DbError), error
    assert took < 1.5 + MARGIN, "connect took %.1f s with a 1.5 s connect timeout" % took
    assert db.is_lost(error) and "connect-timeout" in error.message


def test_statement_is_bounded_by_set_timeout(mariadb, driver):
    conn = db.connect(_target(mariadb.socket), driver, 5.0)
    try:
        conn.set_timeout(1e12)      # beyond what sockets take: capped, not a crash
        assert conn.query("SELECT 1 AS one") == [{"one": 1}]
        conn.set_timeout(1.0)
        took, error = _timed(lambda: conn.query("SELECT SLEEP(6)"), 30)
        assert isinstance(error, db.DbError), "SELECT SLEEP(6) returned %r" % (error,)
        assert took < 1.0 + MARGIN, "SELECT SLEEP(6) with a 1 s timeout took %.1f s" % took
        assert db.is_lost(error)
        _, again = _timed(lambda: conn.query("SELECT 1"), 10)
        assert isinstance(again, db.DbError) and db.is_lost(again)
    finally:
        conn.close()


def test_frozen_server_bounds_statements_and_connects_and_abandon_does_not_wait(mariadb, driver):
    target = _target(mariadb.socket)
    first = db.connect(target, driver, 5.0)
    second = db.connect(target, driver, 5.0)
    try:
        first.set_timeout(1.0)
        with _stopped(mariadb):
            took, error = _timed(lambda: first.query("SELECT 1"), 30)
            assert isinstance(error, db.DbError) and db.is_lost(error), error
            assert took < 1.0 + MARGIN, "a statement on a frozen server took %.1f s" % took
            took, error = _timed(lambda: db.connect(target, driver, 1.5), 30)
            assert isinstance(error, db.DbError) and db.is_lost(error), error
            assert took < 1.5 + MARGIN, "connect to a frozen server took %.1f s" % took
            # The server stays stopped until this block ends: an abandon() that waited for it
            # would hit _timed's limit, far beyond MARGIN.
            took, _ = _timed(lambda: (second.abandon(), second.close()), 10)
            assert took < MARGIN, "abandon() waited %.1f s for a frozen server" % took
        gone = time.monotonic() + 10
        while second.thread_id in mariadb.connection_ids() and time.monotonic() < gone:
            time.sleep(0.05)
        assert second.thread_id not in mariadb.connection_ids(), "the abandoned session outlived the freeze"
        _, after = _timed(lambda: second.query("SELECT 1"), 5)
        assert isinstance(after, db.DbError) and db.is_lost(after)
    finally:
        first.close()
        second.close()


# ------------------------------------------------------------------ clear-text authentication
@pytest.mark.parametrize("plugin", ("mysql_clear_password", "dialog"))
def test_clear_text_auth_is_refused_by_default(driver, fake, plugin):
    path, record = fake("switch", plugin)
    took, error = _timed(lambda: db.connect(_target(path, SECRET), driver, 5.0), 30)
    assert isinstance(error, (ConnectError, db.DbError)), error
    assert SECRET.encode() not in _received(record), "the password reached the server in clear text"
    assert SECRET not in str(error)
    if plugin == "mysql_clear_password":
        assert isinstance(error, ConnectError) and "allow-cleartext-auth" in str(error)
        assert "\n" not in str(error)


def test_allow_cleartext_lets_pymysql_send_the_password(fake):
    # The other side of the test above: the fake server does capture a clear-text password.
    path, record = fake("switch")
    with pytest.raises(db.DbError, match="Access denied"):
        db.connect(_target(path, SECRET), "pymysql", 5.0, allow_cleartext=True)
    assert SECRET.encode() in _received(record)


def test_connector_sends_clear_text_only_over_tls_even_when_allowed(fake):
    path, record = fake("switch")
    with pytest.raises(ConnectError, match="only over TLS"):
        db.connect(_target(path, SECRET), "mysql-connector", 5.0, allow_cleartext=True)
    assert SECRET.encode() not in _received(record)


# ------------------------------------------------------------------ planted sockets
def test_socket_planted_by_an_unprivileged_user_gets_no_credentials(driver, tmp_path):
    assert os.path.exists("/usr/bin/setpriv"), "/usr/bin/setpriv missing: install util-linux (make deps)"
    # A directory like /tmp (world-writable, sticky), private to this test.
    shared = tempfile.mkdtemp(prefix="quiesce-planted-", dir="/tmp")
    try:
        os.chmod(shared, 0o1777)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": "%s:%s/.deps" % (REPO, REPO)}
        done = subprocess.run([sys.executable, os.path.join(HERE, "planted.py"), shared, driver, SECRET],
                              env=env, cwd="/", capture_output=True, timeout=120)
    finally:
        shutil.rmtree(shared)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result = json.loads(done.stdout)
    socket_path = os.path.join(shared, "mysql.sock")
    assert result["owner"] == "nobody"
    # The socket file is nobody's: refused before connecting, by db.connect and by freeze.
    assert result["planted"].startswith("ConnectError: socket %s is owned by nobody" % socket_path), result
    assert result["freeze"]["rc"] == 3, result["freeze"]
    assert socket_path in result["freeze"]["stderr"] and "nobody" in result["freeze"]["stderr"]
    # Root chowned the file: the listener, still nobody's, is refused before anything is sent.
    assert result["chowned"].startswith("ConnectError: the server on socket %s runs as nobody" % socket_path)
    assert result["received_bytes"] == 0 and not result["password_received"]
    assert SECRET not in json.dumps(result)


def test_loopback_port_served_by_an_unprivileged_user_gets_no_credentials(driver):
    # While the server is down, any user can listen on its port.
    port = free_port()
    server = fakeserver.start_as("nobody", "--port", str(port), "--mode", "switch", "--record", "-")
    try:
        target = Target(name="default", socket=None, host="127.0.0.1", port=port, user="root", password=SECRET,
                        position_file=None)
        with pytest.raises(ConnectError) as caught:
            db.connect(target, driver, 5.0, allow_cleartext=True)
    finally:
        server.kill()
        received = server.communicate(timeout=10)[0]
    assert "port %d on 127.0.0.1" % port in str(caught.value) and "nobody" in str(caught.value)
    assert received == b""
