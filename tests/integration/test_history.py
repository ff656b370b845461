"""History and metrics: every outcome is recorded once no filesystem can be frozen any more.

One server goes through success, failure, a lost lock, an expired lock and success again;
while frozen, neither the history nor the metrics file changes.

Driver: PyMySQL only. quiesce writes the history and metrics itself whatever the
driver; the lost and expired locks staged here run with both drivers in test_faults.py.
"""

import json
import os
import shutil
import signal
import time

from .checks import assert_clean, wait_writable
from .runner import wait_for
from .test_fsprobe_loop import _process_gone, db_on_loop, lab  # noqa: F401 (fixtures: a datadir on a loop ext4)


def _history(env):
    try:
        with open(env.history_file, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]
    except FileNotFoundError:
        return []


def _wait_history(env, count):
    """The holder records after it has answered thaw: wait (bounded) for the entry."""
    return wait_for(lambda: len(_history(env)) >= count and _history(env), 10,
                    what="%d history entries" % count)


def _metrics(env):
    values = {}
    with open(env.metrics_file, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
    return values


def _files(env):
    """What is on disk now: (content of the history, content of the metrics file)."""
    out = []
    for path in (env.history_file, env.metrics_file):
        try:
            with open(path, encoding="utf-8") as handle:
                out.append(handle.read())
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _frozen_then_thawed(env, while_frozen=None):
    before = _files(env)
    assert env.run("freeze").rc == 0
    if while_frozen:
        while_frozen()
    assert _files(env) == before, "the history or metrics changed while frozen"
    return env.run("thaw")


def test_history_and_metrics_after_success_failure_lost_and_expired(mariadb, quiesce_env, tmp_path):
    env = quiesce_env
    # 1. Success, through a hook runner named like VMware Tools' (a copy of bash).
    runner = str(tmp_path / "vmtoolsd")
    shutil.copy("/bin/bash", runner)
    before = _files(env)
    hook_runner = [runner, "-c", '"$@"; true', "hook"]
    assert env.run("freeze", prefix=hook_runner).rc == 0
    assert _files(env) == before, "written while frozen"
    # Thawed by the same runner: a thaw from another caller leaves VMware Tools' lock held.
    assert env.run("thaw", prefix=hook_runner).rc == 0
    (entry,) = _wait_history(env, 1)
    assert entry["outcome"] == "released" and entry["ok"] is True and entry["agent"] == "vmware-tools"
    assert entry["lock"] == ["backup-stage"] and entry["held_ms"] > 0 and entry["consecutive_failures"] == 0
    metrics = _metrics(env)
    assert metrics['quiesce_last_outcome{outcome="released"}'] == 1 and metrics["quiesce_last_success"] == 1
    assert metrics["quiesce_consecutive_failures"] == 0
    assert metrics["quiesce_lock_held_seconds"] == round(entry["held_ms"] / 1000.0, 3)
    assert abs(metrics["quiesce_last_run_timestamp_seconds"] - time.time()) < 60
    assert metrics["quiesce_last_success_timestamp_seconds"] == metrics["quiesce_last_run_timestamp_seconds"]
    assert oct(os.stat(env.metrics_file).st_mode & 0o777) == "0o644"

    # 2. A failed freeze (the socket is wrong) is recorded by the holder before freeze returns.
    failed = env.run("freeze", "--socket", str(tmp_path / "no.sock"))
    assert failed.rc == 3, failed
    entry = _history(env)[-1]
    assert entry["outcome"] == "failed" and "no.sock" in entry["errors"][0] and entry["consecutive_failures"] == 1

    # 3. The lock lost: the server kills the holder's session while frozen.
    sessions = set(mariadb.connection_ids())

    def kill_holder_sessions():
        for conn_id in set(mariadb.connection_ids()) - sessions:
            mariadb.sql("KILL %d" % conn_id)
        wait_writable(mariadb, 10)
    lost = _frozen_then_thawed(env, kill_holder_sessions)
    assert lost.rc == 6, lost
    entry = _wait_history(env, 3)[-1]
    assert entry["outcome"] == "lost" and entry["consecutive_failures"] == 2 and "closed" in entry["reason"]
    assert _metrics(env)["quiesce_last_success"] == 0 and _metrics(env)["quiesce_consecutive_failures"] == 2

    # 4. Expired: the holder cannot know whether the filesystems are still frozen at its
    # deadline, so it leaves the record to thaw.
    env.write_config(lock_timeout=1.5, acquire_timeout=1)

    def outlive_the_deadline():
        wait_for(lambda: not env.holder_pids(), 15, what="the holder to release at its deadline")
    expired = _frozen_then_thawed(env, outlive_the_deadline)
    assert expired.rc == 6, expired
    entry = _history(env)[-1]
    assert entry["outcome"] == "expired" and entry["consecutive_failures"] == 3
    assert _metrics(env)['quiesce_last_outcome{outcome="expired"}'] == 1
    assert env.run("thaw").rc == 0 and len(_history(env)) == 4, "a second thaw records nothing more"

    # 5. Success again ends the streak; status --json shows the history.
    env.write_config(lock_timeout=300, acquire_timeout=5)
    assert _frozen_then_thawed(env).rc == 0
    _wait_history(env, 5)
    status = env.status()
    assert [e["outcome"] for e in status["history"]] == ["released", "failed", "lost", "expired", "released"]
    assert status["history"][-1]["consecutive_failures"] == 0 and _metrics(env)["quiesce_consecutive_failures"] == 0
    text = env.run("status")
    assert "history: ok FAILED LOST EXPIRED ok (oldest first); 0 failure(s) in a row" in text.stdout, text
    assert_clean(env, mariadb)


def test_holder_that_died_is_recorded_once(mariadb, quiesce_env, tmp_path):
    env = quiesce_env
    assert env.run("freeze").rc == 0
    os.kill(env.status()["holder_pid"], 9)
    wait_writable(mariadb, 10)
    assert not _history(env), "nothing may be written while frozen, nor by a holder killed then"
    # The next freeze finds the dead holder and records the loss (then fails itself); the
    # thaw after reports the loss, and records nothing twice.
    assert env.run("freeze", "--socket", str(tmp_path / "no.sock")).rc == 3
    assert [e["outcome"] for e in _history(env)] == ["lost", "failed"]
    assert env.run("thaw").rc == 6
    assert [e["outcome"] for e in _history(env)] == ["lost", "failed"]
    assert _history(env)[-1]["consecutive_failures"] == 2


def test_nothing_written_while_the_filesystem_is_really_frozen(db_on_loop):
    """History and metrics on the filesystem that is frozen, like /var/lib/quiesce next to
    /var/lib/mysql: the holder records the release once the filesystem has thawed, and
    leaves an expiry during the freeze to thaw, instead of blocking on the frozen disk."""
    fs, server, make = db_on_loop
    state = os.path.join(fs.mnt, "state")
    os.makedirs(state, mode=0o700)
    env = make(position_file=os.path.join(state, "position.json"), metrics_file=os.path.join(state, "q.prom"))
    env.history_file, env.metrics_file = os.path.join(state, "history.jsonl"), os.path.join(state, "q.prom")
    assert env.run("freeze", "--caller", "vmware-tools").rc == 0
    fs.freeze()
    time.sleep(0.5)
    assert _files(env) == (None, None)
    fs.thaw()
    (entry,) = _wait_history(env, 1)
    assert entry["outcome"] == "released-at-fs-thaw" and _metrics(env)["quiesce_last_success"] == 1
    assert env.run("thaw", "--caller", "vmware-tools").rc == 0

    env.write_config(lock_timeout=2, acquire_timeout=1)
    assert env.run("freeze", "--caller", "vmware-tools").rc == 0
    holder = env.state()["holder_pid"]
    before = _files(env)
    fs.freeze()
    wait_for(lambda: _process_gone(holder), 8, what="the holder to expire and exit while frozen")
    fs.thaw()
    assert _files(env) == before, "the holder recorded an outcome while the filesystem could be frozen"
    assert env.run("thaw", "--caller", "vmware-tools").rc == 6
    assert [e["outcome"] for e in _history(env)] == ["released-at-fs-thaw", "expired"]


def test_a_signal_and_a_lost_session_while_the_filesystem_is_really_frozen(db_on_loop):
    """The holder's state and records on the frozen filesystem: a SIGTERM ends it during the
    freeze without a write there (thaw then reports the loss), and a session killed during
    the freeze is remembered without a write and reported once the filesystem has thawed."""
    fs, server, make = db_on_loop
    state = os.path.join(fs.mnt, "state")
    os.makedirs(state, mode=0o700)
    env = make(position_file=os.path.join(state, "position.json"), metrics_file=os.path.join(state, "q.prom"))
    env.history_file, env.metrics_file = os.path.join(state, "history.jsonl"), os.path.join(state, "q.prom")

    assert env.run("freeze", "--caller", "vmware-tools").rc == 0
    holder = env.state()["holder_pid"]
    before = _files(env)
    fs.freeze()
    try:
        os.kill(holder, signal.SIGTERM)
        # Ends although its own directory is frozen: it writes nothing on its way out.
        wait_for(lambda: _process_gone(holder), 10, what="the holder to end on SIGTERM while frozen")
        assert _files(env) == before
    finally:
        fs.thaw()
    thawed = env.run("thaw", "--caller", "vmware-tools")
    assert thawed.rc == 6 and "signal" in thawed.stderr, thawed
    assert [e["outcome"] for e in _history(env)] == ["lost"]

    assert env.run("freeze", "--caller", "vmware-tools").rc == 0
    holder = env.state()["holder_pid"]
    before = _files(env)
    fs.freeze()
    try:
        sessions = server.query("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                                "AND COMMAND = 'Sleep'")
        assert sessions, "no holder session to kill"
        for (session,) in sessions:
            server.sql("KILL %d" % int(session))
        time.sleep(0.5)
        assert _files(env) == before, "the holder wrote while the filesystem was frozen"
        assert not _process_gone(holder)
    finally:
        fs.thaw()
    # A loss may have been under way while frozen: thaw reports and records it.
    thawed = env.run("thaw", "--caller", "vmware-tools")
    assert thawed.rc == 6, thawed
    assert [e["outcome"] for e in _history(env)] == ["lost", "lost"]
