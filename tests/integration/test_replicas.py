"""Freezing a replica, on a real two-server replication set-up with GTIDs (MariaDB:
slave_pos; MySQL: auto-position), on every server kind.

quiesce records the replica's source coordinates and GTID state in the position file,
stops the SQL (applier) threads before locking when told to (stop-replica = always, or
auto with a parallel applier), and starts them again after thaw, after every failed
freeze and at the holder's deadline: a freeze must never leave replication stopped.
"""

import os
import signal
import time

import pytest

from . import servers
from .prodhelpers import Background, instance_section, no_lock_held, sql_thread_running
from .runner import QuiesceEnv

pytestmark = pytest.mark.flavours()


@pytest.fixture
def replica_pair(mariadb, replica_of, request):
    """make(parallel_threads, **settings) -> (replica, QuiesceEnv for the replica); undone at teardown."""
    def make(parallel_threads=4, **settings):
        replica = replica_of(mariadb, parallel_threads=parallel_threads)
        env = QuiesceEnv(replica, driver=None, **settings)

        def finish():
            report = env.cleanup()
            assert not report["holders"], "quiesce left processes on the replica: %s" % report
            if replica.running:
                assert replica.try_write(1.0) is not None, "the replica was left locked"
        request.addfinalizer(finish)
        return replica, env
    return make


def _primary_load(writers):
    load = writers(engines=("InnoDB",), interval=0.005)
    load.wait_for_progress(5)
    return load


# stop-replica=auto with a serial and a parallel applier: test_snapshot_consistency.py.
@pytest.mark.parametrize("parallel, stop_replica, stopped", [(0, "always", True), (4, "never", False)])
def test_replica_coordinates_recorded_and_applier_restarted(parallel, stop_replica, stopped, mariadb,
                                                            replica_pair, writers):
    replica, env = replica_pair(parallel, stop_replica=stop_replica)
    load = _primary_load(writers)
    result = env.run("freeze")
    assert result.rc == 0, result
    try:
        position = env.position()
        # While frozen the replica applies nothing: its GTID state stays where it was recorded.
        gtid_now = replica.value(replica.REPLICA_GTID)
        load.wait_for_progress(20)
        assert replica.value(replica.REPLICA_GTID) == gtid_now
        sql_state = sql_thread_running(replica)
        io_state = replica.replica_status()["Slave_IO_Running"]
    finally:
        thawed = env.run("thaw")
        # Read at once, with no wait: the holder restarts the applier before it answers thaw.
        sql_after_thaw = sql_thread_running(replica)
    assert thawed.rc == 0, thawed
    assert sql_after_thaw == "Yes", thawed

    assert position["replica_stopped"] is stopped
    assert sql_state == ("No" if stopped else "Yes")
    assert io_state == "Yes", "only the SQL thread is to be stopped"
    channels = position["replica"]
    assert isinstance(channels, list) and len(channels) == 1, position
    channel = channels[0]
    assert channel["connection_name"] == ""
    assert channel["source_host"] == "127.0.0.1" and channel["source_port"] == mariadb.port
    assert channel["gtid"] == gtid_now
    assert channel["source_log_file"] == mariadb.binlog_status()["file"]
    assert isinstance(channel["source_log_position"], int) and channel["source_log_position"] > 0

    # Replication catches up.
    load.stop()
    replica.wait_caught_up(mariadb, timeout=20)


def test_replica_restarted_after_a_failed_freeze(replica_pair):
    replica, env = replica_pair(4, stop_replica="always", acquire_timeout=1)
    replica.sql("CREATE TABLE quiesce_probe.local_only (a INT) ENGINE=MyISAM")
    blocker = Background(replica, ["LOCK TABLES local_only WRITE"], database="quiesce_probe")
    try:
        assert blocker.wait(5) and blocker.error is None, blocker.error
        result = env.run("freeze")
        assert result.rc == 5, result
        assert sql_thread_running(replica) == "Yes", "a failed freeze left replication stopped"
    finally:
        blocker.close()
    assert env.wait_no_holder(5) == set()
    assert no_lock_held(replica)


def test_replica_restarted_at_the_deadline(mariadb, replica_pair, writers):
    replica, env = replica_pair(4, stop_replica="always", lock_timeout=2, acquire_timeout=1)
    load = _primary_load(writers)
    result = env.run("freeze")
    assert result.rc == 0, result
    frozen_at = time.monotonic()
    assert sql_thread_running(replica) == "No"
    # No thaw comes: the holder releases at its deadline and restarts the applier before it ends.
    assert env.wait_no_holder(15) == set()
    assert sql_thread_running(replica) == "Yes"
    assert time.monotonic() - frozen_at >= 1.5
    # Expired, and the freeze's caller has not heard it yet: status fails until its thaw.
    assert env.status(rc=6)["last_result"]["outcome"] == "expired"
    thawed = env.run("thaw")
    assert thawed.rc == 6, thawed
    assert env.status()["last_result"]["outcome"] == "expired"
    load.stop()
    replica.wait_caught_up(mariadb, timeout=20)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_replica_restarted_when_the_holder_dies(signum, replica_pair):
    """A holder stopped by a signal releases and restarts the applier itself; one killed
    outright cannot, so the thaw that reports the loss must do it."""
    replica, env = replica_pair(4, stop_replica="always")
    result = env.run("freeze")
    assert result.rc == 0, result
    assert sql_thread_running(replica) == "No"
    os.kill(env.state()["holder_pid"], signum)
    assert env.wait_no_holder(5) == set()
    if signum == signal.SIGTERM:
        # It released and restarted the applier itself before it ended.
        assert sql_thread_running(replica) == "Yes"
    thawed = env.run("thaw")
    # Read at once, with no wait: a thaw that finds the holder dead restarts the applier first.
    assert sql_thread_running(replica) == "Yes", thawed
    assert thawed.rc == 6, thawed


