"""quiesce run with real storage snapshots: what the snapshot holds boots with exactly the
rows committed at the lock and ends at the recorded coordinates.

- btrfs: `quiesce run -- btrfs subvolume snapshot -r LIVE SNAP` on a datadir that is a
  btrfs subvolume on a loop device (the kernel has btrfs; btrfs-progs from `make deps`).
- --freeze-fs: the datadir on its own loop-mounted ext4, the "snapshot" a copy of the loop
  device's backing file made while quiesce holds the filesystem frozen, as a cloud disk
  snapshot of an unfrozen guest would need.

LVM cannot exist here (no device-mapper): its recipe in docs/storage-snapshots.md uses
this same machinery with only the snapshot command replaced. ZFS runs for real on
zfs-fuse, in test_schedulers.py.

Driver: PyMySQL only; what differs between the drivers is the lock session, covered with
both by test_snapshot_consistency.py; here it is the snapshot that is under test.
"""

import os
import textwrap

import pytest

from . import loopfs
from .checks import assert_clean, assert_frozen
from .load import table_rows
from .runner import QuiesceEnv, wait_for

pytestmark = pytest.mark.skipif(loopfs.skip_reason() is not None, reason=str(loopfs.skip_reason()))

# Takes the snapshot ($2...), says so, and waits for "$1/go": the test reads the live rows
# while the lock still holds.
SNAPSHOT_THEN_WAIT = textwrap.dedent("""\
    #!/bin/sh
    out="$1"; shift
    "$@" > "$out/snapshot.log" 2>&1 || exit 42
    touch "$out/started"
    while [ ! -e "$out/go" ]; do sleep 0.05; done
    """)


def _script(tmp_path, text):
    path = tmp_path / "snapshot.sh"
    path.write_text(text)
    path.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    return str(path), out


class Mounted:
    """A filesystem image on a loop device, mounted; undone at teardown."""

    def __init__(self, image, mnt, fstype):
        self.image, self.mnt, self.dev = image, mnt, None
        os.makedirs(mnt, exist_ok=True)
        self.dev = loopfs.attach(image)
        loopfs.sh("mount", "-t", fstype, self.dev, mnt)

    def close(self):
        if self.dev:
            loopfs.unmount(self.mnt)
            loopfs.detach(self.dev)
            self.dev = None


def _mounted(request, image, mnt, fstype):
    fs = Mounted(str(image), str(mnt), fstype)
    request.addfinalizer(fs.close)
    return fs


@pytest.fixture
def btrfs_fs(request, tmp_path):
    image = tmp_path / "btrfs.img"
    with open(image, "wb") as handle:
        handle.truncate(512 << 20)
    loopfs.sh("mkfs.btrfs", "-q", str(image))
    fs = _mounted(request, image, tmp_path / "btrfs", "btrfs")
    loopfs.sh("btrfs", "subvolume", "create", os.path.join(fs.mnt, "live"))
    return fs


@pytest.fixture
def ext4_fs(request, tmp_path):
    image = tmp_path / "disk.img"
    loopfs.make_image(str(image), 384, eager=True)
    return _mounted(request, image, tmp_path / "disk", "ext4")


def _hold_and_read(env, server, load, script, out, *command):
    """run -- script out COMMAND...; the rows the live server holds while the lock holds."""
    running = env.start("run", "--", script, str(out), *command)
    wait_for(lambda: (out / "started").exists() or running.proc.poll() is not None, 120,
             what="the snapshot command to finish")
    assert (out / "started").exists(), running.wait(10)
    assert_frozen(server)
    frozen_rows = table_rows(server, load.database, load.tables)
    (out / "go").touch()
    result = running.wait(60)
    assert result.rc == 0, result
    return frozen_rows


def _assert_copy_matches(request, server, env, load, datadir, frozen_rows):
    position = env.position()
    binlog = os.path.join(datadir, position["binlog_file"])
    assert os.path.getsize(binlog) == position["binlog_position"], "the copy's binlog does not end at the record"
    copy = server.boot_copy(datadir)
    request.addfinalizer(copy.cleanup)
    copy_rows = table_rows(copy, load.database, load.tables)
    assert copy_rows == frozen_rows, "the snapshot's rows are not those committed at the lock"
    assert set(copy_rows["t_innodb"].values()) <= {2}, "a transaction was cut in half"
    assert copy.gtid() == position["gtid"]


