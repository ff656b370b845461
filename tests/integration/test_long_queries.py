"""Long-running statements and the acquisition watchdog, on a real MariaDB.

Before any lock statement quiesce reads the process list: a statement that has run for
long-query-time and does not end within long-query-wait makes freeze fail (exit 5) or go
on unlocked (on-failure=continue) without ever having blocked a writer. A statement the
pre-check does not catch but that really blocks the lock is the watchdog's: the pending
lock statement is killed after acquire-timeout, so writers wait no longer than that.

What blocks each lock on MariaDB 10.11 and 11.8 (measured; see test_what_blocks_each_lock):
  - FTWRL waits for running data-changing statements on any engine (UPDATE on InnoDB,
    MyISAM, Aria; SELECT ... FOR UPDATE) and for LOCK TABLES ... WRITE held by any
    session; while it waits, every new write on the server waits behind it. It does NOT
    wait for plain SELECTs, on MyISAM or InnoDB: MariaDB >= 10.4 marks tables in use for
    flushing instead of waiting for the readers.
  - BACKUP STAGE waits at BLOCK_DDL for a running UPDATE on a MyISAM table (writes to
    non-transactional tables), and at START for LOCK TABLES ... WRITE held by another
    session. It waits for neither SELECTs nor InnoDB/Aria DML. While BLOCK_DDL waits,
    new MyISAM writes wait (the FLUSH stage already blocks them); InnoDB writes go on.
    While START waits, nothing else waits.

Driver: the watchdog test of FTWRL behind a MyISAM UPDATE runs with both drivers, the
rest with PyMySQL only: the pre-check reads the process list and the waits are the
server's.
"""

import time

import pytest

from . import servers
from .prodhelpers import (INTERRUPTED, Background, lock_waiters, no_lock_held, table_blocked_seconds,
                          wait_running_for)

# MariaDB's locks (BACKUP STAGE, and FTWRL that does not wait for reads), on both MariaDB
# releases; MySQL's long statements: test_mysql.py and test_faults.py.
pytestmark = pytest.mark.flavours(*servers.ALL_MARIADB)

# Bounds, each at most half of what the failure it catches would show, so that a busy
# 2-core machine (an interpreter start or a commit delayed by a second) cannot trip them:
# - a writer "not blocked" commits within NOT_BLOCKED; blocked, it would wait for a pending
#   lock statement for acquire-timeout (2 s here) or for the long statement (>= 30 s);
NOT_BLOCKED = 1.0
# - a writer blocked by a pending lock is freed within acquire-timeout + MARGIN; not freed,
#   it would wait for the long UPDATE behind the lock (30 s);
MARGIN = 3.0
# - quiesce's own start-up and connection work in one freeze; a freeze that waited for a
#   statement it should not wait for would take long-query-wait (20 s and more in the
#   tests that use this) or the statement's whole run.
STARTUP = 5.0


@pytest.fixture
def slow_tables(mariadb):
    """Small tables for long statements: SLEEP(n) per row makes an UPDATE run 3n seconds."""
    for engine in ("MyISAM", "InnoDB"):
        mariadb.sql("CREATE TABLE quiesce_probe.slow_%s (id INT PRIMARY KEY, v DOUBLE) ENGINE=%s"
                    % (engine.lower(), engine))
        mariadb.sql("INSERT INTO quiesce_probe.slow_%s VALUES (1, 0), (2, 0), (3, 0)" % engine.lower())
    return mariadb


@pytest.fixture
def bg(mariadb, request):
    def start(*statements):
        job = Background(mariadb, statements, database="quiesce_probe")
        request.addfinalizer(job.close)
        return job
    return start


def _assert_nothing_left(quiesce_env, mariadb):
    assert quiesce_env.wait_no_holder(5) == set(), "a quiesce process outlived the failed freeze"
    status = quiesce_env.status()
    assert status["frozen"] is False, status
    assert no_lock_held(mariadb), "the server is still locked after the failed freeze"
    leftovers = mariadb.query("SELECT ID, INFO FROM information_schema.PROCESSLIST "
                              "WHERE INFO LIKE 'FLUSH TABLES%%' OR INFO LIKE 'BACKUP STAGE%%'")
    assert leftovers == [], leftovers


