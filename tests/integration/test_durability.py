"""Durability of what was committed before the lock, with relaxed server settings.

With innodb_flush_log_at_trx_commit = 0 or 2 and sync_binlog = 0, commits are
acknowledged before they are on disk. A snapshot taken while frozen must still hold every
commit acknowledged before freeze returned, even when the hook runner does not freeze
(and so does not sync) the filesystems: quiesce flushes the engine logs and syncs the
data directory's filesystem while locked.

A copy of the datadir reads the page cache and cannot show unsynced data as lost, so the
tests cut the power instead. This machine's kernel has no device-mapper (`dmsetup
targets` fails: no dm-flakey, dm-snapshot or dm-log-writes, and no modules to load), so
the datadir lives on ext4 on a loop device whose backing file is made immutable at the
cut: from then on every write the device receives fails (dm-flakey's error_writes), and
whatever was only in the page cache is lost when the server is killed and the filesystem
unmounted. The image is then mounted again (journal replay) and a server boots from it
(crash recovery), like a VM restored from a snapshot taken without a filesystem freeze.

A control run with a plain lock (no log flush, no sync) loses acknowledged commits in the
same harness: the check can fail. Both run on every server kind.

Driver: PyMySQL only (the config names none, as shipped, and PyMySQL is the one
installed: see runner.QuiesceEnv). What makes commits durable is what the server does
(flushing its logs) and the syncing of files; the driver only sends the statements.
"""

import datetime
import json
import os
import threading
import time

import pymysql
import pytest

from quiesce.server import durable, serverinfo

from . import servers
from .mariadb import MariaDB
from .load import table_rows
from .prodhelpers import (PowerCutDisk, ProbeWriters, check_tables, gtid_seq, innodb_lsns, unclean,
                          why_no_power_cut)
from .runner import QuiesceEnv

_NO_POWER_CUT = why_no_power_cut()


def _relaxed(trx_commit):
    # A long InnoDB flush timeout: without quiesce, recent commits stay in the log buffer.
    return {"innodb-flush-log-at-trx-commit": trx_commit, "sync-binlog": 0,
            "innodb-flush-log-at-timeout": 300}


class PowerCutRun:
    """One server on a PowerCutDisk with writers; lock, cut the power, boot the image."""

    def __init__(self, request, server_class, options):
        self.disk = PowerCutDisk(size_mb=256)
        request.addfinalizer(self.disk.close)
        self.server = server_class(name="pc", datadir=os.path.join(self.disk.mnt, "data"), options=options)
        request.addfinalizer(self.server.cleanup)
        self.request = request
        self.server.start()
        self.server.create_probe_tables()
        self.load = ProbeWriters(self.server, engines=self.server.ENGINES, threads_per_engine=1, max_seconds=60,
                                 read_timeout=20)
        self.load.create_tables()
        request.addfinalizer(lambda: self.load.stop(timeout=5))
        self.base_seq = gtid_seq(self.server.gtid())
        # Everything up to here is durable; every commit from now on is not, by itself.
        self.disk.sync()

    def write(self):
        self.load.start()
        self.load.wait_for_progress(30)

    def cut(self):
        """From now on nothing the server writes reaches the device."""
        self.cut_at = self.disk.cut_power()

    def boot_image(self):
        """Let the writers run into the dead device, kill the server, power on, boot the image."""
        self.load.stop(timeout=5)
        self.server.kill()
        self.disk.remount()
        copy = self.server.boot_copy(os.path.join(self.disk.mnt, "data"), name="pc-after")
        self.request.addfinalizer(copy.cleanup)
        return copy

    def missing(self, copy, before):
        rows = table_rows(copy, self.load.database, self.load.tables)
        acked = self.load.acked_keys(before=before)
        return rows, {t: len(acked[t] - set(rows[t])) for t in self.load.tables}


