"""freeze and thaw against a real MariaDB under concurrent writers, through the command line
(python -m quiesce) exactly as the contract describes it."""

import json
import os
import subprocess
import sys
import time

import pytest

from . import servers
from .checks import (assert_clean, assert_frozen, assert_no_holder, assert_one_line,
                     assert_writable, check_position, parse_iso_z)
from .load import table_rows
from .runner import base_env, wait_for

# A commit acknowledged this soon after freeze returned may have been committed before the
# lock and only recorded late by its thread (a writer thread descheduled on a busy machine);
# any real leak shows up as many commits. Nothing is lost by the allowance: the binary log
# must not move from the position recorded under the lock until thaw (check_position and
# the binlog_status comparison below), which covers those first moments without a clock.
GRACE = 0.5
FROZEN_WINDOW = 1.5


@pytest.mark.parametrize("server_flavour, lock", servers.with_locks(), indirect=["server_flavour"])
def test_no_commit_between_freeze_and_thaw(mariadb, quiesce_env, writers, driver, lock):
    env = quiesce_env
    env.write_config(lock_method=lock)
    load = writers(engines=mariadb.ENGINES)
    load.wait_for_progress(20)

    t_freeze = time.monotonic()
    rc, out, err = env.run("freeze")
    t_frozen = time.monotonic()
    assert rc == 0, (rc, out, err)

    # Exit 0 means locked now: a new write must not get through.
    assert_frozen(mariadb)
    live = mariadb.binlog_status()
    rows_at_freeze = table_rows(mariadb, load.database, load.tables)
    status = env.status()
    assert status["frozen"] is True and status["holder_pid"] in env.holder_pids(), status
    assert [i["name"] for i in status["instances"]] == ["default"]
    assert status["instances"][0]["lock"] == lock

    # Every writer is now stuck in a commit that it sent before the lock or just after.
    wait_for(lambda: load.blocked_through(t_frozen + GRACE, time.monotonic()) >= set(load.tables),
             5, what="every writer to be blocked")
    time.sleep(FROZEN_WINDOW)           # the window under test, not a synchronisation
    rows_before_thaw = table_rows(mariadb, load.database, load.tables)
    assert mariadb.binlog_status() == live

    t_thaw = time.monotonic()
    rc, out, err = env.run("thaw")
    assert rc == 0, (rc, out, err)
    load.wait_for_progress(5, timeout=10)
    load.stop()
    assert not load.failures, load.failures[:3]

    leaked = load.commits_acked_between(t_frozen + GRACE, t_thaw)
    assert not leaked, "%d commits were acknowledged while frozen, e.g. %r" % (len(leaked), leaked[:3])
    assert rows_before_thaw == rows_at_freeze, "rows changed while frozen"
    assert load.blocked_through(t_frozen + GRACE, t_thaw) == set(load.tables)
    # Writers went on after thaw, in every engine.
    resumed = {c.table for c in load.commits_acked_between(t_thaw, float("inf"))}
    assert resumed == set(load.tables)
    # Everything acknowledged before freeze was called is in the frozen state.
    for table, keys in load.acked_keys(before=t_freeze).items():
        assert keys <= set(rows_at_freeze[table]), table
    assert set(rows_at_freeze["t_innodb"].values()) == {2}, "a transaction was cut in half"

    check_position(env.position(), mariadb, lock, live)
    assert_clean(env, mariadb)
    result = env.status()["last_result"]
    assert result and result["outcome"] == "released", result


def test_freeze_exit_0_leaves_holder_and_default_lock_is_backup_stage(mariadb, quiesce_env, driver):
    env = quiesce_env
    result = env.run("freeze")
    assert result.rc == 0, result
    assert result.elapsed < 10, result
    holders = env.holder_pids()
    assert len(holders) == 1, holders
    assert_frozen(mariadb)
    position = env.position()
    check_position(position, mariadb, "backup-stage")   # lock-method auto on MariaDB 10.11
    assert os.stat(env.position_file).st_size > 0
    status = env.status()
    assert status["frozen"] is True
    assert status["holder_pid"] == holders.pop()
    # The default lock-timeout (300 s), counted from the lock: both stamps come from the
    # holder's clock within the same second, so only a wrong deadline moves this.
    locked_at = parse_iso_z(position["locked_at"])
    assert abs((parse_iso_z(status["deadline"]) - locked_at).total_seconds() - 300) < 1, (status, position)
    assert parse_iso_z(status["since"]) <= locked_at, (status, position)
    assert status["instances"][0]["position_file"] == env.position_file
    assert env.run("thaw").rc == 0
    assert_clean(env, mariadb)


