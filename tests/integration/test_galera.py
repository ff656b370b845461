"""Galera: a frozen node must not stall its cluster (three MariaDB 10.11 nodes with
galera-4 on loopback, see galera.py).

The server desyncs and pauses a node for BACKUP STAGE and for FTWRL, so the other nodes
keep committing while it is frozen; a plain LOCK TABLES ... READ does not desync, and
the control shows it stalling the whole cluster through flow control. quiesce refuses a
node that is not Synced and records the cluster position (state UUID and seqno).
One cluster serves the whole module (it takes ~10 s to form); each test leaves it Synced.

Driver: PyMySQL only. Desyncing and pausing the node are the server's doing, the
statements are those every freeze sends (with both drivers elsewhere), and the cluster
is slow to form.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

from .checks import assert_clean
from .galera import Cluster
from .load import Writers
from .runner import QuiesceEnv, wait_for

FROZEN = 3.0          # seconds a node stays frozen
# A commit gap on another node longer than this is a stalled cluster. Halfway between what
# each test expects: a stalled cluster stops for about FROZEN (the control measures it), a
# desynced node stops nobody, and on a busy machine a commit is late by far less than this.
STALL = FROZEN / 2


@pytest.fixture(scope="module")
def cluster():
    nodes = Cluster(3)
    try:
        first = nodes.nodes[0]
        first.create_probe_tables()       # DDL reaches every node
        yield nodes
    finally:
        nodes.cleanup()


@pytest.fixture
def frozen_node(cluster, request):
    """(writer node, node to freeze, its QuiesceEnv); the cluster Synced again afterwards."""
    writer, _, node = cluster.nodes
    env = QuiesceEnv(node, driver=None)

    def finish():
        report = env.cleanup()
        assert not report["holders"], report
        for member in cluster.nodes:
            member.wait_synced(3, timeout=30)
    request.addfinalizer(finish)
    return writer, node, env


def _load(server, request):
    load = Writers(server, database="galera_load", engines=("InnoDB",), interval=0.01, max_seconds=60)
    request.addfinalizer(lambda: load.stop(timeout=15))
    load.start()
    load.wait_for_progress(10)
    return load


def _longest_gap(load, start, end):
    acked = sorted(c.acked for c in load.commits_acked_between(start, end))
    return max((b - a for a, b in zip([start] + acked, acked + [end])), default=end - start)


@pytest.mark.parametrize("lock", ["backup-stage", "ftwrl"])
def test_frozen_node_desyncs_and_the_cluster_keeps_committing(frozen_node, lock, request):
    writer, node, env = frozen_node
    env.write_config(lock_method=lock)
    load = _load(writer, request)
    result = env.run("freeze")
    assert result.rc == 0, result
    began = time.monotonic()
    try:
        state_frozen = node.wsrep()["wsrep_local_state_comment"]
        time.sleep(FROZEN)
        position = env.position()
    finally:
        thawed = env.run("thaw")
        ended = time.monotonic()
    assert thawed.rc == 0, thawed
    assert state_frozen == "Donor/Desynced"
    gap = _longest_gap(load, began, ended)
    assert gap < STALL, "the cluster stalled %.2f s while one node was frozen" % gap
    synced = node.wait_synced(3, timeout=30)
    status = writer.wsrep()
    galera = position["galera"]
    assert galera["uuid"] == status["wsrep_cluster_state_uuid"]
    # The frozen node applied nothing while frozen; it has caught up since.
    assert 0 < galera["seqno"] < int(synced["wsrep_last_committed"])
    assert_clean(env, node)


def test_control_lock_tables_stalls_the_whole_cluster(cluster, request):
    """What the server does not desync for: flow control stalls every node behind it."""
    writer, _, node = cluster.nodes
    load = _load(writer, request)
    conn = node.connect(database="galera_load")
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLES t_innodb READ")
            began = time.monotonic()
            time.sleep(FROZEN)
            ended = time.monotonic()
            cur.execute("UNLOCK TABLES")
    finally:
        conn.close()
    gap = _longest_gap(load, began, ended)
    assert gap > FROZEN - STALL, "LOCK TABLES stalled the cluster only %.2f s: the check above proves nothing" % gap
    node.wait_synced(3, timeout=30)


def test_node_not_synced_is_refused(frozen_node):
    _, node, env = frozen_node
    node.sql("SET GLOBAL wsrep_desync = ON")
    try:
        wait_for(lambda: node.wsrep()["wsrep_local_state_comment"] == "Donor/Desynced", 10,
                 what="the node to desync")
        result = env.run("freeze")
    finally:
        node.sql("SET GLOBAL wsrep_desync = OFF")
    assert result.rc == 5, result
    assert "Donor/Desynced, not Synced" in result.stderr and "fix:" in result.stderr, result
    assert not env.status()["frozen"]
    node.wait_synced(3, timeout=30)
    assert_clean(env, node)


def test_node_restored_from_the_snapshot_rejoins_by_ist(frozen_node, tmp_path):
    """The snapshot's grastate.dat holds the recorded seqno (the server saves it when it
    pauses the node), so a node restored from it asks for the write-sets after that seqno
    and gets them by incremental state transfer, not a full copy."""
    writer, node, env = frozen_node
    writer.sql("CREATE TABLE IF NOT EXISTS quiesce_probe.g (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB")
    assert env.run("freeze").rc == 0
    try:
        seqno = env.position()["galera"]["seqno"]
        snapshot = str(tmp_path / "snapshot")
        node.copy_datadir(snapshot)
    finally:
        assert env.run("thaw").rc == 0
    for _ in range(20):
        writer.sql("INSERT INTO quiesce_probe.g VALUES ()")
    rows = writer.value("SELECT COUNT(*) FROM quiesce_probe.g")
    with open(os.path.join(snapshot, "grastate.dat")) as handle:
        assert re.search(r"^seqno:\s+%d$" % seqno, handle.read(), flags=re.M)
    # On the original node, which has run since before the snapshot, the plan is refused.
    refused = env.run("restore-plan", "--galera")
    assert refused.rc == 9 and "before the snapshot was taken" in refused.stderr, refused

    node.kill()                                   # the VM is restored from the snapshot
    shutil.rmtree(node.datadir)
    shutil.move(snapshot, node.datadir)
    os.unlink(os.path.join(node.datadir, "grastate.dat"))
    # What restore-plan --galera prints there, the node still stopped: the command that writes that saved state.
    plan = env.run("restore-plan", "--galera")
    assert plan.rc == 0, plan
    assert "does not answer" in plan.stderr and "not compared with the position file" in plan.stderr, plan
    script = plan.stdout[plan.stdout.index("cat > "):plan.stdout.index("\n# Check:")]
    assert "seqno:   %d" % seqno in script and os.path.join(node.datadir, "grastate.dat") in script, script
    subprocess.run(["sh", "-c", script], check=True, timeout=30)     # the plan's step, as printed
    log_from = os.path.getsize(node.error_log)
    node.start(timeout=120)
    node.wait_synced(3, timeout=60)
    with open(node.error_log, encoding="utf-8", errors="replace") as handle:
        log = handle.read()[log_from:]
    assert re.search(r"Receiving IST: \d+ writesets, seqnos %d-" % (seqno + 1), log), log[-3000:]
    assert "IST received" in log
    assert node.value("SELECT COUNT(*) FROM quiesce_probe.g") == rows


def test_check_says_a_galera_node_needs_the_commit_block(frozen_node):
    _, _node, env = frozen_node
    result = env.run("check")
    text = result.stdout + result.stderr
    assert "snapshots need the commit block: a Galera node pauses at BACKUP STAGE BLOCK_DDL already" in text, text
