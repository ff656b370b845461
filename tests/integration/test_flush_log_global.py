"""innodb_flush_log_at_trx_commit, raised to 1 by the holder for its flush under the lock,
comes back to the server's own value: after a normal freeze and thaw, and after a holder
that died while it was changed (the next command's recovery puts it back)."""

import json
import os
import signal

import pytest

from .runner import wait_for

GLOBAL = "innodb_flush_log_at_trx_commit"


def _value(server):
    return int(server.query("SELECT @@GLOBAL.%s AS v" % GLOBAL, as_dict=True)[0]["v"])


@pytest.fixture
def relaxed(mariadb):
    """The server runs with innodb_flush_log_at_trx_commit = 2 (the value quiesce raises)."""
    before = _value(mariadb)
    mariadb.sql("SET GLOBAL %s = 2" % GLOBAL)
    yield mariadb
    mariadb.sql("SET GLOBAL %s = %d" % (GLOBAL, before))


def test_a_freeze_puts_the_setting_back(relaxed, quiesce_env):
    env = quiesce_env
    assert env.run("freeze").rc == 0
    assert _value(relaxed) == 2, "the holder left the setting changed while it holds the lock"
    assert not os.path.exists(os.path.join(env.runtime_dir, "globals.json"))
    assert env.run("thaw").rc == 0
    assert _value(relaxed) == 2


def test_recovery_puts_back_what_a_killed_holder_left(relaxed, quiesce_env):
    # A holder SIGKILLed between raising the setting and putting it back leaves exactly
    # this: its record of the old value (written before the change) and the server at 1.
    # The window is a single FLUSH statement, too short to hit with a signal on request,
    # so the kill is real and the two traces it leaves are staged as that holder made them.
    env = quiesce_env
    assert env.run("freeze").rc == 0
    holder = env.state()
    record = {"holder_pid": holder["holder_pid"], "holder_start_ticks": holder["holder_start_ticks"],
              "instances": {holder["instances"][0]["name"]: {GLOBAL: 2}}}
    path = os.path.join(env.runtime_dir, "globals.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    relaxed.sql("SET GLOBAL %s = 1" % GLOBAL)
    os.kill(holder["holder_pid"], signal.SIGKILL)
    wait_for(lambda: not env.holder_pids(), 10, what="the killed holder to be gone")
    r = env.run("thaw")
    assert r.rc == 6, r          # the lock was lost with the holder
    assert _value(relaxed) == 2, "recovery did not put %s back (%s)" % (GLOBAL, r)
    assert GLOBAL in r.stderr, r
    assert not os.path.exists(path)
