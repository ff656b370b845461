"""A freeze that finds no server running leaves a history entry and a metric too.

It is no consistent snapshot of a database (the server was down), and no failure either
(freeze exits 0): the entry says "not-running", the last success stays the last success,
and the failure streak neither grows nor ends.
"""

import pytest

from .test_faults import _private_pid_namespace, _server_processes
from .test_history import _frozen_then_thawed, _history, _metrics, _wait_history


def test_freeze_with_no_server_running_is_recorded(mariadb, quiesce_env):
    env = quiesce_env
    assert _frozen_then_thawed(env).rc == 0
    (released,) = _wait_history(env, 1)
    success_at = _metrics(env)["quiesce_last_success_timestamp_seconds"]
    mariadb.kill()
    prefix = _private_pid_namespace()
    if prefix is None and _server_processes():
        pytest.skip("other mysqld/mariadbd processes run on this machine (%s) and no PID namespace can hide "
                    "them: 'no server running' cannot be staged" % _server_processes())
    result = env.run("freeze", "--caller", "vmware-tools", prefix=prefix or ())
    assert result.rc == 0, result
    entries = _history(env)
    assert [e["outcome"] for e in entries] == ["released", "not-running"], entries
    entry = entries[-1]
    assert entry["ok"] is False and entry["agent"] == "vmware-tools" and entry["consecutive_failures"] == 0
    assert "no MySQL/MariaDB server is running" in entry["reason"], entry
    assert entry["at"] >= entry["since"] > released["at"]
    metrics = _metrics(env)
    assert metrics['quiesce_last_outcome{outcome="not-running"}'] == 1 and metrics["quiesce_last_success"] == 0
    assert metrics["quiesce_last_success_timestamp_seconds"] == success_at
    assert metrics["quiesce_consecutive_failures"] == 0
    # Measured inside the command (the 1 ms rounding of the times is far below an interpreter's start).
    assert 0 <= metrics["quiesce_last_freeze_seconds"] < result.elapsed, (metrics, result)
    assert metrics['quiesce_agent_timeout_seconds{agent="vmware-tools"}'] == 900
    # The thaw after it finds nothing frozen and records nothing more.
    assert env.run("thaw").rc == 0 and len(_history(env)) == 2