def test_second_caller_joins_the_held_lock_and_the_last_thaw_releases(mariadb, quiesce_env, driver):
    # Two agents in one backup (VMware Tools and a Veeam job script): the second freeze shares
    # the lock; the first thaw leaves it held for the other, whose thaw releases it.
    env = quiesce_env
    env.write_config(lock_timeout=60)
    assert env.run("freeze", "--caller", "veeam").rc == 0
    first = env.status()["holder_pid"]
    position = env.position()
    second = env.run("freeze", "--caller", "vmware-tools", timeout=60)
    assert second.rc == 0, second
    assert "joined" in assert_one_line(second)
    assert env.holder_pids() == {first}
    assert env.position() == position, "the joined freeze rewrote the position file"
    assert env.status()["callers"] == ["veeam", "vmware-tools"]
    assert_frozen(mariadb)
    inner = env.run("thaw", "--caller", "vmware-tools")
    assert inner.rc == 0, inner
    assert "stays held for veeam" in assert_one_line(inner)
    assert_frozen(mariadb)
    assert env.status()["callers"] == ["veeam"]
    outer = env.run("thaw", "--caller", "veeam")
    assert outer.rc == 0, outer
    assert "thawed" in assert_one_line(outer)
    assert_writable(mariadb)
    assert env.status()["last_result"]["thaws_pending"] == 0
    assert_clean(env, mariadb)


def test_thaw_twice_second_is_a_no_op(mariadb, quiesce_env):
    env = quiesce_env
    assert env.run("freeze").rc == 0
    first = env.run("thaw")
    assert first.rc == 0, first
    assert_writable(mariadb)
    second = env.run("thaw")
    assert second.rc == 0, second
    assert_one_line(second)
    assert_clean(env, mariadb)


@pytest.mark.parametrize("runtime_dir", ["exists", "missing"])
def test_thaw_without_freeze_is_a_one_line_no_op(mariadb, quiesce_env, runtime_dir):
    env = quiesce_env
    if runtime_dir == "missing":
        env.write_config(runtime_dir=os.path.join(env.root, "never-created"))
    result = env.run("thaw")
    assert result.rc == 0, result
    assert_one_line(result)
    assert result.elapsed < 10
    if runtime_dir == "missing":
        assert not os.path.exists(os.path.join(env.root, "never-created"))
    assert_no_holder(env)
    assert_writable(mariadb)


def test_concurrent_freezes_make_exactly_one_holder(mariadb, quiesce_env, driver):
    env = quiesce_env
    names = ["agent-a", "agent-b", "agent-c"]
    running = [env.start("freeze", "--caller", name) for name in names]
    results = [r.wait(90) for r in running]
    # One locks, the two others join that lock (three agents in one backup).
    assert [r.rc for r in results] == [0, 0, 0], results
    assert sum("joined" in r.stderr for r in results) == 2, results
    holders = env.holder_pids()
    assert len(holders) == 1, holders
    assert env.status()["holder_pid"] in holders
    assert sorted(env.status()["callers"]) == names
    for name in names[:2]:
        assert env.run("thaw", "--caller", name).rc == 0
        assert_frozen(mariadb)
    assert env.run("thaw", "--caller", names[2]).rc == 0
    assert_writable(mariadb)
    assert env.run("thaw", "--caller", names[0]).rc == 0     # nothing left for it: a no-op
    assert env.status()["last_result"]["thaws_pending"] == 0
    assert_clean(env, mariadb)


# ------------------------------------------------------------------- the hook interface

def _hook(env, *args, timeout=30.0):
    """Run the hook the way a hook runner does: pipes for stdout/stderr, read to EOF.

    A holder that kept the pipes open would make this wait until it exits (minutes), so
    the timeout is what fails the test then.
    """
    cmd = [sys.executable, "-c", "from quiesce.hooks import hook_main; hook_main()", *args]
    environment = base_env(env.tag)
    environment["QUIESCE_CONFIG"] = env.conf
    began = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=environment, cwd="/", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("hook %s did not return within %.0f s: the caller's pipes stayed open "
                             "(%r)" % (" ".join(args), timeout, exc))
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - began


