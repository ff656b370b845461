"""What quiesce promises where a lock is really held, on one server: a freeze that fails
after its lock statement leaves nothing locked, no holder and no position file, and is
recorded; and the password reaches no process's command line or environment.

The driver does not matter here (the holder's paths are the subject): PyMySQL, what
Debian and RHEL install, runs it.
"""

import json
import os
import signal

from .checks import assert_clean, assert_frozen

PASSWORD = "Secret-In-No-Argv-7731"


def _history(env):
    try:
        with open(env.history_file, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]
    except FileNotFoundError:
        return []


def test_binary_log_coordinates_refused_after_the_lock_exit_4_and_nothing_left(mariadb, quiesce_env):
    # RELOAD takes the lock; reading the coordinates (SHOW MASTER STATUS) needs BINLOG
    # MONITOR, which the account lacks: the failure comes with the lock already held.
    mariadb.create_user("qnobinlog", PASSWORD, grants=("RELOAD", "PROCESS"))
    env = quiesce_env
    env.write_config(user="qnobinlog", password=PASSWORD)
    result = env.run("freeze")
    assert result.rc == 4, result
    assert "cannot read binlog coordinates" in result.stderr and "BINLOG MONITOR" in result.stderr, result
    assert not os.path.exists(env.position_file), "a position file of a failed freeze"
    assert _history(env)[-1]["outcome"] == "failed"
    assert_clean(env, mariadb)


def test_position_file_that_cannot_be_written_exit_8_and_nothing_locked(mariadb, quiesce_env):
    env = quiesce_env
    blocked = os.path.join(env.root, "not-a-directory")
    with open(blocked, "w") as handle:
        handle.write("a file where the position file's directory should be\n")
    env.write_config(position_file=os.path.join(blocked, "position.json"))
    result = env.run("freeze")
    assert result.rc == 8, result
    assert "position" in result.stderr, result
    assert_clean(env, mariadb)


def _processes_carrying(env, secret):
    found = []
    for pid in env.process_pids():
        for name in ("cmdline", "environ"):
            try:
                with open("/proc/%d/%s" % (pid, name), "rb") as handle:
                    if secret.encode() in handle.read():
                        found.append((pid, name))
            except OSError:
                continue
    return found


def test_the_password_is_in_no_processs_argv_or_environment(mariadb, quiesce_env, tmp_path):
    mariadb.create_user("qsecret", PASSWORD)
    env = quiesce_env
    for source in ("config", "defaults-file"):
        if source == "config":
            env.write_config(user="qsecret", password=PASSWORD)
        else:
            option_file = tmp_path / "client.cnf"
            option_file.write_text("[client]\nuser = qsecret\npassword = %s\n" % PASSWORD)
            os.chmod(str(option_file), 0o600)
            env.write_config(user=None, password=None, defaults_file=str(option_file))
        # A freezing agent's caller: the filesystem probe's child runs too.
        assert env.run("freeze", "--caller", "vmware-tools").rc == 0
        assert_frozen(mariadb)
        pids = env.process_pids()
        assert pids, "no holder found to look at"
        assert _processes_carrying(env, PASSWORD) == [], (source, sorted(pids))
        assert env.run("thaw", "--caller", "vmware-tools").rc == 0
        assert_clean(env, mariadb)


def test_status_fails_while_the_holder_does_not_answer_and_the_lock_still_holds(mariadb, quiesce_env):
    env = quiesce_env
    assert env.run("freeze", "--caller", "veeam").rc == 0
    (pid,) = env.holder_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        stuck = env.status(rc=8)
        assert stuck["holder_responding"] is False and stuck["frozen"] is True, stuck
        assert_frozen(mariadb)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert env.status()["callers"] == ["veeam"]
    assert env.run("thaw", "--caller", "veeam").rc == 0
    assert_clean(env, mariadb)
