"""What MySQL's FTWRL waits for, measured on MySQL 9.7: unlike MariaDB >= 10.4 (see
test_long_queries.py) it waits for a running plain SELECT, and every writer waits behind
it meanwhile. That is why long-query-type = auto counts SELECTs on MySQL (proven through
quiesce in test_faults.py's long-statement test). A FTWRL that timed out keeps the global
read lock until its session ends, so a failed attempt must end the session."""

import time

import pytest

from . import servers
from .prodhelpers import GLOBAL_READ_LOCK_WAIT, Background, wait_running_for, wait_state

pytestmark = pytest.mark.flavours(servers.MYSQL)


@pytest.mark.parametrize("engine", ["InnoDB", "MyISAM"])
def test_ftwrl_waits_for_a_running_select_and_stalls_writers(mariadb, engine, request):
    mariadb.sql("CREATE TABLE quiesce_probe.slow (id INT PRIMARY KEY) ENGINE=%s" % engine)
    mariadb.sql("INSERT INTO quiesce_probe.slow VALUES (1)")
    select = Background(mariadb, ["SELECT SLEEP(20) FROM slow"], database="quiesce_probe")
    request.addfinalizer(select.close)
    wait_running_for(mariadb, select.conn_id, 1.0)
    lock = Background(mariadb, ["SET SESSION lock_wait_timeout = 3", "FLUSH TABLES WITH READ LOCK"])
    request.addfinalizer(lock.close)
    wait_state(mariadb, lock.conn_id, "Waiting for table flush", timeout=5)
    # The global read lock is already taken while FTWRL waits: writers queue behind it.
    writer = Background(mariadb, ["INSERT INTO quiesce_probe.probe_innodb (at) VALUES (NOW(6))"])
    request.addfinalizer(writer.close)
    wait_state(mariadb, writer.conn_id, GLOBAL_READ_LOCK_WAIT, timeout=5)
    assert lock.wait(10), "FTWRL neither got the lock nor timed out"
    assert lock.errno == 1205, "FTWRL did not wait for the running SELECT: %r" % (lock.error,)
    # Measured: a FTWRL that gave up keeps the global read lock in its session; only ending
    # the session (as quiesce does with every failed attempt) lets the writers go.
    assert not writer.wait(0.5), "the writer went on while the failed FTWRL's session stood"
    lock.close()
    assert writer.wait(5) and writer.error is None, writer.error
    assert not select.done.is_set()