def _writer_blocking(load, began, ended):
    return {t: table_blocked_seconds(load, t, began, ended) for t in load.tables}


@pytest.mark.parametrize("method, query_type", [("ftwrl", "all"), ("backup-stage", "all"),
                                                ("backup-stage", "select")])
def test_long_select_fails_freeze_without_blocking_writers(method, query_type, slow_tables, bg, writers,
                                                           quiesce_env):
    load = writers(engines=("InnoDB", "MyISAM"))
    select = bg("SELECT SLEEP(60) FROM slow_myisam LIMIT 1")
    wait_running_for(slow_tables, select.conn_id, 1.2)
    quiesce_env.write_config(lock_method=method, long_query_type=query_type, long_query_time=1,
                             long_query_wait=1.5, acquire_timeout=2)
    load.wait_for_progress(5)
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    ended = time.monotonic()
    assert result.rc == 5, result
    assert "%d" % select.conn_id in result.stderr and "long-query-wait" in result.stderr, result
    # It waited long-query-wait for the statement, and no longer.
    assert 1.5 <= result.elapsed < 1.5 + STARTUP, result.elapsed
    load.wait_for_progress(5)
    blocked = _writer_blocking(load, began, ended)
    assert max(blocked.values()) < NOT_BLOCKED, "writers were blocked by a freeze that never locked: %s" % blocked
    assert not select.done.is_set(), "the SELECT was killed although kill-long-selects is off"
    _assert_nothing_left(quiesce_env, slow_tables)


@pytest.mark.parametrize("method, query_type, expected", [("auto", "auto", "backup-stage"),
                                                         ("ftwrl", "auto", "ftwrl"),
                                                         ("ftwrl", "update", "ftwrl")])
def test_long_select_not_counted_and_not_waited_for(method, query_type, expected, slow_tables, bg, writers,
                                                    quiesce_env):
    """On MariaDB >= 10.4 neither lock waits for a read, so long-query-type=auto counts only
    data-changing statements for both (and update does so explicitly)."""
    load = writers(engines=("InnoDB", "MyISAM"))
    select = bg("SELECT SLEEP(60) FROM slow_myisam LIMIT 1")
    wait_running_for(slow_tables, select.conn_id, 1.2)
    quiesce_env.write_config(lock_method=method, long_query_type=query_type, long_query_time=1,
                             long_query_wait=20, acquire_timeout=2)
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    try:
        assert quiesce_env.position()["lock"] == expected
        assert result.elapsed < STARTUP, result
        assert not select.done.is_set()
        # The read goes on while frozen; writes wait.
        assert slow_tables.value("SELECT COUNT(*) FROM quiesce_probe.slow_myisam") == 3
    finally:
        thawed = quiesce_env.run("thaw")
    assert thawed.rc == 0, thawed
    load.wait_for_progress(5)
    assert not select.done.is_set()


@pytest.mark.parametrize("method, on_failure", [("ftwrl", "fail"), ("backup-stage", "fail"),
                                                ("backup-stage", "continue")])
def test_long_update_fails_freeze_without_blocking_writers(method, on_failure, slow_tables, bg, writers,
                                                           quiesce_env):
    load = writers(engines=("InnoDB", "MyISAM"))
    # Each lock's own blocker: FTWRL waits for any write, BACKUP STAGE for non-InnoDB ones.
    table = "slow_innodb" if method == "ftwrl" else "slow_myisam"
    update = bg("UPDATE %s SET v = SLEEP(20)" % table)
    wait_running_for(slow_tables, update.conn_id, 1.2)
    quiesce_env.write_config(lock_method=method, on_failure=on_failure, long_query_time=1,
                             long_query_wait=1, acquire_timeout=2)
    load.wait_for_progress(5)
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    ended = time.monotonic()
    if on_failure == "fail":
        assert result.rc == 5, result
    else:
        assert result.rc == 0, result
        assert "FREEZE FAILED" in result.stderr and "WITHOUT a database lock" in result.stderr, result
    assert "%d" % update.conn_id in result.stderr, result
    assert result.elapsed < 1 + STARTUP, result.elapsed
    load.wait_for_progress(5)
    blocked = _writer_blocking(load, began, ended)
    assert max(blocked.values()) < NOT_BLOCKED, "writers were blocked by a freeze that never locked: %s" % blocked
    assert not update.done.is_set()
    _assert_nothing_left(quiesce_env, slow_tables)
    if on_failure == "continue":
        # Nothing frozen, so thaw has nothing to report as lost.
        thawed = quiesce_env.run("thaw")
        assert thawed.rc == 0, thawed


