"""examples/storage/*.sh run as an administrator's cron job or scheduler runs them: with
`quiesce` on PATH and its config in QUIESCE_CONFIG. btrfs for real (ZFS for real too, on
zfs-fuse: test_schedulers.py); LVM and the cloud CLI with only the snapshot command
replaced by a stand-in that records its arguments and what `quiesce status` says while it
runs (this kernel has no device-mapper, and no cloud is reachable from here).

Driver: PyMySQL only; the scripts are under test, not the lock session.
"""

import json
import os
import subprocess
import sys

import pytest

from . import loopfs
from .checks import assert_clean
from .runner import REPO, QuiesceEnv
from .test_run_snapshots import btrfs_fs, ext4_fs  # noqa: F401 (fixtures: loop filesystems)

# One server kind: what these prove is the scripts' use of run; the lock on every kind is
# test_snapshot_consistency.py's.
pytestmark = pytest.mark.skipif(loopfs.skip_reason() is not None, reason=str(loopfs.skip_reason()))
EXAMPLES = os.path.join(REPO, "examples", "storage")
STAND_IN = """#!/bin/sh
quiesce status --json > "$QTEST_OUT/status.json"
printf '%s\\n' "$0" "$@" > "$QTEST_OUT/args"
"""


def _bin(tmp_path, *stand_ins):
    directory = tmp_path / "bin"
    directory.mkdir()
    launcher = directory / "quiesce"
    launcher.write_text("#!/bin/sh\nexec %s -sB -m quiesce \"$@\"\n" % sys.executable)
    for name in stand_ins:
        (directory / name).write_text(STAND_IN)
    for path in directory.iterdir():
        path.chmod(0o755)
    return str(directory)


def _run_example(env, tmp_path, script, *args, stand_ins=()):
    out = tmp_path / "out"
    out.mkdir()
    environ = env.env({"QUIESCE_CONFIG": env.conf, "QTEST_OUT": str(out),
                       "PATH": _bin(tmp_path, *stand_ins) + ":/usr/sbin:/usr/bin:/sbin:/bin"})
    proc = subprocess.run([os.path.join(EXAMPLES, script), *args], env=environ, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    return proc, out


def _while_running(out):
    status = json.loads((out / "status.json").read_text())
    return status, (out / "args").read_text().split("\n")[:-1]


def _matches(argv, expected):
    """expected: the words, "*" at the end of one for a prefix (a timestamped name)."""
    return len(argv) == len(expected) and all(a.startswith(e[:-1]) if e.endswith("*") else a == e
                                              for a, e in zip(argv, expected))


@pytest.mark.parametrize("script, args, stand_in, expected", [
    ("lvm-snapshot.sh", ("vg0/mysql", "10G"), "lvcreate",
     ["--snapshot", "--size", "10G", "--name", "mysql-2*", "vg0/mysql"]),
])
def test_the_lvm_example_takes_its_snapshot_under_the_lock(mariadb, quiesce_env, tmp_path, script, args,
                                                                 stand_in, expected):
    proc, out = _run_example(quiesce_env, tmp_path, script, *args, stand_ins=(stand_in,))
    assert proc.returncode == 0, proc.stderr
    status, argv = _while_running(out)
    assert status["frozen"] is True, status
    assert os.path.basename(argv[0]) == stand_in
    assert _matches(argv[1:], expected), argv
    assert_clean(quiesce_env, mariadb)


def test_the_cloud_example_freezes_the_filesystems_while_the_cli_runs(request, ext4_fs, mariadb_factory, tmp_path):
    server = mariadb_factory(name="cloud", datadir=os.path.join(ext4_fs.mnt, "data"))
    env = QuiesceEnv(server, driver="pymysql")
    request.addfinalizer(env.cleanup)
    proc, out = _run_example(env, tmp_path, "cloud-disk-snapshot.sh", "aws", "ec2", "create-snapshots",
                             "--instance-specification", "InstanceId=i-0123456789abcdef0", stand_ins=("aws",))
    assert proc.returncode == 0, proc.stderr
    status, argv = _while_running(out)
    assert status["frozen"] is True and argv[1:4] == ["ec2", "create-snapshots", "--instance-specification"]
    assert os.path.realpath(server.datadir) in env.position()["directories"]
    assert_clean(env, server)


def test_the_btrfs_example_takes_a_read_only_snapshot(request, btrfs_fs, mariadb_factory, tmp_path):
    live = os.path.join(btrfs_fs.mnt, "live")
    server = mariadb_factory(name="btrfs", datadir=os.path.join(live, "data"))
    env = QuiesceEnv(server, driver="pymysql")
    request.addfinalizer(env.cleanup)
    snapshots = os.path.join(btrfs_fs.mnt, "snapshots")
    os.mkdir(snapshots)
    proc, _out = _run_example(env, tmp_path, "btrfs-snapshot.sh", live, snapshots)
    assert proc.returncode == 0, proc.stderr
    (name,) = os.listdir(snapshots)
    shown = loopfs.sh("btrfs", "property", "get", "-ts", os.path.join(snapshots, name), "ro").stdout
    assert shown.strip() == "ro=true", shown
    assert os.path.isdir(os.path.join(snapshots, name, "data", "mysql"))
    assert_clean(env, server)
