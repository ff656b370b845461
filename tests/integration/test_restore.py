"""After the snapshot: verify a server booted from a copy, turn it into a replica of the
original, replay the original's binlogs to a point in time.

Copies are made as in test_snapshot_consistency.py (the server paused while its datadir is
copied, between freeze and thaw) and booted with crash recovery, like a restored VM.
"""

import os
import re
import shlex
import socket
import subprocess

import pytest

from .load import table_rows
from .runner import QuiesceEnv, wait_for

ENGINES = ("InnoDB", "MyISAM", "Aria")


def _frozen_copies(mariadb, env, load, tmp_path, names=("snapshot",)):
    """Copies of the datadir made while frozen under write load; the position file's path."""
    load.wait_for_progress(20)
    result = env.run("freeze")
    assert result.rc == 0, result
    try:
        dests = []
        for name in names:
            dest = tmp_path / name
            mariadb.copy_datadir(str(dest))
            dests.append(str(dest))
    finally:
        assert env.run("thaw").rc == 0
    return dests


def _boot(request, server, dest):
    copy = server.boot_copy(dest)
    request.addfinalizer(copy.cleanup)
    return copy


def _env_for(request, server, position_file, **settings):
    env = QuiesceEnv(server, driver=None, position_file=position_file, **settings)
    request.addfinalizer(env.cleanup)
    return env


def _lines(result, word):
    return [line for line in result.stdout.splitlines() if line.startswith(word)]


def test_verify_passes_on_a_frozen_copy_and_fails_on_unlocked_and_truncated_ones(
        request, mariadb, quiesce_env, writers, tmp_path):
    load = writers(engines=ENGINES)
    good, truncated = _frozen_copies(mariadb, quiesce_env, load, tmp_path, ("good", "truncated"))
    position = quiesce_env.position()
    # The identity verify compares: what the position file says about the server.
    assert position["server_id"] == 1 and position["server_uuid"] is None
    assert position["hostname"] == socket.gethostname() and position["galera"] is None
    # Control: a copy of the same server made after thaw, without the lock, writers still going.
    load.wait_for_progress(10)
    unlocked = str(tmp_path / "unlocked")
    mariadb.copy_datadir(unlocked)
    load.stop()

    # Cut the last three transactions off the truncated copy's binlog, at an event boundary.
    events = mariadb.query("SHOW BINLOG EVENTS IN %s", (position["binlog_file"],), as_dict=True)
    boundaries = [int(e["End_log_pos"]) for e in events
                  if e["Event_type"] in ("Xid", "Query") and int(e["End_log_pos"]) < position["binlog_position"]]
    os.truncate(os.path.join(truncated, position["binlog_file"]), boundaries[-3])

    results = {}
    for name, dest in (("good", good), ("unlocked", unlocked), ("truncated", truncated)):
        copy = _boot(request, mariadb, dest)
        results[name] = _env_for(request, copy, quiesce_env.position_file).run("verify", timeout=120)

    ok = results["good"]
    assert ok.rc == 0, ok
    assert not _lines(ok, "FAIL"), ok
    said = ok.stdout
    assert "binlog ends exactly at the recorded %s:%s" % (position["binlog_file"], position["binlog_position"]) in said
    assert "GTID state gtid_binlog_pos = %r, as recorded" % position["gtid"] in said
    assert "no errors logged since the server started" in said
    assert re.search(r"ok +\d+ MyISAM/Aria table\(s\) check clean", said), said

    bad = results["unlocked"]
    assert bad.rc == 9, bad
    assert "more than the recorded position" in bad.stdout and "GTID state gtid_binlog_pos is" in bad.stdout, bad
    assert "CHECK TABLE ... QUICK found" in bad.stdout, bad

    cut = results["truncated"]
    assert cut.rc == 9, cut
    assert "short of the recorded position" in cut.stdout and "GTID state" in cut.stdout, cut


def test_verify_says_when_the_position_file_is_missing_or_foreign(request, mariadb, mariadb_factory, quiesce_env):
    assert quiesce_env.run("freeze").rc == 0
    assert quiesce_env.run("thaw").rc == 0
    other = mariadb_factory(name="other", server_id=7)
    foreign = _env_for(request, other, quiesce_env.position_file).run("verify", "--skip-table-check")
    assert foreign.rc == 9, foreign
    assert "the position file is from another server: server_id 1 recorded, this server has 7" in foreign.stdout

    missing = str(quiesce_env.position_file) + ".absent"
    result = quiesce_env.run("verify", "--position-file", missing)
    assert result.rc == 9, result
    assert _lines(result, "FAIL") == ["FAIL  position file %s does not exist, so there is nothing to compare with: "
                                      "was this server restored from a snapshot taken by quiesce? fix: pass the "
                                      "file with --position-file" % missing], result