def test_backup_stage_does_not_wait_for_a_long_innodb_update(slow_tables, bg, writers, quiesce_env):
    """BACKUP STAGE lets InnoDB DML run, so long-query-type=auto does not hold the freeze for it."""
    load = writers(engines=("InnoDB", "MyISAM"))
    update = bg("UPDATE slow_innodb SET v = SLEEP(20)")
    wait_running_for(slow_tables, update.conn_id, 1.2)
    quiesce_env.write_config(lock_method="backup-stage", long_query_time=1, long_query_wait=20, acquire_timeout=2)
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    try:
        assert result.elapsed < STARTUP, result.elapsed
        assert not update.done.is_set(), "the UPDATE was waited for or killed"
        assert lock_waiters(slow_tables), "frozen, yet no writer waits for the lock"
    finally:
        thawed = quiesce_env.run("thaw")
    assert thawed.rc == 0, thawed
    load.wait_for_progress(5)


def test_long_statement_that_finishes_within_wait(slow_tables, bg, writers, quiesce_env):
    """Freeze waits (without blocking anyone) for a long UPDATE to end, then locks."""
    load = writers(engines=("InnoDB", "MyISAM"))
    update = bg("UPDATE slow_innodb SET v = SLEEP(0.8)")       # about 2.4 s
    wait_running_for(slow_tables, update.conn_id, 1.1)
    quiesce_env.write_config(lock_method="ftwrl", long_query_time=1, long_query_wait=30, acquire_timeout=2)
    load.wait_for_progress(5)
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    try:
        assert update.done.is_set() and update.error is None, update.error
        # It waited for the statement: the lock came after the UPDATE ended.
        assert update.ended < time.monotonic()
        assert result.elapsed >= update.ended - began - 0.05
        assert result.elapsed < 2.4 + STARTUP, result.elapsed
        blocked = _writer_blocking(load, began, update.ended - 0.1)
        assert max(blocked.values()) < NOT_BLOCKED, "writers were blocked while freeze waited: %s" % blocked
        assert slow_tables.value("SELECT COUNT(*) FROM quiesce_probe.slow_innodb WHERE v = 0") == 3
        assert lock_waiters(slow_tables), "frozen, yet no writer waits for the lock"
    finally:
        thawed = quiesce_env.run("thaw")
    assert thawed.rc == 0, thawed
    load.wait_for_progress(5)


def test_kill_long_selects(slow_tables, bg, writers, quiesce_env):
    load = writers(engines=("InnoDB", "MyISAM"))
    select = bg("SELECT SLEEP(60) FROM slow_myisam LIMIT 1")
    wait_running_for(slow_tables, select.conn_id, 1.2)
    # Only statements that count are killed; on MariaDB >= 10.4 "auto" leaves reads alone.
    quiesce_env.write_config(lock_method="ftwrl", long_query_type="select", long_query_time=1,
                             long_query_wait=20, kill_long_selects=1, acquire_timeout=2)
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    try:
        assert select.done.is_set(), "the long SELECT still runs"
        assert select.elapsed() < 10
        # KILL QUERY: the statement was interrupted (or SLEEP cut short), the connection lives.
        assert select.error is None or select.errno in INTERRUPTED, select.error
        assert result.elapsed < STARTUP + 1, result.elapsed
        assert select.conn_id in slow_tables.connection_ids(), "KILL QUERY was meant, not KILL CONNECTION"
    finally:
        thawed = quiesce_env.run("thaw")
    assert thawed.rc == 0, thawed
    load.wait_for_progress(5)


