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

import pytest

from .checks import assert_clean, lines
from .prodhelpers import Background, wait_running_for


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