def test_replica_restarted_when_another_instance_fails(mariadb, replica_pair):
    """Two instances: the replica is locked (applier stopped) first, the second fails."""
    replica, env = replica_pair(4, stop_replica="always")
    mariadb.create_user("qsecond", "right-password")
    env.write_config(extra_text=(
        instance_section("replica", replica, os.path.join(env.state_dir, "position-replica.json"))
        + instance_section("primary", mariadb, os.path.join(env.state_dir, "position-primary.json"),
                           user="qsecond", password="wrong-password")))
    result = env.run("freeze")
    assert result.rc == 3, result
    assert sql_thread_running(replica) == "Yes", "the failed freeze left the replica's applier stopped"
    assert env.wait_no_holder(5) == set()
    assert no_lock_held(replica) and no_lock_held(mariadb)


def test_multi_source_replica_records_and_restarts_every_channel(mariadb, mariadb_factory, replica_of, writers):
    """Two sources, two named channels (MariaDB: connections in their own GTID domains):
    each channel's coordinates are recorded, each applier stopped while frozen and restarted."""
    second = mariadb_factory(name="source2", server_id=2, options={"gtid-domain-id": 2}
                             if mariadb.flavour == "mariadb" else None)
    replica = mariadb_factory(name="multi", server_id=3, options=mariadb.REPLICA_OPTIONS)
    replica.replicate_from(mariadb, parallel_threads=4, channel="one")
    # MariaDB sets the parallel applier once for all connections (and not while one runs).
    replica.replicate_from(second, parallel_threads=None if mariadb.flavour == "mariadb" else 4, channel="two")
    env = QuiesceEnv(replica, driver=None)
    try:
        load = writers(server=second, engines=("InnoDB",), interval=0.005)
        load.wait_for_progress(5)
        result = env.run("freeze")
        assert result.rc == 0, result
        try:
            position = env.position()
            running = {name: sql_thread_running_on(replica, name) for name in ("one", "two")}
        finally:
            thawed = env.run("thaw")
        # Read at once, with no wait: thaw returns with every channel's applier running.
        after_thaw = {name: sql_thread_running_on(replica, name) for name in ("one", "two")}
        assert thawed.rc == 0, thawed
    finally:
        report = env.cleanup()
    assert not report["holders"], report
    assert after_thaw == {"one": "Yes", "two": "Yes"}
    channels = {c["connection_name"]: c for c in position["replica"]}
    assert set(channels) == {"one", "two"}, position["replica"]
    assert channels["one"]["source_port"] == mariadb.port and channels["two"]["source_port"] == second.port
    assert all(c["gtid"] and not any(ch.isspace() for ch in c["gtid"]) for c in channels.values()), channels
    assert position["replica_stopped"] is True
    assert running == {"one": "No", "two": "No"}
    load.stop()
    replica.wait_caught_up(second)


def sql_thread_running_on(replica, channel):
    return (replica.replica_status(channel) or {}).get("Slave_SQL_Running")


@pytest.mark.flavours(*servers.ALL_MARIADB)
def test_a_channel_name_with_a_backslash_under_no_backslash_escapes(mariadb, mariadb_factory, writers):
    """MariaDB connection names are strings: quiesce's STOP and START must name the channel
    right whatever the server's sql_mode says a backslash is."""
    channel = "site\\a"
    replica = mariadb_factory(name="nobs", server_id=3, options=dict(
        mariadb.REPLICA_OPTIONS, **{"sql-mode": "NO_BACKSLASH_ESCAPES,STRICT_TRANS_TABLES"}))
    replica.replicate_from(mariadb, channel=channel)
    env = QuiesceEnv(replica, driver=None, stop_replica="always")
    try:
        load = writers(engines=("InnoDB",), interval=0.005)
        load.wait_for_progress(5)
        result = env.run("freeze")
        assert result.rc == 0, result
        try:
            frozen = sql_thread_running_on(replica, channel)
            recorded = {c["connection_name"] for c in env.position()["replica"]}
        finally:
            thawed = env.run("thaw")
        after_thaw = sql_thread_running_on(replica, channel)
        assert thawed.rc == 0, thawed
    finally:
        report = env.cleanup()
    assert not report["holders"], report
    assert frozen == "No" and after_thaw == "Yes", (frozen, after_thaw)
    assert recorded == {channel}, recorded
