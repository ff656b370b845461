"""quiesce run -- CMD: the lock held while one command runs, on a real MariaDB.

The command's exit status comes back; a command that outlasts the lock is stopped at the
deadline and run exits 6; signals to quiesce reach the command; a freeze that fails runs
nothing. The storage snapshots themselves (btrfs, and --freeze-fs under a copy of a loop
disk) are in test_run_snapshots.py.

Driver: PyMySQL only; run takes the lock through freeze's own code, which the driver tests
of test_freeze_thaw.py cover with both.
"""

import os
import signal
import textwrap

from .checks import assert_clean, assert_frozen, assert_writable
from .runner import wait_for

SCRIPT = textwrap.dedent("""\
    #!/bin/sh
    # $1: a directory for the markers; exits with $2 once "$1/go" exists.
    trap 'touch "$1/got-term"; exit 0' TERM
    touch "$1/started"
    while [ ! -e "$1/go" ]; do sleep 0.05; done
    exit "$2"
    """)


def _script(tmp_path):
    path = tmp_path / "snapshot.sh"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    markers = tmp_path / "markers"
    markers.mkdir()
    return str(path), markers


def test_the_lock_holds_while_the_command_runs_and_its_status_comes_back(mariadb, quiesce_env, tmp_path):
    env = quiesce_env
    script, markers = _script(tmp_path)
    mariadb.create_probe_tables()
    running = env.start("run", "--", script, str(markers), "3")
    wait_for(lambda: (markers / "started").exists(), 60, what="the command to start")
    assert_frozen(mariadb)
    position = env.position()
    assert os.path.realpath(mariadb.datadir) in position["directories"], position
    assert env.state()["callers"], env.state()
    (markers / "go").touch()
    result = running.wait(60)
    assert result.rc == 3, result            # the command's own status
    assert_writable(mariadb)
    assert_clean(env, mariadb)
    # The freeze and its release are recorded like any other.
    assert env.status()["last_result"]["outcome"] == "released"


def test_a_command_that_outlasts_the_lock_is_stopped_and_run_exits_6(mariadb, quiesce_env, tmp_path):
    env = quiesce_env
    env.write_config(lock_timeout=4, acquire_timeout=1)
    script, markers = _script(tmp_path)
    result = env.run("run", "--", script, str(markers), "0", timeout=60)
    assert (markers / "got-term").exists(), "the command was not told to stop"
    assert result.rc == 6, result
    assert "did not end before the lock's deadline" in result.stderr, result
    assert_clean(env, mariadb)


def test_a_signal_to_run_reaches_the_command_and_the_lock_is_released(mariadb, quiesce_env, tmp_path):
    env = quiesce_env
    script, markers = _script(tmp_path)
    mariadb.create_probe_tables()
    running = env.start("run", "--", script, str(markers), "0")
    wait_for(lambda: (markers / "started").exists(), 60, what="the command to start")
    assert_frozen(mariadb)
    os.kill(running.proc.pid, signal.SIGTERM)
    result = running.wait(60)
    assert (markers / "got-term").exists(), "SIGTERM did not reach the command"
    assert result.rc == 0, result            # it exited 0 on its TERM, and the lock lasted
    assert_writable(mariadb)
    assert_clean(env, mariadb)


def test_a_freeze_that_fails_runs_nothing(mariadb, quiesce_env, tmp_path):
    env = quiesce_env
    env.write_config(user="no_such_account")
    script, markers = _script(tmp_path)
    (markers / "go").touch()
    result = env.run("run", "--", script, str(markers), "0")
    assert result.rc == 3, result            # freeze's own exit status: cannot connect
    assert not (markers / "started").exists(), "the command ran without the lock"
    assert_clean(env, mariadb)


def test_a_command_that_cannot_be_started_releases_the_lock(mariadb, quiesce_env, tmp_path):
    env = quiesce_env
    result = env.run("run", "--", str(tmp_path / "no-such-command"))
    assert result.rc == 2, result
    assert "cannot run" in result.stderr and "no-such-command" in result.stderr, result
    assert_clean(env, mariadb)


def test_run_needs_its_command_after_a_double_dash(quiesce_env):
    result = quiesce_env.run("run", "true")
    assert result.rc == 2 and "after --" in result.stderr, result