@pytest.mark.skipif(_NO_POWER_CUT is not None, reason=_NO_POWER_CUT or "")
@pytest.mark.parametrize("server_flavour, method, trx_commit",
                         [(servers.HOST_MARIADB, "backup-stage", 0), (servers.HOST_MARIADB, "ftwrl", 2),
                          (servers.MARIADB_LTS, "backup-stage", 0), (servers.MYSQL, "ftwrl", 0)],
                         indirect=["server_flavour"])
def test_power_cut_after_freeze_loses_no_acknowledged_commit(method, trx_commit, request, server_class):
    run = PowerCutRun(request, server_class, _relaxed(trx_commit))
    # The position file on the same disk, in a directory the holder creates: it must be
    # on the device when freeze returns, like the data.
    position_file = os.path.join(run.disk.mnt, "quiesce-state", "position.json")
    env = QuiesceEnv(run.server, driver=None, lock_method=method, position_file=position_file)
    request.addfinalizer(env.cleanup)
    run.write()
    result = env.run("freeze")
    frozen_at = time.monotonic()
    assert result.rc == 0, result
    lsns = innodb_lsns(run.server)
    run.cut()
    position = env.position()
    # The lock stood through the cut (the server runs on; only its disk stopped writing).
    thaw = env.run("thaw")
    assert thaw.rc == 0, thaw
    assert env.wait_no_holder(5) == set()

    assert position["durability"] == {"innodb_flush_log_at_trx_commit": trx_commit, "sync_binlog": 0}
    copy = run.boot_image()
    with open(position_file, encoding="utf-8") as handle:
        assert json.load(handle) == position, "the position file on the snapshot's disk is not freeze's"
    rows, missing = run.missing(copy, frozen_at)
    assert sum(len(r) for r in rows.values()) > 0
    # (InnoDB's own view right after freeze, for the message: with trx_commit=0 nothing but a
    # durable log flush moves "flushed" up to the LSN of the last commit.)
    assert missing == {t: 0 for t in run.load.tables}, \
        "commits acknowledged before freeze lost in a power cut after it (%s, trx_commit=%d): %s; " \
        "InnoDB right after freeze: %s" % (method, trx_commit, missing, lsns)
    # The binlog survived up to the recorded position, and agrees with the tables.
    assert copy.gtid() == position["gtid"]
    assert sum(len(r) for r in rows.values()) == gtid_seq(position["gtid"]) - run.base_seq
    assert set(rows["t_innodb"].values()) == {2}
    checked = check_tables(copy, ["load.%s" % t for t in run.load.tables if t != "t_innodb"]
                           + ["quiesce_probe.probe_myisam"])
    assert unclean(checked) == {}, unclean(checked)


def _readme_account(server):
    """The dedicated account docs/accounts.md creates, as written (see test_accounts.py)."""
    from .test_accounts import PASSWORD, readme_grants
    for statement in readme_grants(server.flavour, replica=False):
        server.sql(statement)
    return {"user": "quiesce", "password": PASSWORD}


@pytest.mark.skipif(_NO_POWER_CUT is not None, reason=_NO_POWER_CUT or "")
@pytest.mark.parametrize("server_flavour", [servers.HOST_MARIADB], indirect=True)
def test_power_cut_with_the_readme_account_at_trx_commit_2_loses_nothing(request, server_class):
    """Without SUPER the account cannot raise innodb_flush_log_at_trx_commit for the flush;
    at 2 the log is in the page cache and the sync under the lock makes it durable."""
    run = PowerCutRun(request, server_class, _relaxed(2))
    env = QuiesceEnv(run.server, driver=None, **_readme_account(run.server))
    request.addfinalizer(env.cleanup)
    run.write()
    result = env.run("freeze")
    frozen_at = time.monotonic()
    assert result.rc == 0, result
    run.cut()
    assert env.run("thaw").rc == 0
    assert env.wait_no_holder(5) == set()
    copy = run.boot_image()
    rows, missing = run.missing(copy, frozen_at)
    assert sum(len(r) for r in rows.values()) > 0
    assert missing == {t: 0 for t in run.load.tables}, missing


