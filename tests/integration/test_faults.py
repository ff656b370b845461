"""Faults around a freeze: the thaw that never comes, a holder or its session that dies,
the server that dies, bad credentials, an unreachable server, and statements that would
make the lock stall the server. Each test ends with no holder and nothing locked.
The faults that involve the server run on every server kind (and every lock it offers)."""

import os
import re
import signal
import subprocess
import threading
import time

import pymysql
import pytest

from . import servers
from .checks import (assert_clean, assert_frozen, assert_no_holder, assert_one_line,
                     assert_writable, wait_writable)
from .mariadb import free_port
from .runner import wait_for

# Commits acknowledged this soon after freeze returned may have been committed before the
# lock and recorded late by a descheduled writer thread; the deadline test only reads the
# first commit after it, which the lock holds back for lock-timeout (2 s), far beyond this.
GRACE = 0.1
HANG = 10.0              # seconds beyond a freeze's own waits that mean it hung


def _server_processes():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as handle:
                    if handle.read().strip() in ("mariadbd", "mysqld"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


# ------------------------------------------------------------------ the thaw never comes

@pytest.mark.flavours()
def test_lock_timeout_releases_at_the_deadline_and_thaw_says_expired(mariadb, quiesce_env, writers, driver):
    env = quiesce_env
    env.write_config(lock_timeout=2, acquire_timeout=1)
    load = writers(engines=("InnoDB", "MyISAM"))
    load.wait_for_progress(10)
    t_freeze = time.monotonic()
    result = env.run("freeze")
    t_frozen = time.monotonic()
    assert result.rc == 0, result
    load.wait_for_progress(3, timeout=15)
    resumed = min(c.acked for c in load.commits_acked_between(t_frozen + GRACE, float("inf")))
    assert resumed >= t_freeze + 2.0 - 0.05, "writes resumed %.2f s after freeze began, before lock-timeout=2" % (
        resumed - t_freeze)
    # Late by a second at most: the failure this catches is a lock held until thaw, or the
    # holder's next deadline, both many seconds on.
    assert resumed <= t_frozen + 2.0 + 1.0, "writes resumed only %.2f s after freeze returned" % (
        resumed - t_frozen)
    assert_no_holder(env, timeout=10)
    load.stop()

    thaw = env.run("thaw")
    assert thaw.rc == 6, thaw
    line = assert_one_line(thaw)
    assert "expired" in line.lower(), line
    last = env.status()["last_result"]
    assert last["outcome"] == "expired", last
    # The loss has been reported once; a second thaw has nothing to do.
    again = env.run("thaw")
    assert again.rc == 0, again
    assert_clean(env, mariadb)


# ------------------------------------------------------------------ the holder dies

@pytest.mark.flavours()
def test_holder_sigkilled_while_frozen_thaw_exits_6(mariadb, quiesce_env, driver):
    env = quiesce_env
    assert env.run("freeze").rc == 0
    pid = env.status()["holder_pid"]
    assert pid in env.holder_pids()
    assert_frozen(mariadb)
    os.kill(pid, signal.SIGKILL)
    wait_writable(mariadb, 10)          # the server ends the lock with the session
    # Until the snapshot's thaw has heard it, status fails too (a monitor sees it).
    assert env.status(rc=6)["holder_died"] is True
    thaw = env.run("thaw")
    assert thaw.rc == 6, thaw
    assert_one_line(thaw)
    assert env.status()["last_result"]["outcome"] == "lost"
    assert_clean(env, mariadb)


@pytest.mark.parametrize("server_flavour, lock", servers.with_locks(), indirect=["server_flavour"])
def test_holder_session_killed_server_side_thaw_exits_6(mariadb, quiesce_env, driver, lock):
    env = quiesce_env
    env.write_config(lock_method=lock)
    before = set(mariadb.connection_ids())
    assert env.run("freeze").rc == 0
    holder_sessions = set(mariadb.connection_ids()) - before
    assert holder_sessions, "no new session in the process list while frozen"
    assert_frozen(mariadb)
    for conn_id in holder_sessions:
        mariadb.sql("KILL %d" % conn_id)
    wait_writable(mariadb, 10)
    thaw = env.run("thaw")
    assert thaw.rc == 6, thaw
    line = assert_one_line(thaw)
    assert "lost" in line.lower() or "killed" in line.lower(), line
    assert env.status()["last_result"]["outcome"] == "lost"
    assert_clean(env, mariadb)


# ------------------------------------------------------------------ the server dies

@pytest.mark.flavours()
@pytest.mark.parametrize("after_kill", ["stays-down", "restarted"])
def test_server_killed_while_frozen_thaw_exits_6(mariadb, quiesce_env, driver, after_kill):
    env = quiesce_env
    assert env.run("freeze").rc == 0
    assert_frozen(mariadb)
    mariadb.kill()
    if after_kill == "restarted":
        mariadb.start()                 # a fresh server holds no lock: still a loss
        assert_writable(mariadb)
    thaw = env.run("thaw")
    assert thaw.rc == 6, thaw
    assert_one_line(thaw)
    assert_no_holder(env)
    if not mariadb.running:
        mariadb.start()
    assert_clean(env, mariadb)


# ------------------------------------------------------------------ credentials and privileges

BACKUP_GRANTS = {
    "mariadb": ("RELOAD", "LOCK TABLES", "PROCESS", "BINLOG MONITOR", "CONNECTION ADMIN", "SLAVE MONITOR"),
    "mysql": ("RELOAD", "LOCK TABLES", "PROCESS", "REPLICATION CLIENT", "CONNECTION_ADMIN"),
}


@pytest.mark.flavours()
def test_wrong_password_exits_3_quickly_and_locks_nothing(mariadb, quiesce_env, driver):
    env = quiesce_env
    mariadb.create_user("qbackup", "right-password", grants=BACKUP_GRANTS[mariadb.flavour])
    env.write_config(user="qbackup", password="wrong-password")
    assert os.stat(env.conf).st_mode & 0o777 == 0o600
    result = env.run("freeze")
    assert result.rc == 3, result
    # Quickly: a refused login is one round trip (well under a second with the interpreter's
    # start); a retry loop, or a wait for connect-timeout (5 s) on top of that start, crosses this.
    assert result.elapsed < 5, result
    line = assert_one_line(result)
    assert "wrong-password" not in line
    assert_clean(env, mariadb)
    assert not os.path.exists(env.position_file)
    # The same account with its password works: the refusal was about the password.
    env.write_config(password="right-password")
    assert env.run("freeze").rc == 0
    assert_frozen(mariadb)
    assert env.run("thaw").rc == 0
    assert_clean(env, mariadb)


@pytest.mark.parametrize("server_flavour, lock", servers.with_locks(), indirect=["server_flavour"])
def test_account_without_reload_exits_4_and_locks_nothing(mariadb, quiesce_env, driver, lock):
    env = quiesce_env
    mariadb.create_user("qweak", "pw", grants=[g for g in BACKUP_GRANTS[mariadb.flavour] if g != "RELOAD"])
    env.write_config(user="qweak", password="pw", lock_method=lock)
    result = env.run("freeze")
    assert result.rc == 4, result
    line = assert_one_line(result)
    assert "RELOAD" in line, line
    assert_clean(env, mariadb)


def test_password_in_a_readable_config_file_is_refused(mariadb, quiesce_env):
    env = quiesce_env
    env.write_config(password="secret")
    os.chmod(env.conf, 0o644)
    result = env.run("freeze")
    assert result.rc == 2, result
    assert_one_line(result)
    os.chmod(env.conf, 0o600)
    assert_clean(env, mariadb)


@pytest.mark.parametrize("problem", ["world-writable", "symlink"])
def test_unsafe_runtime_dir_is_refused(mariadb, quiesce_env, problem):
    env = quiesce_env
    if problem == "world-writable":
        os.chmod(env.runtime_dir, 0o777)
    else:
        real = env.runtime_dir + ".real"
        os.rename(env.runtime_dir, real)
        os.symlink(real, env.runtime_dir)
    result = env.run("freeze")
    assert result.rc == 2, result
    assert_one_line(result)
    assert_no_holder(env)
    assert_writable(mariadb)


# ------------------------------------------------------------------ the server cannot be reached

def test_missing_socket_while_a_server_process_exists_exits_3(mariadb, quiesce_env, driver):
    """The contract's 'not running' (exit 0) needs no mysqld/mariadbd process at all; this
    test's own server is one, so a socket path where nothing listens is a connect error."""
    env = quiesce_env
    assert mariadb.pid in _server_processes()
    missing = os.path.join(env.root, "no-such.sock")
    env.write_config(socket=missing)
    result = env.run("freeze")
    assert result.rc == 3, result
    assert result.elapsed < 10, result
    line = assert_one_line(result)
    assert missing in line, line
    assert not os.path.exists(env.position_file)
    assert_no_holder(env)
    assert env.run("thaw").rc == 0
    assert_clean(env, mariadb)


def test_tcp_port_with_nothing_listening_exits_3(mariadb, quiesce_env, driver):
    env = quiesce_env
    mariadb.create_user("qtcp", "pw", grants=BACKUP_GRANTS[mariadb.flavour], host="127.0.0.1")
    env.write_config(socket=None, host="127.0.0.1", port=free_port(), user="qtcp", password="pw")
    result = env.run("freeze")
    assert result.rc == 3, result
    assert result.elapsed < 10, result
    assert_one_line(result)
    assert_no_holder(env)
    # And over TCP to the real port it works.
    env.write_config(port=mariadb.port)
    assert env.run("freeze").rc == 0
    assert_frozen(mariadb)
    assert env.run("thaw").rc == 0
    assert_clean(env, mariadb)


def _private_pid_namespace():
    """A command prefix that runs in a new PID namespace with its own /proc, where no other
    server process is visible; None if this machine does not allow it."""
    unshare = "/usr/bin/unshare"
    if os.geteuid() != 0 or not os.path.exists(unshare):
        return None
    prefixes = [[unshare, "--pid", "--fork", "--mount-proc", "--kill-child"]]
    # In a chroot "/" is no mount point, so unshare cannot make it private; leaving the
    # propagation as it is only mounts the new /proc in the new namespace where no mount
    # here propagates anywhere.
    if not _any_shared_mount():
        prefixes.append([unshare, "--pid", "--fork", "--mount-proc", "--propagation", "unchanged", "--kill-child"])
    for prefix in prefixes:
        try:
            probe = subprocess.run(prefix + ["/bin/sh", "-c", "ls /proc"], stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix
    return None


def _any_shared_mount():
    try:
        with open("/proc/self/mountinfo") as handle:
            return any(" shared:" in line.split(" - ")[0] for line in handle)
    except OSError:
        return True


@pytest.mark.parametrize("socket_file", ["stale", "absent"])
def test_server_not_running_freeze_succeeds_with_nothing_to_do(mariadb, quiesce_env, socket_file):
    """Exit 0 'not running' needs no mysqld/mariadbd process at all. Other servers may run
    on a developer's machine, so the command runs in a PID namespace of its own (where it
    sees only itself) when the machine allows; else the test needs a machine without them."""
    env = quiesce_env
    mariadb.kill()                       # SIGKILL leaves the socket file behind: "stale"
    if socket_file == "absent" and os.path.exists(mariadb.socket):
        os.unlink(mariadb.socket)
    assert os.path.exists(mariadb.socket) == (socket_file == "stale")
    prefix = _private_pid_namespace()
    if prefix is None and _server_processes():
        pytest.skip("other mysqld/mariadbd processes run on this machine (%s) and no PID namespace "
                    "can hide them: the contract's 'no server process' case cannot be staged"
                    % _server_processes())
    result = env.run("freeze", prefix=prefix or ())
    assert result.rc == 0, result
    line = assert_one_line(result)
    assert re.search(r"not running|server is running|nothing to quiesce", line.lower()), line
    assert_no_holder(env)
    assert env.status()["frozen"] is False
    assert env.run("thaw").rc == 0


# ------------------------------------------------------------------ long statements

class LongStatement:
    """A statement that runs for `seconds` on its own connection, in a thread."""

    def __init__(self, server, sql: str):
        self.server = server
        self.sql = sql
        self.conn = server.connect(database="quiesce_probe", read_timeout=120)
        self.id = self.conn.thread_id()
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            with self.conn.cursor() as cur:
                cur.execute(self.sql)
                cur.fetchall()
        except pymysql.MySQLError as exc:
            self.error = exc
        finally:
            self.done.set()

    def running_for(self) -> float:
        row = self.server.connection_ids().get(self.id)
        return float(row["TIME_MS"]) / 1000.0 if row and row["INFO"] else 0.0

    def stop(self):
        if not self.done.is_set():
            try:
                self.server.sql("KILL QUERY %d" % self.id)
            except pymysql.MySQLError:
                pass
        self.done.wait(10)
        self.conn.close()


@pytest.fixture
def long_table(mariadb):
    mariadb.sql("CREATE TABLE quiesce_probe.long_myisam (a INT) ENGINE=MyISAM")
    mariadb.sql("INSERT INTO quiesce_probe.long_myisam VALUES (1)")
    started = []

    def start(sql):
        statement = LongStatement(mariadb, sql)
        started.append(statement)
        return statement
    yield start
    for statement in started:
        statement.stop()


LONG_SQL = {
    "select": "SELECT SLEEP(30) FROM long_myisam",
    "update": "UPDATE long_myisam SET a = a + SLEEP(30)",
}


def _counts_as_long(flavour: str, query_type: str, kind: str) -> bool:
    """Does a running statement of this kind count with this long-query-type?

    auto means: only writes where the lock does not wait for reads -- BACKUP STAGE, and
    FTWRL on MariaDB >= 10.4 (docs/performance.md; on 10.11 and 11.8 FTWRL does not wait for a running
    SELECT); every statement on MySQL, where FTWRL waits for running SELECTs too.
    """
    if query_type == "all" or flavour == "mysql":
        return True
    return kind == "update"


@pytest.mark.parametrize("query_type", ["all", "auto"])
@pytest.mark.parametrize("kind", sorted(LONG_SQL))
@pytest.mark.parametrize("server_flavour, lock", servers.with_locks(), indirect=["server_flavour"])
def test_long_statement_makes_freeze_refuse_without_blocking_writers(mariadb, quiesce_env, writers,
                                                                      long_table, lock, kind, query_type):
    env = quiesce_env
    acquire = 2
    env.write_config(lock_method=lock, acquire_timeout=acquire, long_query_time=1, long_query_wait=0,
                     long_query_type=query_type)
    load = writers(engines=("InnoDB", "MyISAM"))
    statement = long_table(LONG_SQL[kind])
    wait_for(lambda: statement.running_for() >= 2.0, 10, what="the long statement to run 2 s")
    load.wait_for_progress(5)
    t_freeze = time.monotonic()
    result = env.run("freeze")
    t_done = time.monotonic()
    if _counts_as_long(mariadb.flavour, query_type, kind):
        assert result.rc == 5, result
        # Refused by the pre-check, not by the watchdog after the lock statements waited:
        # the message says which; the time only catches a hang (two interpreter starts and
        # the connections can take seconds on a busy machine).
        assert result.elapsed < acquire + HANG, result
        assert "long-query-wait" in assert_one_line(result), result
        load.wait_for_progress(3)
        worst = load.longest_wait(t_freeze, t_done)
        # A lock statement taken and left pending would hold writers for acquire-timeout or
        # more; a commit on a busy machine takes far less than this second.
        assert worst <= 1.0, "a writer waited %.2f s although freeze refused before locking" % worst
        assert not os.path.exists(env.position_file)
    else:
        # Not counted: the lock does not wait for it either, so freeze gets the lock (had it
        # waited, the watchdog would have made it exit 5).
        assert result.rc == 0, result
        assert result.elapsed < acquire + HANG, result
        assert_frozen(mariadb)
        assert env.run("thaw").rc == 0
        load.wait_for_progress(3)
        worst = load.longest_wait(t_freeze, t_done)
        assert worst <= acquire + 1, "a writer waited %.2f s (acquire-timeout=%d)" % (worst, acquire)
    assert not statement.done.is_set(), "the long statement was ended: %r" % (statement.error,)
    assert_clean(env, mariadb)


@pytest.mark.parametrize("server_flavour, lock", servers.with_locks(), indirect=["server_flavour"])
def test_lock_wait_is_bounded_by_acquire_timeout(mariadb, quiesce_env, writers, long_table, driver, lock):
    """A write statement younger than long-query-time is not caught by the pre-check; the
    lock then waits for it, stalling writers, but never longer than acquire-timeout."""
    env = quiesce_env
    acquire = 2
    env.write_config(lock_method=lock, acquire_timeout=acquire, long_query_time=60)
    load = writers(engines=("InnoDB", "MyISAM"))
    load.wait_for_progress(5)
    statement = long_table(LONG_SQL["update"])
    wait_for(lambda: statement.running_for() > 0, 5, what="the UPDATE to start")
    t_freeze = time.monotonic()
    result = env.run("freeze")
    t_done = time.monotonic()
    assert result.rc == 5, result
    assert acquire - 0.2 <= result.elapsed <= acquire + 5, result
    assert_one_line(result)
    load.wait_for_progress(3, timeout=acquire + 2)
    worst = load.longest_wait(t_freeze, t_done)
    assert worst <= acquire + 1, "a writer waited %.2f s (acquire-timeout=%d)" % (worst, acquire)
    assert not statement.done.is_set(), "the long UPDATE was ended: %r" % (statement.error,)
    assert_clean(env, mariadb)
    assert not os.path.exists(env.position_file)


@pytest.mark.flavours()
def test_kill_long_selects_lets_ftwrl_through(mariadb, quiesce_env, long_table, driver):
    env = quiesce_env
    env.write_config(lock_method="ftwrl", long_query_time=1, long_query_wait=10, kill_long_selects=1,
                     long_query_type="all")
    statement = long_table(LONG_SQL["select"])
    wait_for(lambda: statement.running_for() >= 1.5, 10, what="the SELECT to run 1.5 s")
    result = env.run("freeze")
    assert result.rc == 0, result
    assert statement.done.wait(5), "the long SELECT was not killed"
    assert_frozen(mariadb)
    assert env.run("thaw").rc == 0
    assert_clean(env, mariadb)