def test_hook_freeze_with_pipes_returns_promptly(mariadb, quiesce_env, driver):
    env = quiesce_env
    rc, out, err, took = _hook(env, "freeze", timeout=20)
    assert rc == 0, (out, err)
    assert took < 10, took
    assert_frozen(mariadb)
    assert len(env.holder_pids()) == 1
    rc, out, err, took = _hook(env, "thaw", timeout=20)
    assert rc == 0, (out, err)
    assert_clean(env, mariadb)


def test_hook_action_is_case_insensitive_and_extra_args_are_ignored(mariadb, quiesce_env):
    env = quiesce_env
    rc, out, err, _ = _hook(env, "FREEZE", "")
    assert rc == 0, (out, err)
    assert_frozen(mariadb)
    rc, out, err, _ = _hook(env, "Thaw", "", "extra")
    assert rc == 0, (out, err)
    assert_writable(mariadb)
    # The same through `quiesce hook` with the options after the command word.
    result = env.run("hook", "fReEzE", "")
    assert result.rc == 0, result
    assert_frozen(mariadb)
    result = env.run("hook", "THAW", "snapshot-42")
    assert result.rc == 0, result
    assert_clean(env, mariadb)


def test_hook_unknown_action_is_a_usage_error(mariadb, quiesce_env):
    env = quiesce_env
    result = env.run("hook", "snapshot")
    assert result.rc == 2, result
    assert_one_line(result)
    assert_clean(env, mariadb)


def test_freezefail_exits_0_and_releases(mariadb, quiesce_env, driver):
    env = quiesce_env
    rc, out, err, _ = _hook(env, "freeze")
    assert rc == 0, (out, err)
    assert_frozen(mariadb)
    rc, out, err, _ = _hook(env, "freezeFail")
    assert rc == 0, (out, err)
    assert_clean(env, mariadb)
    # freezeFail with nothing frozen, in another spelling, is fine too.
    rc, out, err, _ = _hook(env, "freezefail", "")
    assert rc == 0, (out, err)


def test_freezefail_after_expiry_still_exits_0(mariadb, quiesce_env):
    env = quiesce_env
    env.write_config(lock_timeout=2, acquire_timeout=1)
    assert env.run("freeze").rc == 0
    assert_no_holder(env, timeout=10)       # the holder leaves at its deadline
    rc, out, err, _ = _hook(env, "freezeFail")
    assert rc == 0, (out, err)
    assert_clean(env, mariadb)


def test_entry_points_for_single_script_agents(mariadb, quiesce_env):
    """quiesce.hooks:freeze_main / thaw_main ignore their arguments."""
    env = quiesce_env
    environment = base_env(env.tag)
    environment["QUIESCE_CONFIG"] = env.conf
    for func, expect_frozen in (("freeze_main", True), ("thaw_main", False)):
        proc = subprocess.run([sys.executable, "-c", "from quiesce.hooks import %s; %s()" % (func, func),
                               "ignored", "--also-ignored"], stdin=subprocess.DEVNULL, capture_output=True,
                              env=environment, cwd="/", timeout=30)
        assert proc.returncode == 0, proc
        if expect_frozen:
            assert_frozen(mariadb)
    assert_clean(env, mariadb)


def test_status_json_shape(mariadb, quiesce_env):
    env = quiesce_env
    idle = env.status()
    for key in ("frozen", "since", "holder_pid", "deadline", "instances", "release_on_fs_thaw", "last_result"):
        assert key in idle, (key, idle)
    assert idle["frozen"] is False and idle["holder_pid"] is None and idle["last_result"] is None
    assert idle["release_on_fs_thaw"] is True
    assert env.run("freeze").rc == 0
    frozen = env.status()
    assert frozen["frozen"] is True and isinstance(frozen["holder_pid"], int)
    assert {"name", "lock", "position_file"} <= set(frozen["instances"][0])
    assert env.run("thaw").rc == 0
    done = env.status()
    assert done["frozen"] is False
    result = done["last_result"]
    assert result["outcome"] == "released"
    assert isinstance(result["held_ms"], (int, float)) and result["held_ms"] > 0
    assert result["at"].endswith("Z")
    # Options after the command word work as well as before it.
    later = env.run("status", "--config", env.conf, "--json")
    assert later.rc == 0 and json.loads(later.stdout)["frozen"] is False
