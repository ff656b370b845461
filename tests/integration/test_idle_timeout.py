"""The lock outlives the server's idle timeout (wait_timeout), on every server kind.

Shared and managed servers often drop idle sessions after a minute or so, while the
snapshot of a large VM takes minutes; the holder's session is idle all that time. quiesce
raises the session's wait_timeout above lock-timeout. Here the server drops idle sessions
after WAIT seconds (a session of the test's own, idle as long, shows that it does); the
lock is held for 2 x WAIT and must stand throughout: a write issued midway waits for the
lock, and thaw exits 0.

Driver: PyMySQL only. The server drops an idle session whichever client it has, and
quiesce's answer is one SET SESSION statement.
"""

import time

import pymysql
import pytest

from .checks import assert_clean, assert_one_line
from .prodhelpers import Background, lock_waiters
from .runner import wait_for

WAIT = 3                # the server's wait_timeout and interactive_timeout, seconds


@pytest.fixture
def mariadb(mariadb_factory):
    return mariadb_factory(options={"wait-timeout": WAIT, "interactive-timeout": WAIT})


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@pytest.mark.flavours()
def test_lock_held_past_the_servers_wait_timeout(mariadb, quiesce_env, request):
    env = quiesce_env
    env.write_config(lock_timeout=60)
    idle = mariadb.connect()
    request.addfinalizer(idle.close)
    result = env.run("freeze")
    assert result.rc == 0, result
    frozen_at = time.monotonic()

    _sleep_until(frozen_at + 1.5 * WAIT)
    writer = Background(mariadb, ["INSERT INTO probe_innodb (at) VALUES (NOW(6))"], database="quiesce_probe")
    request.addfinalizer(writer.close)
    wait_for(lambda: any(row["ID"] == writer.conn_id for row in lock_waiters(mariadb)), 10,
             what="the write issued midway to wait for the lock")

    _sleep_until(frozen_at + 2 * WAIT)
    assert not writer.done.is_set(), "the write committed while the server should be locked"
    # The premise: this server really drops a session idle for longer than WAIT.
    with pytest.raises(pymysql.err.OperationalError):
        with idle.cursor() as cur:
            cur.execute("SELECT 1")

    thaw = env.run("thaw")
    assert thaw.rc == 0, thaw
    assert_one_line(thaw)
    assert writer.wait(10) and writer.error is None, writer.error
    assert env.status()["last_result"]["outcome"] == "released", env.status()
    assert_clean(env, mariadb)
