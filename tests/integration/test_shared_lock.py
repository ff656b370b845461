"""Several callers in one lock's window: counted, capped, and never a thaw that exits 0 for a
snapshot the lock may not have covered (quiesce/holder/sharing.py), against a real MariaDB.

The driver does not matter here (the holder's bookkeeping is the subject), so PyMySQL,
what Debian and RHEL install, runs it.
"""

import json
import os
import time

from .checks import assert_clean, assert_frozen, assert_one_line, assert_writable, parse_iso_z
from .runner import wait_for


def _freeze(env, caller, **kwargs):
    result = env.run("freeze", "--caller", caller, **kwargs)
    assert result.rc == 0, result
    return result


def _history(env):
    with open(env.history_file, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_check_cycle_refuses_inside_a_snapshot_and_the_lock_lasts(mariadb, quiesce_env):
    # Before: check --cycle joined the snapshot's lock and its thaw released it mid-snapshot,
    # and the snapshot's own thaw still exited 0.
    env = quiesce_env
    _freeze(env, "vmware-tools")
    check = env.run("check", "--cycle", timeout=120)
    assert check.rc == 7, check
    assert "cycle not run: the server is frozen now" in check.output
    assert_frozen(mariadb)
    assert env.run("thaw", "--caller", "vmware-tools").rc == 0
    assert_writable(mariadb)
    assert_clean(env, mariadb)


def test_one_callers_thaw_leaves_the_lock_to_the_other_then_the_last_releases(mariadb, quiesce_env):
    env = quiesce_env
    _freeze(env, "gce")
    _freeze(env, "nutanix")
    first = env.run("thaw", "--caller", "gce")
    assert first.rc == 0, first
    assert_frozen(mariadb)
    last = env.run("thaw", "--caller", "nutanix")
    assert last.rc == 0, last
    assert_writable(mariadb)
    entries = _history(env)
    assert [e["outcome"] for e in entries] == ["released"]
    assert entries[0]["callers"] == ["gce", "nutanix"]
    assert_clean(env, mariadb)


def test_a_repeated_freeze_by_the_same_caller_is_not_counted_twice(mariadb, quiesce_env):
    env = quiesce_env
    _freeze(env, "qemu-ga")
    retry = _freeze(env, "qemu-ga")
    assert "repeated freeze" in assert_one_line(retry)
    assert env.status()["callers"] == ["qemu-ga"]
    assert env.run("thaw", "--caller", "qemu-ga").rc == 0
    assert_writable(mariadb)
    assert_clean(env, mariadb)


def test_a_thaw_by_a_caller_that_did_not_freeze_leaves_the_lock_alone(mariadb, quiesce_env):
    env = quiesce_env
    _freeze(env, "vmware-tools")
    stranger = env.run("thaw", "--caller", "admin")
    assert stranger.rc == 0, stranger
    assert "admin did not freeze" in stranger.stderr and "thaw --all" in stranger.stderr
    assert_frozen(mariadb)
    assert env.run("thaw", "--caller", "vmware-tools").rc == 0
    assert_writable(mariadb)
    assert_clean(env, mariadb)


def test_thaw_all_releases_and_the_others_thaw_does_not_exit_0(mariadb, quiesce_env):
    env = quiesce_env
    _freeze(env, "veeam")
    _freeze(env, "vmware-tools")
    forced = env.run("thaw", "--all", "--caller", "admin")
    assert forced.rc == 0, forced
    assert "veeam, vmware-tools had not thawed" in forced.stderr
    assert_writable(mariadb)
    for name in ("vmware-tools", "veeam"):
        late = env.run("thaw", "--caller", name)
        assert late.rc == 6, late
        assert "admin's 'thaw --all'" in late.stderr
    assert env.run("thaw", "--caller", "veeam").rc == 0      # heard once: now nothing to report
    assert_clean(env, mariadb)


def test_a_join_moves_the_deadline_and_status_shows_it_until_the_cap(mariadb, quiesce_env):
    # Ordering, not latency: each assertion sits seconds away from the deadline it checks.
    env = quiesce_env
    env.write_config(lock_timeout=6, acquire_timeout=2)
    _freeze(env, "gce")
    locked_at = parse_iso_z(env.position()["locked_at"]).timestamp()
    first_deadline = parse_iso_z(env.status()["deadline"]).timestamp()
    assert abs(first_deadline - (locked_at + 6)) < 1.0
    wait_for(lambda: time.time() >= locked_at + 3, 10, what="3 s into the lock")
    _freeze(env, "nutanix")
    moved = parse_iso_z(env.status()["deadline"]).timestamp()
    assert moved >= locked_at + 8.5, (moved - locked_at)           # about 3 s + lock-timeout 6
    wait_for(lambda: time.time() >= locked_at + 7, 15, what="past the first deadline")
    assert_frozen(mariadb)
    # A third caller cannot push it past 2 x lock-timeout from the first lock.
    _freeze(env, "aws")
    capped = parse_iso_z(env.status()["deadline"]).timestamp()
    assert capped <= locked_at + 12 + 0.5, (capped - locked_at)
    wait_for(lambda: env.state() is None, 20, what="the holder to release at its deadline")
    assert time.time() >= locked_at + 11, "released before the capped deadline"
    assert_writable(mariadb)
    for name in ("gce", "nutanix", "aws"):
        late = env.run("thaw", "--caller", name)
        assert late.rc == 6 and "expired" in late.stderr, late
    assert_clean(env, mariadb)


def test_a_freeze_right_after_the_session_was_killed_does_not_join(mariadb, quiesce_env):
    # No pause between the KILL and the joining freeze: join checks the session itself.
    env = quiesce_env
    before = set(mariadb.connection_ids())
    _freeze(env, "gce")
    for conn_id in set(mariadb.connection_ids()) - before:
        mariadb.sql("KILL %d" % conn_id)
    joined = env.run("freeze", "--caller", "nutanix")
    assert joined.rc == 6 and "lost" in joined.stderr, joined
    assert env.run("thaw", "--caller", "gce").rc == 6
    assert_clean(env, mariadb)


def test_check_cycle_is_recorded_as_a_test_not_a_backup(mariadb, quiesce_env):
    env = quiesce_env
    _freeze(env, "vmware-tools")
    position = env.position()
    assert env.run("thaw", "--caller", "vmware-tools").rc == 0
    env.wait_no_holder()
    check = env.run("check", "--cycle", timeout=120)
    assert check.rc == 0, check
    env.wait_no_holder()
    assert env.position() == position, "the test cycle replaced the backup's coordinates"
    entries = _history(env)
    assert [(e["outcome"], bool(e.get("test"))) for e in entries] == [("released", False), ("released", True)]
    with open(env.metrics_file, encoding="utf-8") as handle:
        metrics = handle.read()
    backup_at = parse_iso_z(entries[0]["at"]).timestamp()
    assert "quiesce_last_success_timestamp_seconds %.3f" % backup_at in metrics or \
        "quiesce_last_success_timestamp_seconds %d" % backup_at in metrics, metrics
    assert_clean(env, mariadb)


def test_an_expired_lock_nobody_thawed_reaches_the_history_before_the_next_lock(mariadb, quiesce_env):
    # Before: the next freeze's holder overwrote the unheard result, and the expiry was lost.
    env = quiesce_env
    env.write_config(lock_timeout=2, acquire_timeout=1)
    _freeze(env, "gce")
    wait_for(lambda: env.state() is None, 20, what="the holder to expire")
    _freeze(env, "gce")                 # the agent's next snapshot: its old thaw never came
    assert env.run("thaw", "--caller", "gce").rc == 0
    env.wait_no_holder()
    assert [e["outcome"] for e in _history(env)] == ["expired", "released"]
    assert_clean(env, mariadb)


def test_a_holder_killed_by_thaw_leaves_a_record(mariadb, quiesce_env):
    env = quiesce_env
    env.write_config(connect_timeout=1)
    _freeze(env, "gce")
    holder = env.status()["holder_pid"]
    os.kill(holder, 19)                 # SIGSTOP: alive, never answers
    try:
        thaw = env.run("thaw", "--caller", "gce", timeout=120)
    finally:
        try:
            os.kill(holder, 18)
        except ProcessLookupError:
            pass
    assert thaw.rc == 8 and "killed" in thaw.stderr, thaw
    assert [e["outcome"] for e in _history(env)] == ["killed"]
    assert env.status()["last_result"]["outcome"] == "killed"
    assert_writable(mariadb)
    assert_clean(env, mariadb)