@pytest.mark.parametrize("query_type", ["update", "all"])
def test_locking_read_counts_as_update_and_is_not_killed(query_type, slow_tables, bg, writers, quiesce_env):
    """SELECT ... FOR UPDATE belongs to a writing transaction and blocks FTWRL like an UPDATE
    (see test_what_blocks_each_lock): the pre-check must count it as an update (else the
    lock waits behind it and blocks every writer), and kill-long-selects must spare it."""
    load = writers(engines=("InnoDB", "MyISAM"))
    locking_read = bg("BEGIN", "SELECT SLEEP(60) FROM slow_innodb LIMIT 1 FOR UPDATE")
    wait_running_for(slow_tables, locking_read.conn_id, 1.2)
    quiesce_env.write_config(lock_method="ftwrl", long_query_type=query_type, long_query_time=1,
                             long_query_wait=1.5, kill_long_selects=1, acquire_timeout=2)
    load.wait_for_progress(5)
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    ended = time.monotonic()
    if result.rc == 0:
        quiesce_env.run("thaw")
    assert not locking_read.done.is_set(), "quiesce killed a SELECT ... FOR UPDATE as if it were a plain read"
    assert result.rc == 5, result
    blocked = _writer_blocking(load, began, ended)
    assert max(blocked.values()) < NOT_BLOCKED, blocked
    _assert_nothing_left(quiesce_env, slow_tables)


# ----------------------------------------------------------------------------- watchdog
def test_acquire_timeout_bounds_ftwrl_stuck_behind_myisam_update(driver, slow_tables, bg, writers,
                                                                 quiesce_env):
    """A long MyISAM UPDATE younger than long-query-time: FTWRL really waits for it and
    blocks every writer meanwhile; the watchdog ends that after acquire-timeout."""
    acquire = 1.5
    load = writers(engines=("InnoDB", "MyISAM"))
    update = bg("UPDATE slow_myisam SET v = SLEEP(10)")
    wait_running_for(slow_tables, update.conn_id, 0.2)
    quiesce_env.write_config(lock_method="ftwrl", long_query_time=60, acquire_timeout=acquire)
    load.wait_for_progress(5)
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    ended = time.monotonic()
    assert result.rc == 5, result
    assert "acquire-timeout" in result.stderr, result
    assert acquire <= result.elapsed < acquire + STARTUP, result.elapsed
    # Writers were really blocked by the pending lock (else this proves nothing), but not
    # for longer than acquire-timeout.
    blocked = _writer_blocking(load, began, ended)
    assert min(blocked.values()) > acquire - 0.5, "the lock did not block writers: %s" % blocked
    assert max(blocked.values()) < acquire + MARGIN, "writers blocked too long: %s" % blocked
    assert no_lock_held(slow_tables, 0.5)
    load.wait_for_progress(5)
    assert not update.done.is_set(), "quiesce killed the user's UPDATE instead of its own lock"
    _assert_nothing_left(quiesce_env, slow_tables)


@pytest.mark.parametrize("method", ["ftwrl", "backup-stage"])
def test_acquire_timeout_bounds_lock_stuck_behind_lock_tables_write(method, slow_tables, bg, writers,
                                                                    quiesce_env):
    """LOCK TABLES ... WRITE held by an idle session: no running statement for the
    pre-check to see, yet both locks wait for it."""
    acquire = 1.5
    load = writers(engines=("InnoDB", "MyISAM"))
    holder = bg("LOCK TABLES slow_myisam WRITE")
    assert holder.wait(5) and holder.error is None, holder.error
    quiesce_env.write_config(lock_method=method, acquire_timeout=acquire)
    load.wait_for_progress(5)
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    ended = time.monotonic()
    assert result.rc == 5, result
    assert acquire <= result.elapsed < acquire + STARTUP, result.elapsed
    blocked = _writer_blocking(load, began, ended)
    if method == "ftwrl":
        assert min(blocked.values()) > acquire - 0.5, "the lock did not block writers: %s" % blocked
        assert max(blocked.values()) < acquire + MARGIN, "writers blocked too long: %s" % blocked
    else:
        # A pending BACKUP STAGE START holds nobody up.
        assert max(blocked.values()) < NOT_BLOCKED, blocked
    load.wait_for_progress(5)
    _assert_nothing_left(quiesce_env, slow_tables)
    with holder.conn.cursor() as cur:
        cur.execute("UNLOCK TABLES")


