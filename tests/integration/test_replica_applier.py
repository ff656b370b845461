"""What freeze and thaw promise about the replica's applier and about what the account can
see, staged for real: a STOP that outlasts connect-timeout (a scripted fake server), a
thaw while clients fill max_connections, a statement-format replica with a temporary
table open on its applier, an account without PROCESS.

A replica applier quiesce stopped runs again when thaw returns; when it cannot be
restarted, its record (replicas.json) stays until a later command restarts it, and thaw
says so in its exit status.
"""

import json
import os
import signal
import tempfile
import time

import pymysql
import pymysql.cursors
import pytest

from .checks import assert_clean, lines
from .fakereplica import FakeReplica
from .prodhelpers import Background, sql_thread_running, wait_running_for
from .runner import QuiesceEnv

REPLICA_STOPPED = 10     # thaw's exit status when an applier quiesce stopped could not be restarted


@pytest.fixture
def fake_replica(request):
    """A scripted replica (fakereplica.py) and a QuiesceEnv (PyMySQL, stop-replica = always) for it."""
    root = tempfile.mkdtemp(prefix="qfake-", dir="/tmp")
    datadir = os.path.join(root, "data")
    os.mkdir(datadir)
    server = FakeReplica(os.path.join(root, "mysqld.sock"), datadir)
    env = QuiesceEnv(None, driver="pymysql", socket=server.path, stop_replica="always", connect_timeout=1,
                     release_on_fs_thaw="false")

    def finish():
        report = env.cleanup()
        server.close()
        assert not report["holders"], "quiesce left processes behind: %s" % report
    request.addfinalizer(finish)
    return server, env