@pytest.mark.parametrize("trx_commit", [0, 2])
def test_the_setting_raised_for_the_flush_is_back_after_the_freeze(request, server_class, trx_commit):
    """(The power-cut tests cannot ask the cut server.) Read while frozen and after thaw."""
    server = server_class(name="trxback", options=_relaxed(trx_commit))
    request.addfinalizer(server.cleanup)
    server.start()
    env = QuiesceEnv(server, driver=None)
    request.addfinalizer(env.cleanup)
    assert env.run("freeze").rc == 0
    assert server.value("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit") == trx_commit
    assert env.run("thaw").rc == 0
    assert server.value("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit") == trx_commit


@pytest.mark.parametrize("server_flavour", [servers.HOST_MARIADB], indirect=True)
def test_trx_commit_0_without_the_privilege_to_flush_fails_the_freeze(request, server_class):
    """At 0 the last commits are only in the server's memory and the account cannot make
    them durable: the freeze fails (exit 4, naming the fix) instead of promising a snapshot
    that may miss acknowledged commits. check says so before."""
    from .checks import assert_clean
    server = server_class(name="trx0", options=_relaxed(0))
    request.addfinalizer(server.cleanup)
    server.start()
    server.create_probe_tables()
    env = QuiesceEnv(server, driver=None, **_readme_account(server))
    request.addfinalizer(env.cleanup)
    checked = env.run("check")
    assert checked.rc == 4 and "innodb_flush_log_at_trx_commit" in checked.output, checked
    result = env.run("freeze")
    assert result.rc == 4, result
    assert "innodb_flush_log_at_trx_commit" in result.stderr and "SUPER" in result.stderr, result
    assert server.value("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit") == 0
    assert not os.path.exists(env.position_file)
    assert_clean(env, server)


@pytest.mark.skipif(_NO_POWER_CUT is not None, reason=_NO_POWER_CUT or "")
@pytest.mark.flavours()
def test_power_cut_harness_detects_lost_commits(request, server_class):
    """Control: the same run with a bare FTWRL (no log flush, no sync) loses commits."""
    run = PowerCutRun(request, server_class, _relaxed(0))
    run.write()
    conn = run.server.connect()
    request.addfinalizer(conn.close)
    with conn.cursor() as cur:
        cur.execute("FLUSH TABLES WITH READ LOCK")
        frozen_at = time.monotonic()
        cur.execute(run.server.GTID_POSITION)
        gtid = cur.fetchone()[0]
    lsns = innodb_lsns(run.server)
    run.cut()
    try:
        with conn.cursor() as cur:
            cur.execute("UNLOCK TABLES")
    except pymysql.MySQLError:
        pass
    copy = run.boot_image()
    _rows, missing = run.missing(copy, frozen_at)
    lost_binlog = (copy.gtid() or "") != gtid
    assert sum(missing.values()) > 0 or lost_binlog, \
        "the power cut lost nothing without quiesce: this harness cannot show lost writes " \
        "(lsns %s, missing %s)" % (lsns, missing)


class DeviceWrites:
    """Sectors a block device has written, sampled every millisecond in a thread."""

    def __init__(self, dev):
        self.path = "/sys/block/%s/stat" % os.path.basename(dev)
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        with open(self.path) as handle:
            return int(handle.read().split()[6]) * 512

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._read()))
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.samples.append((time.monotonic(), self._read()))

    def between(self, start, end):
        """Bytes written from the last sample at or before start to the first at or after end."""
        before = [b for t, b in self.samples if t <= start]
        after = [b for t, b in self.samples if t >= end]
        assert before and after, "no samples around %.3f..%.3f" % (start, end)
        return after[0] - before[-1]


def _wall_to_monotonic(iso):
    epoch = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    return epoch - (time.time() - time.monotonic())


