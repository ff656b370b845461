"""The test harness itself: private servers start fast, copies boot, replication works,
and what the harness starts it also stops. If these fail, every other integration result
is suspect."""

import os
import signal
import subprocess
import sys
import time

import pytest

from . import chroot, servers
from .checks import assert_frozen
from .load import Writers, table_rows
from .mariadb import MARIADBD, _read_cmdline
from .runner import REPO, python_path, wait_for

START_BUDGET = 3.0   # seconds from exec to the first successful connection

# Every server kind: if the harness is wrong for one, every result on it is suspect.
pytestmark = pytest.mark.flavours()


def _gone(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_server_starts_fast_with_binlog_and_socket_root(mariadb, server_flavour):
    assert mariadb.start_seconds < START_BUDGET, mariadb.start_seconds
    assert mariadb.value("SELECT VERSION()").startswith(servers.EXPECTED_VERSION[server_flavour])
    assert mariadb.value("SELECT @@log_bin") == 1
    assert mariadb.value("SELECT @@server_id") == 1
    assert mariadb.value("SELECT CURRENT_USER()") == "root@localhost"
    assert mariadb.value("SELECT @@port") == mariadb.port
    status = mariadb.binlog_status()
    assert status["file"].startswith("binlog.") and status["position"] > 0
    assert os.path.exists(os.path.join(mariadb.datadir, status["file"]))
    # TCP works too (another account: root is socket-only, like Debian's default).
    mariadb.create_user("tcpuser", "pw", host="127.0.0.1")
    conn = mariadb.connect(user="tcpuser", password="pw", tcp=True)
    conn.close()


def test_restart_stop_and_kill(mariadb):
    mariadb.sql("CREATE TABLE quiesce_probe.r (a INT) ENGINE=InnoDB")
    mariadb.sql("INSERT INTO quiesce_probe.r VALUES (1)")
    assert mariadb.stop() is True
    assert not mariadb.running
    seconds = mariadb.start()
    assert seconds < START_BUDGET
    mariadb.sql("INSERT INTO quiesce_probe.r VALUES (2)")
    pid = mariadb.pid
    mariadb.kill()
    assert _gone(pid)
    mariadb.start()
    assert "crash recovery" in mariadb.error_log_text().split("ready for connections")[-2].lower()
    assert mariadb.value("SELECT COUNT(*) FROM quiesce_probe.r") == 2


def test_both_drivers_connect_over_the_socket(mariadb, driver):
    """quiesce runs with either driver; both must authenticate root via unix_socket."""
    code = ("import sys\n"
            "if sys.argv[1] == 'pymysql':\n"
            "    import pymysql as m; c = m.connect(unix_socket=sys.argv[2], user='root')\n"
            "else:\n"
            "    import mysql.connector as m; c = m.connect(unix_socket=sys.argv[2], user='root')\n"
            "cur = c.cursor(); cur.execute('SELECT CURRENT_USER()'); print(cur.fetchall()[0][0])\n")
    out = subprocess.run([sys.executable, "-c", code, driver, mariadb.socket], env={
        "PYTHONPATH": python_path(), "PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=30, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "root@localhost"


def test_paused_copy_boots_with_crash_recovery(mariadb, tmp_path):
    # MySQL marks a MyISAM table copied while written as crashed (repair is off in copies):
    # only InnoDB is crash-safe there.
    engines = ("InnoDB",) if mariadb.flavour == "mysql" else mariadb.ENGINES
    with Writers(mariadb, engines=engines) as load:
        load.wait_for_progress(20)
        dest = str(tmp_path / "copy")
        mariadb.copy_datadir(dest)
    assert not load.failures, load.failures
    copy = mariadb.boot_copy(dest)
    try:
        assert copy.socket != mariadb.socket and copy.port != mariadb.port
        assert copy.start_seconds < START_BUDGET * 3
        log = copy.error_log_text()
        assert "crash recovery" in log.lower(), log[-2000:]
        rows = table_rows(copy, "load", load.tables)
        # InnoDB transactions are whole: every (writer, seq) has both parts.
        assert rows["t_innodb"] and set(rows["t_innodb"].values()) == {2}
        # The copy is a prefix of what the writers were told was committed.
        acked = load.acked_keys()
        for table in load.tables:
            assert set(rows[table]) <= acked[table], table
    finally:
        copy.cleanup()
    assert not copy.running and not os.path.exists(copy.workdir)


def test_replication_pair_with_parallel_applier(mariadb):
    replica = mariadb.make_replica(parallel_threads=4)
    try:
        status = replica.replica_status()
        if mariadb.flavour == "mysql":
            assert replica.value("SELECT @@replica_parallel_workers") == 4
            assert replica.value("SELECT @@replica_preserve_commit_order") == 1
            assert status["Auto_Position"] == 1
            assert replica.value("SELECT @@server_uuid") != mariadb.value("SELECT @@server_uuid")
        else:
            assert replica.value("SELECT @@slave_parallel_threads") == 4
            assert status["Using_Gtid"] == "Slave_Pos"
        mariadb.sql("CREATE TABLE quiesce_probe.rep (a INT PRIMARY KEY) ENGINE=InnoDB")
        for i in range(20):
            mariadb.sql("INSERT INTO quiesce_probe.rep VALUES (%s)", (i,))
        replica.wait_caught_up(mariadb)
        assert replica.value("SELECT COUNT(*) FROM quiesce_probe.rep") == 20
        if mariadb.flavour == "mysql":
            assert replica.gtid() == mariadb.gtid()
        else:
            assert replica.value("SELECT @@gtid_slave_pos") == mariadb.value("SELECT @@gtid_binlog_pos")
    finally:
        replica.cleanup()


def test_try_write_detects_a_held_lock(mariadb):
    conn = mariadb.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("FLUSH TABLES WITH READ LOCK")
            began = time.monotonic()
            assert mariadb.try_write(0.5) is None
            assert time.monotonic() - began < 3
            cur.execute("UNLOCK TABLES")
    finally:
        conn.close()
    assert mariadb.try_write(1.0) is not None


def test_assert_frozen_needs_a_write_waiting_for_the_lock(mariadb):
    """assert_frozen passes under the lock, and fails on a server that is unlocked or where
    the write is only held up by something else (here a table lock): slow is not frozen."""
    with pytest.raises(AssertionError, match="committed"):
        assert_frozen(mariadb)
    conn = mariadb.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLES quiesce_probe.probe_innodb WRITE")
            with pytest.raises(AssertionError, match="neither committed nor waited for the lock"):
                assert_frozen(mariadb, timeout=1.0)
            cur.execute("UNLOCK TABLES")
            cur.execute("FLUSH TABLES WITH READ LOCK")
            assert_frozen(mariadb)
            cur.execute("UNLOCK TABLES")
    finally:
        conn.close()


def _run_printing(code: str):
    """Run code in a new test process; the words it printed."""
    script = "import sys, os; sys.path.insert(0, %r)\n%s" % (REPO, code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": python_path(), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_leftover_servers_are_killed_when_their_owner_dies(tmp_path):
    """A test process that dies leaves its servers; the next one reaps them."""
    pid, workdir, template = _run_printing("from tests.integration import mariadb\n"
                                           "db = mariadb.MariaDB(); db.start()\n"
                                           "print(db.pid, db.workdir, mariadb._template, flush=True)\n"
                                           "os._exit(0)\n")
    pid = int(pid)
    try:
        assert _read_cmdline(pid)[:1] == [MARIADBD]
        from .mariadb import reap_stale_servers
        assert pid in reap_stale_servers()
        wait_for(lambda: _gone(pid), 10, what="the reaped server to exit")
        assert not os.path.exists(workdir)
        assert not os.path.exists(template), "the dead process's template datadir was left behind"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_chroot_servers_and_roots_are_gone_when_the_process_ends():
    """A chroot server left running at exit is killed and its extracted root removed; the
    cached image stays for the next run."""
    pid, workdir, root = _run_printing("from tests.integration import servers\n"
                                       "db = servers.server_class(servers.MYSQL)(); db.start()\n"
                                       "print(db.pid, db.workdir, db.ROOT.path, flush=True)\n")
    assert _gone(int(pid))
    assert not os.path.exists(workdir) and not os.path.exists(root)
    assert os.path.exists(servers.IMAGES[servers.MYSQL].tarball)


def test_a_root_that_cannot_be_built_fails_with_the_reason(tmp_path):
    image = chroot.Image("trixie", ("mariadb-server",), mirror="http://127.0.0.1:9/debian",
                         cache_dir=str(tmp_path))
    with pytest.raises(chroot.ChrootError, match="need network access to http://127.0.0.1:9/debian"):
        image.build()
    assert os.listdir(str(tmp_path)) == [os.path.basename(image.tarball) + ".lock"]