def test_acquire_timeout_bounds_backup_stage_stuck_behind_myisam_update(slow_tables, bg, writers, quiesce_env):
    """BACKUP STAGE waits at BLOCK_DDL for a MyISAM UPDATE: MyISAM writers wait up to
    acquire-timeout, InnoDB writers not at all."""
    acquire = 1.5
    load = writers(engines=("InnoDB", "MyISAM"))
    update = bg("UPDATE slow_myisam SET v = SLEEP(10)")
    wait_running_for(slow_tables, update.conn_id, 0.2)
    quiesce_env.write_config(long_query_time=60, acquire_timeout=acquire)
    load.wait_for_progress(5)
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    ended = time.monotonic()
    assert result.rc == 5, result
    assert acquire <= result.elapsed < acquire + STARTUP, result.elapsed
    blocked = _writer_blocking(load, began, ended)
    assert blocked["t_innodb"] < NOT_BLOCKED, blocked
    assert acquire - 0.5 < blocked["t_myisam"] < acquire + MARGIN, blocked
    assert no_lock_held(slow_tables, 0.5)
    load.wait_for_progress(5)
    assert not update.done.is_set()
    _assert_nothing_left(quiesce_env, slow_tables)


# ----------------------------------------------------------------------------- the facts
def test_what_blocks_each_lock(slow_tables, bg):
    """The server facts the pre-check and the docstring above rely on (no quiesce involved)."""
    ftwrl = ("FLUSH TABLES WITH READ LOCK",)
    backup = ("BACKUP STAGE START", "BACKUP STAGE FLUSH", "BACKUP STAGE BLOCK_DDL", "BACKUP STAGE BLOCK_COMMIT")

    def attempt(lock):
        job = bg("SET SESSION lock_wait_timeout = 1", *lock)
        assert job.wait(5), "lock_wait_timeout did not bound %s" % job.current
        job.close()
        return "locked" if job.error is None else "waits at " + job.current

    cases = [
        (("SELECT SLEEP(30) FROM slow_myisam LIMIT 1",), "locked", "locked"),
        (("SELECT SLEEP(30) FROM slow_innodb LIMIT 1",), "locked", "locked"),
        (("UPDATE slow_innodb SET v = SLEEP(10)",), "waits at FLUSH TABLES WITH READ LOCK", "locked"),
        (("UPDATE slow_myisam SET v = SLEEP(10)",), "waits at FLUSH TABLES WITH READ LOCK",
         "waits at BACKUP STAGE BLOCK_DDL"),
        (("LOCK TABLES slow_innodb WRITE",), "waits at FLUSH TABLES WITH READ LOCK",
         "waits at BACKUP STAGE START"),
        (("BEGIN", "UPDATE slow_innodb SET v = 1"), "locked", "locked"),
    ]
    found = []
    for statements, want_ftwrl, want_backup in cases:
        blocker = bg(*statements)
        if statements[0].startswith(("SELECT", "UPDATE")):
            wait_running_for(slow_tables, blocker.conn_id, 0.1)
        else:
            assert blocker.wait(5) and blocker.error is None, blocker.error
        found.append((statements[-1], attempt(ftwrl), attempt(backup)))
        blocker.close()
        assert no_lock_held(slow_tables)
    want = [(s[-1], f, b) for s, f, b in cases]
    assert found == want