@pytest.mark.skipif(_NO_POWER_CUT is not None, reason=_NO_POWER_CUT or "")
def test_lock_does_not_wait_for_unrelated_dirty_data(request):
    """Dirty data of another program on the datadir's filesystem is written before the lock.

    Under the lock only the server's own files are synced: the device writes next to
    nothing while the lock is held, although 128 MB of someone else's data were dirty on
    the same filesystem when freeze started (a syncfs() under the lock writes all of it).
    """
    disk = PowerCutDisk(size_mb=512)
    request.addfinalizer(disk.close)
    server = MariaDB(name="dirty", datadir=os.path.join(disk.mnt, "data"))
    request.addfinalizer(server.cleanup)
    server.start()
    env = QuiesceEnv(server, driver=None)
    request.addfinalizer(env.cleanup)
    disk.sync()
    unrelated = 128 << 20
    with DeviceWrites(disk.dev) as device:
        written = time.monotonic()
        with open(os.path.join(disk.mnt, "download.bin"), "wb") as handle:
            for _ in range(unrelated >> 20):
                handle.write(os.urandom(1 << 20))
        began = time.monotonic()
        result = env.run("freeze")
        ended = time.monotonic()
    assert result.rc == 0, result
    position = env.position()
    assert env.run("thaw").rc == 0
    timings = position["timings_ms"]
    locked = _wall_to_monotonic(position["locked_at"])
    assert began <= locked <= ended, (began, position["locked_at"], ended)
    # The data reached the device by the time freeze returned (the drain wrote what the
    # kernel had not written by itself yet).
    assert device.between(written, ended) >= unrelated
    under_lock = device.between(locked, locked + timings["under_lock"] / 1000.0)
    assert under_lock < unrelated // 8, \
        "%d MB written while locked (timings %s)" % (under_lock >> 20, timings)


def test_server_files_of_a_running_server(mariadb):
    """The server's own files: its directories from its variables, its open files from /proc."""
    info = mariadb.query(serverinfo.DURABILITY_STATEMENT, as_dict=True)[0]
    found = durable.server_files(info)
    datadir = os.path.realpath(mariadb.datadir)
    assert found.directories[0] == datadir and found.datadir == datadir
    assert found.pids == (mariadb.pid,)
    names = {os.path.relpath(f, datadir) for f in found.open_files}
    assert {"ib_logfile0", "ibdata1", "binlog.000001", "binlog.index", "aria_log_control"} <= names, names
    # Temporary files (tmpdir, deleted) never count; the error log, open too, is synced when written.
    assert not [f for f in found.open_files if f.startswith(str(info["tmpdir"]))], found.open_files


def test_relaxed_settings_are_warned_about(mariadb, quiesce_env):
    """The warning goes to the system log and to the freeze command's stderr."""
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    assert quiesce_env.run("thaw").rc == 0
    assert "innodb_flush_log_at_trx_commit" not in result.stderr and "sync_binlog" not in result.stderr

    mariadb.restart(options={"innodb-flush-log-at-trx-commit": 2, "sync-binlog": 0})
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    position = quiesce_env.position()
    thawed = quiesce_env.run("thaw")
    assert thawed.rc == 0, thawed
    assert position["durability"] == {"innodb_flush_log_at_trx_commit": 2, "sync_binlog": 0}
    log = _holder_log(quiesce_env)
    assert any("innodb_flush_log_at_trx_commit=2" in line for line in log), log
    assert any("sync_binlog=0" in line for line in log), log
    assert "innodb_flush_log_at_trx_commit=2" in result.stderr, result
    assert "sync_binlog=0" in result.stderr, result


def _holder_log(env):
    """What the holder logged (it logs to the system log; result.json keeps a copy)."""
    with open(os.path.join(env.runtime_dir, "result.json"), encoding="utf-8") as handle:
        return json.load(handle).get("log", [])