def _replicas_record(env):
    try:
        with open(os.path.join(env.runtime_dir, "replicas.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def test_a_stop_that_outlasts_connect_timeout_is_restarted_or_recorded(fake_replica):
    """STOP SLAVE SQL_THREAD answers only after 2 x connect-timeout, and the thread is stopped
    then: the failed freeze must restart it, or leave its record for the next command."""
    server, env = fake_replica
    server.stop_delay = 2.0
    result = env.run("freeze")
    assert result.rc == 3, result
    assert "may" in result.stderr and "stopped" in result.stderr, result
    assert server.stop_done.wait(10), "the fake never finished the STOP"
    assert env.wait_no_holder(10) == set()
    record = _replicas_record(env)
    assert server.sql_running or (record and record["instances"] == {"default": [""]}), (
        "the applier stays stopped and nothing records it: %r, %r" % (server.statements, record))
    # Whatever was left, the next command restarts it and only then drops the record.
    thawed = env.run("thaw")
    assert thawed.rc == 0, thawed
    assert server.sql_running and _replicas_record(env) is None, server.statements


def test_a_start_that_fails_at_thaw_fails_the_thaw_and_keeps_the_record(fake_replica):
    server, env = fake_replica
    assert env.run("freeze").rc == 0
    assert server.sql_running is False
    server.start_error = (1201, "Could not initialize master info structure (staged)")
    thawed = env.run("thaw")
    assert thawed.rc == REPLICA_STOPPED, thawed
    assert "START SLAVE" in thawed.stderr and "(staged)" in thawed.stderr, thawed
    # It was tried over the lock session, after the unlock.
    statements = [text for _, text in server.statements]
    assert statements.index("START SLAVE SQL_THREAD") > statements.index("BACKUP STAGE END"), statements
    assert _replicas_record(env)["instances"] == {"default": [""]}
    assert env.status()["last_result"]["problems"], env.status()
    # The next command retries, and drops the record once the applier runs.
    server.start_error = None
    again = env.run("thaw")
    assert again.rc == 0, again
    assert server.sql_running and _replicas_record(env) is None


def _long_update_table(server):
    server.sql("CREATE TABLE quiesce_probe.slow_innodb (id INT PRIMARY KEY, v DOUBLE) ENGINE=InnoDB")
    server.sql("INSERT INTO quiesce_probe.slow_innodb VALUES (1, 0), (2, 0), (3, 0)")


def test_account_without_process_is_warned_that_long_statements_go_unnoticed(mariadb, quiesce_env):
    """Without PROCESS the process list shows only the account's own sessions: another
    account's long UPDATE is invisible to the pre-check, and freeze says so once."""
    _long_update_table(mariadb)
    mariadb.create_user("qnoproc", "np-secret", grants=("RELOAD", "BINLOG MONITOR"))
    quiesce_env.write_config(user="qnoproc", password="np-secret", lock_method="backup-stage",
                             long_query_time=1, long_query_wait=30, acquire_timeout=10)
    # 3 rows x 1 s: it ends on its own, and BACKUP STAGE does not wait for InnoDB DML.
    update = Background(mariadb, ["UPDATE slow_innodb SET v = SLEEP(1)"], database="quiesce_probe")
    try:
        wait_running_for(mariadb, update.conn_id, 1.2)
        result = quiesce_env.run("freeze")
        assert result.rc == 0, result
        thawed = quiesce_env.run("thaw")
        assert thawed.rc == 0, thawed
    finally:
        update.close()
    warned = [line for line in lines(result.stderr) if "PROCESS" in line]
    assert len(warned) == 1, result
    assert "GRANT PROCESS" in warned[0] and "own sessions" in warned[0], warned
    # The same account with PROCESS sees the UPDATE, and is not warned.
    mariadb.sql("GRANT PROCESS ON *.* TO qnoproc@localhost")
    again = quiesce_env.run("freeze")
    assert again.rc == 0, again
    assert quiesce_env.run("thaw").rc == 0
    assert not [line for line in lines(again.stderr) if "PROCESS" in line], again
    assert_clean(quiesce_env, mariadb)


def _fill_connections(server, count=30):
    """count root connections, then max_connections far below them: until enough of them
    close, the server refuses every new connection (Too many connections), even for root
    and even once the holder's own session has closed."""
    held = []
    try:
        while len(held) < count:
            held.append(server.connect())
        with held[0].cursor() as cur:
            cur.execute("SET GLOBAL max_connections = 10")
    except BaseException:
        _close_all(held)
        raise
    return held


def _close_all(connections):
    for conn in connections:
        try:
            conn.close()
        except Exception:
            pass


def _sql_running(conn):
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SHOW SLAVE STATUS")
        return cur.fetchone()["Slave_SQL_Running"]


def test_applier_runs_when_thaw_returns_although_clients_fill_max_connections(mariadb, replica_of):
    """Right after a lock, the clients that waited behind it can fill max_connections: the
    restart must not need a new connection (it goes over the lock session)."""
    replica = replica_of(mariadb, parallel_threads=4)
    env = QuiesceEnv(replica, driver=None, stop_replica="always")
    fillers = []
    try:
        result = env.run("freeze")
        assert result.rc == 0, result
        fillers = _fill_connections(replica)
        assert _sql_running(fillers[0]) == "No"
        with pytest.raises(pymysql.MySQLError, match="1040"):
            replica.connect().close()
        thawed = env.run("thaw")
        # Read at once, no wait: thaw returns with the applier running.
        running = _sql_running(fillers[0])
        assert thawed.rc == 0, thawed
        assert running == "Yes", thawed
        assert _replicas_record(env) is None
    finally:
        if fillers:
            with fillers[0].cursor() as cur:
                cur.execute("SET GLOBAL max_connections = 151")
        _close_all(fillers)
        report = env.cleanup()
    assert not report["holders"], report


@pytest.fixture
def stopped_replica(mariadb, replica_of, request):
    """A parallel replica and its QuiesceEnv (stop-replica = always), torn down cleanly."""
    def make(**settings):
        replica = replica_of(mariadb, parallel_threads=4)
        env = QuiesceEnv(replica, driver=None, stop_replica="always", **settings)

        def finish():
            report = env.cleanup()
            assert not report["holders"], report
        request.addfinalizer(finish)
        return replica, env
    return make


def test_applier_runs_when_the_hook_thaw_returns(stopped_replica):
    replica, env = stopped_replica()
    assert env.run("hook", "freeze").rc == 0
    assert sql_thread_running(replica) == "No"
    thawed = env.run("hook", "thaw")
    # Read at once, no wait.
    assert sql_thread_running(replica) == "Yes", thawed
    assert thawed.rc == 0, thawed


def test_a_freeze_that_finds_the_holder_killed_restarts_its_applier(stopped_replica):
    replica, env = stopped_replica()
    assert env.run("freeze").rc == 0
    os.kill(env.state()["holder_pid"], signal.SIGKILL)
    assert env.wait_no_holder(5) == set()
    assert sql_thread_running(replica) == "No"
    # The next freeze (which itself stops nothing now) adopts the dead holder first.
    env.write_config(stop_replica="never")
    frozen = env.run("freeze")
    assert sql_thread_running(replica) == "Yes", frozen
    assert frozen.rc == 0, frozen
    assert _replicas_record(env) is None
    assert env.run("thaw").rc == 0    # this caller froze again: the killed holder's loss went to the history


def test_a_restart_that_fails_while_the_replica_is_stopped_is_retried_by_the_next_thaw(stopped_replica):
    """The replica's server does not answer at thaw (SIGSTOP): neither the unlock nor the
    restart gets through, so the record must stay for the next command."""
    replica, env = stopped_replica(connect_timeout=1)
    assert env.run("freeze").rc == 0
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        thawed = env.run("thaw")
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert thawed.rc == 6, thawed
    assert _replicas_record(env)["instances"] == {"default": [""]}, thawed
    assert sql_thread_running(replica) == "No"
    again = env.run("thaw")
    assert sql_thread_running(replica) == "Yes", again
    assert again.rc == 0, again
    assert _replicas_record(env) is None


def _open_temp_tables(replica):
    rows = replica.query("SHOW GLOBAL STATUS LIKE 'Slave_open_temp_tables'")
    return int(rows[0][1])


@pytest.fixture
def temp_table_on_the_applier(mariadb, replica_of, request):
    """A statement-format replica whose applier holds a temporary table: the source's session
    that created it stays open. Returns (replica, env, that session)."""
    replica = replica_of(mariadb, parallel_threads=0)
    session = mariadb.connect(database="quiesce_probe")
    request.addfinalizer(lambda: _close_all([session]))
    with session.cursor() as cur:
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
        cur.execute("CREATE TEMPORARY TABLE pending (a INT)")
        cur.execute("INSERT INTO pending VALUES (1)")
    replica.wait_caught_up(mariadb)
    assert _open_temp_tables(replica) == 1
    env = QuiesceEnv(replica, driver=None, stop_replica="always")

    def finish():
        report = env.cleanup()
        assert not report["holders"], report
    request.addfinalizer(finish)
    return replica, env, session


@pytest.mark.parametrize("stop_replica", ["always", "auto"])
def test_a_replica_applier_holding_temporary_tables_is_not_frozen(stop_replica, temp_table_on_the_applier):
    """A snapshot taken while the applier holds a temporary table cannot replicate on: the
    statements that use it would fail on the restored copy. freeze lets the applier go on
    for up to long-query-wait, then gives up with its applier running again (auto too,
    although this applier is serial)."""
    replica, env, _session = temp_table_on_the_applier
    env.write_config(long_query_wait=2, stop_replica=stop_replica)
    result = env.run("freeze")
    assert result.rc == 5, result
    assert "temporary table" in result.stderr and "long-query-wait" in result.stderr, result
    assert sql_thread_running(replica) == "Yes"
    assert env.wait_no_holder(5) == set()
    assert not os.path.exists(env.position_file)
    assert_clean(env, replica)


def test_freeze_waits_until_the_replica_applier_has_dropped_its_temporary_tables(mariadb,
                                                                                temp_table_on_the_applier):
    replica, env, session = temp_table_on_the_applier
    env.write_config(long_query_wait=30)
    freeze = env.start("freeze")
    # The source drops the table once freeze has stopped the applier (its record comes just
    # before the STOP; the applier then runs only in 1 s bursts): it must be let run to apply it.
    deadline = time.monotonic() + 20
    while _replicas_record(env) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    deadline = time.monotonic() + 5
    while sql_thread_running(replica) == "Yes" and time.monotonic() < deadline:
        time.sleep(0.01)
    with session.cursor() as cur:
        cur.execute("DROP TEMPORARY TABLE pending")
    result = freeze.wait(60)
    assert result.rc == 0, result
    try:
        assert _open_temp_tables(replica) == 0
        assert sql_thread_running(replica) == "No"
        assert env.position()["replica_stopped"] is True
    finally:
        assert env.run("thaw").rc == 0
    assert sql_thread_running(replica) == "Yes"


def test_a_start_refused_by_a_real_replica_fails_the_thaw_and_the_next_thaw_retries(stopped_replica, mariadb):
    """While frozen, the replica's configuration goes (RESET SLAVE ALL): START SLAVE fails at
    thaw (The server is not configured as slave), so thaw exits 10 and keeps the record."""
    replica, env = stopped_replica()
    assert env.run("freeze").rc == 0
    replica.sql("STOP SLAVE IO_THREAD")
    replica.sql("RESET SLAVE ALL")
    thawed = env.run("thaw")
    assert thawed.rc == REPLICA_STOPPED, thawed
    assert "START SLAVE" in thawed.stderr, thawed
    assert _replicas_record(env)["instances"] == {"default": [""]}
    # Configured again, the next command starts the applier and drops the record.
    replica.replicate_from(mariadb, parallel_threads=None)
    replica.sql("STOP SLAVE SQL_THREAD")
    again = env.run("thaw")
    assert sql_thread_running(replica) == "Yes", again
    assert again.rc == 0, again
    assert _replicas_record(env) is None
