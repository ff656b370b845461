"""The acquire-timeout watchdog: KILL QUERY of the pending lock statement, on real servers.

quiesce also sets the lock session's lock_wait_timeout to ceil(acquire-timeout), the
server's own bound, so a freeze stuck behind a lock fails either way. With
acquire-timeout = 1.05 that backstop is 2 s away, and the server's statement history
(performance_schema) tells who ended the wait: error 1317 (interrupted) for the KILL,
1205 for lock_wait_timeout. The control disables the watchdog in quiesce's processes and
gets 1205: the main test's check can tell a working watchdog from none. Timings are
only bounded loosely (a hang); the error number is the proof.

Driver: PyMySQL only. The KILL comes from the server, and the driver only reports the
error it gets; both drivers' error mapping is in test_faults.py and tests/unit.
"""

import time

import pytest

from . import servers
from .checks import assert_clean, assert_one_line
from .prodhelpers import Background, no_lock_held
from .runner import QuiesceEnv, sabotaged

ACQUIRE = 1.05          # lock_wait_timeout = ceil(1.05) = 2: the KILL must come first
SLACK = 10.0            # two interpreter starts and the connections on a busy machine
STATEMENT_HISTORY = {"performance-schema": "ON",
                     "performance-schema-consumer-events-statements-current": "ON",
                     "performance-schema-consumer-events-statements-history-long": "ON"}
# The statements quiesce sends under the watchdog, as performance_schema names them (on
# MySQL the FLUSH TABLES before FTWRL is the one that waits; its text is not recorded).
LOCK_EVENTS = ("statement/sql/flush", "statement/sql/backup")


@pytest.fixture
def mariadb(mariadb_factory):
    """This test's server, keeping every statement's outcome in performance_schema."""
    return mariadb_factory(options=STATEMENT_HISTORY)


def _held_table(server, request):
    """An idle session holding LOCK TABLES ... WRITE: both lock methods wait for it, and
    no running statement shows in the process list for the long-statement check."""
    server.sql("CREATE TABLE quiesce_probe.held (id INT) ENGINE=MyISAM")
    holder = Background(server, ["LOCK TABLES held WRITE"], database="quiesce_probe")
    request.addfinalizer(holder.close)
    assert holder.wait(10) and holder.error is None, holder.error
    return holder


def _statements(server, where, args=()):
    return server.query("SELECT EVENT_NAME, SQL_TEXT, MYSQL_ERRNO, TIMER_WAIT / 1e12 AS seconds "
                        "FROM performance_schema.events_statements_history_long WHERE %s "
                        "ORDER BY EVENT_ID" % where, args, as_dict=True)


def _kills(server):
    return _statements(server, "SQL_TEXT LIKE %s", ("KILL QUERY %",))


def _freeze_stuck(server, quiesce_env, request, lock, env=None):
    blocker = _held_table(server, request)
    quiesce_env.write_config(lock_method=lock, acquire_timeout=ACQUIRE, lock_timeout=30)
    result = quiesce_env.run("freeze", env=env)
    assert result.rc == 5, result
    assert "acquire-timeout" in assert_one_line(result), result
    assert result.elapsed < ACQUIRE + SLACK, result
    assert no_lock_held(server), "the failed freeze left the server locked"
    assert blocker.conn_id in server.connection_ids(), "quiesce killed the session holding LOCK TABLES"
    # Nothing else on this server fails a statement: the one that did is quiesce's lock.
    (attempt,) = _statements(server, "MYSQL_ERRNO <> 0")
    assert attempt["EVENT_NAME"] in LOCK_EVENTS, attempt
    return attempt


@pytest.mark.parametrize("server_flavour, lock", servers.with_locks(), indirect=["server_flavour"])
def test_watchdog_ends_a_pending_lock_before_the_servers_lock_wait_timeout(mariadb, quiesce_env, request, lock):
    attempt = _freeze_stuck(mariadb, quiesce_env, request, lock)
    assert attempt["MYSQL_ERRNO"] == 1317, "the lock statement was not killed by the watchdog: %r" % attempt
    # The watchdog starts just before the statement is sent, so the server's timer may
    # start a little later on a busy machine; it must not have fired long before.
    assert attempt["seconds"] > ACQUIRE / 2, attempt
    kills = _kills(mariadb)
    assert len(kills) == 1 and kills[0]["MYSQL_ERRNO"] == 0, kills
    assert_clean(quiesce_env, mariadb)


def test_control_without_the_watchdog_the_servers_timeout_ends_the_wait(mariadb, quiesce_env, request):
    attempt = _freeze_stuck(mariadb, quiesce_env, request, "backup-stage", env=sabotaged("no-watchdog"))
    assert attempt["MYSQL_ERRNO"] == 1205, attempt
    assert attempt["seconds"] >= 2.0 - 0.05, attempt
    assert _kills(mariadb) == []
    assert_clean(quiesce_env, mariadb)
