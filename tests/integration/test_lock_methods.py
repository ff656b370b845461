"""Lock methods on a real MariaDB: what each lets run while frozen.

That a snapshot taken under either method is equally consistent (writers on InnoDB,
MyISAM and Aria, point-in-time copy, copy boots, rows and binlog position exact, MyISAM
clean) is proven by test_snapshot_consistency.py, which runs over both lock methods.
Here: under BACKUP STAGE (what lock-method=auto picks on MariaDB >= 10.4) reads and
uncommitted InnoDB DML go on while frozen and only commits wait; under FTWRL reads go on
and every write waits.

Driver: PyMySQL only. What goes on under each lock is the server's behaviour; the
lock statements are sent with both drivers in test_freeze_thaw.py and test_faults.py.
"""

import threading

import pytest

from . import servers
from .prodhelpers import BACKUP_LOCK_WAIT, Background, lock_waiters, no_lock_held, wait_state

pytestmark = pytest.mark.flavours(*servers.ALL_MARIADB)


@pytest.mark.parametrize("method, expected", [("auto", "backup-stage"), ("ftwrl", "ftwrl")])
def test_what_runs_while_frozen(method, expected, mariadb, quiesce_env, request):
    """BACKUP STAGE: reads and uncommitted DML run, commits wait. FTWRL: reads run, writes wait."""
    mariadb.sql("CREATE TABLE quiesce_probe.acct (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    mariadb.sql("INSERT INTO quiesce_probe.acct VALUES (1, 0), (2, 0)")
    mariadb.sql("INSERT INTO quiesce_probe.probe_myisam (at) VALUES (NOW(6))")
    quiesce_env.write_config(lock_method=method)
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    assert quiesce_env.position()["lock"] == expected
    assert [i["lock"] for i in quiesce_env.status()["instances"]] == [expected]

    def bg(*statements):
        job = Background(mariadb, statements, database="quiesce_probe")
        request.addfinalizer(job.close)
        return job

    try:
        # Reads run under either lock, on InnoDB and MyISAM alike (a shared-lock read too;
        # SELECT ... FOR UPDATE counts as a write for FTWRL).
        reads = bg("SELECT COUNT(*) FROM acct", "SELECT COUNT(*) FROM probe_myisam",
                   "SELECT SUM(v) FROM acct LOCK IN SHARE MODE")
        assert reads.wait(2.0) and reads.error is None, reads.error

        # An InnoDB transaction: its DML runs under BACKUP STAGE, waits under FTWRL.
        trx = bg("BEGIN", "SELECT v FROM acct WHERE id = 1 FOR UPDATE", "UPDATE acct SET v = v + 1 WHERE id = 1",
                 "INSERT INTO acct VALUES (3, 3)", "SELECT v FROM acct WHERE id = 1")
        autocommit = bg("INSERT INTO acct VALUES (10, 10)")
        myisam = bg("INSERT INTO probe_myisam (at) VALUES (NOW(6))")
        wait_state(mariadb, autocommit.conn_id, BACKUP_LOCK_WAIT, timeout=5)
        wait_state(mariadb, myisam.conn_id, BACKUP_LOCK_WAIT, timeout=5)
        if expected == "backup-stage":
            assert trx.wait(2.0) and trx.error is None, trx.error
            # The uncommitted change is visible to its own session.
            assert trx.results[-1] == ((1,),)
            # COMMIT on the same connection: it must wait for the lock.
            commit = _commit_in_background(trx)
            wait_state(mariadb, trx.conn_id, BACKUP_LOCK_WAIT, timeout=5)
            assert not commit.is_set()
        else:
            wait_state(mariadb, trx.conn_id, BACKUP_LOCK_WAIT, timeout=5)
            assert not trx.done.is_set()
        assert not autocommit.done.is_set() and not myisam.done.is_set()
        waiting = {int(r["ID"]) for r in lock_waiters(mariadb)}
        assert {autocommit.conn_id, myisam.conn_id, trx.conn_id} <= waiting
    finally:
        thawed = quiesce_env.run("thaw")
    assert thawed.rc == 0, thawed
    # All of it goes through once thawed.
    for job in (autocommit, myisam):
        assert job.wait(5.0) and job.error is None, (job.statements, job.error)
    if expected == "backup-stage":
        assert commit.wait(5.0) and trx.error is None
    else:
        assert trx.wait(5.0) and trx.error is None, trx.error
        with trx.conn.cursor() as cur:
            cur.execute("COMMIT")
    assert mariadb.value("SELECT v FROM quiesce_probe.acct WHERE id = 1") == 1
    assert mariadb.value("SELECT COUNT(*) FROM quiesce_probe.acct") == 4
    assert no_lock_held(mariadb)


def _commit_in_background(job):
    """COMMIT on a Background job's connection (its statements are done) in a new thread."""
    done = threading.Event()

    def run():
        try:
            with job.conn.cursor() as cur:
                cur.execute("COMMIT")
        except BaseException as exc:
            job.error = exc
        finally:
            done.set()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return done