@pytest.mark.flavours()
def test_a_btrfs_snapshot_taken_by_run_boots_with_the_rows_at_the_recorded_coordinates(
        request, btrfs_fs, mariadb_factory, writers, tmp_path):
    live = os.path.join(btrfs_fs.mnt, "live")
    server = mariadb_factory(name="onbtrfs", datadir=os.path.join(live, "data"))
    env = QuiesceEnv(server, driver="pymysql")
    request.addfinalizer(env.cleanup)
    load = writers(server=server, engines=server.ENGINES)
    load.wait_for_progress(20)
    script, out = _script(tmp_path, SNAPSHOT_THEN_WAIT)
    snap = os.path.join(btrfs_fs.mnt, "snap")
    frozen_rows = _hold_and_read(env, server, load, script, out, "btrfs", "subvolume", "snapshot", "-r", live, snap)
    load.wait_for_progress(10)
    load.stop()
    assert not load.failures, load.failures[:3]
    # The snapshot is read-only; a writable one of it boots, as a restore would.
    clone = os.path.join(btrfs_fs.mnt, "clone")
    loopfs.sh("btrfs", "subvolume", "snapshot", snap, clone)
    _assert_copy_matches(request, server, env, load, os.path.join(clone, "data"), frozen_rows)
    assert_clean(env, server)


COPY_WHILE_FROZEN = textwrap.dedent("""\
    #!/bin/sh
    # $1 out, $2 the mount point, $3 the image, $4 the copy.
    # A second freeze of a frozen filesystem fails with EBUSY: the test's proof that it is.
    if fsfreeze -f "$2" 2>/dev/null; then fsfreeze -u "$2"; echo not-frozen > "$1/state"
    else echo frozen > "$1/state"; fi
    cp --sparse=always "$3" "$4" || exit 42
    touch "$1/started"
    while [ ! -e "$1/go" ]; do sleep 0.05; done
    """)


def test_freeze_fs_holds_the_filesystem_frozen_while_a_disk_copy_is_made(
        request, ext4_fs, mariadb_factory, writers, tmp_path):
    server = mariadb_factory(name="onext4", datadir=os.path.join(ext4_fs.mnt, "data"))
    env = QuiesceEnv(server, driver="pymysql")
    request.addfinalizer(env.cleanup)
    load = writers(server=server, engines=server.ENGINES)
    load.wait_for_progress(20)
    script, out = _script(tmp_path, COPY_WHILE_FROZEN)
    copy_image = tmp_path / "copy.img"
    running = env.start("run", "--freeze-fs", "--", script, str(out), ext4_fs.mnt, ext4_fs.image, str(copy_image))
    wait_for(lambda: (out / "started").exists() or running.proc.poll() is not None, 120,
             what="the disk copy to finish")
    assert (out / "started").exists(), running.wait(10)
    assert (out / "state").read_text().strip() == "frozen"
    frozen_rows = table_rows(server, load.database, load.tables)
    (out / "go").touch()
    result = running.wait(60)
    assert result.rc == 0, result
    load.wait_for_progress(10)   # thawed: the writers go on
    load.stop()
    assert not load.failures, load.failures[:3]
    restored = _mounted(request, copy_image, tmp_path / "restored", "ext4")
    _assert_copy_matches(request, server, env, load, os.path.join(restored.mnt, "data"), frozen_rows)
    assert_clean(env, server)


def test_freeze_fs_refuses_the_root_filesystem_and_runs_nothing(mariadb, quiesce_env, tmp_path):
    # The test servers' datadirs live under /tmp, on the root filesystem here.
    env = quiesce_env
    marker = tmp_path / "ran"
    point = os.path.realpath(mariadb.datadir)
    while not os.path.ismount(point):       # findmnt sees no "/" in a chroot
        point = os.path.dirname(point)
    if point != "/":
        pytest.fail("the test server's datadir is not on the root filesystem here: this test needs it there")
    result = env.run("run", "--freeze-fs", "--", "/usr/bin/touch", str(marker))
    assert result.rc == 2 and "root filesystem" in result.stderr, result
    assert not marker.exists()
    assert_clean(env, mariadb)
