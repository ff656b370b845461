"""The snapshot schedulers' hooks (examples/schedulers) and the ZFS recipe
(examples/storage/zfs-snapshot.sh), each run the way its caller runs it, around a real
ZFS snapshot (zfs-fuse: Debian 12's user-space ZFS; this kernel has no ZFS module) of a
dataset that holds a live server's datadir and the position file:

- sanoid: Debian's sanoid itself, `sanoid --take-snapshots` on the example's sanoid.conf;
- zfs-autobackup: its own snapshot step, ZfsNode.consistent_snapshot (pre commands,
  one `zfs snapshot` per pool, post commands in a finally), with the example's commands.
  Its dataset selection (`zfs get -t ...`) needs a newer zfs than zfs-fuse, and it has no
  Debian package: `make deps` puts a pinned release in .deps-tools/;
- zrepl: not in Debian (and its daemon needs kernel ZFS), so its command-hook contract,
  taken from its source (internal/daemon/hooks/hook_type_command.go): the hook exec'd with
  no arguments, ZREPL_* in the environment, its output read to the end, killed at the
  hook's timeout;
- snapper (btrfs, not ZFS): Debian 13's snapper in a Debian 13 root, which runs the
  example plugin before and after it snapshots a btrfs subvolume on a loop device.

`zfs` on PATH is a wrapper that stops at each `zfs snapshot` until the test has read the
rows the live server holds, then runs the real zfs. A clone of the snapshot then boots
with exactly those rows, at the recorded coordinates.

Driver: PyMySQL only; the hooks under test run quiesce's command line, and the lock on
both drivers is test_snapshot_consistency.py's.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from . import chroot, loopfs, zfsfuse
from .checks import assert_clean, assert_frozen
from .load import table_rows
from .runner import REPO, QuiesceEnv, wait_for
from .test_run_snapshots import _assert_copy_matches, btrfs_fs  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(loopfs.skip_reason() is not None, reason=str(loopfs.skip_reason()))
EXAMPLES = os.path.join(REPO, "examples", "schedulers")
TOOLS_DIR = os.path.join(REPO, ".deps-tools")

# Stops at the first `zfs snapshot` until the test says go; every snapshot call records
# what `quiesce status` says at that moment.
ZFS_WRAPPER = textwrap.dedent("""\
    #!/bin/sh
    if [ "$1" = snapshot ]; then
        quiesce status --json >> "$QTEST_OUT/status.json"
        touch "$QTEST_OUT/started"
        n=0
        while [ ! -e "$QTEST_OUT/go" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
    fi
    exec /usr/sbin/zfs "$@"
    """)


class Rig:
    """A live server on a ZFS dataset, quiesce configured for it, the wrapper dir for PATH."""

    def __init__(self, request, tmp_path, mariadb_factory, writers):
        self.pool = zfsfuse.Pool(str(tmp_path))
        request.addfinalizer(self.pool.destroy)
        self.dataset = self.pool.name + "/mysql"
        self.mnt = self.pool.dataset("mysql")
        self.server = mariadb_factory(name="onzfs", datadir=os.path.join(self.mnt, "data"))
        # The position file (and so the history) in the dataset: each snapshot holds its own.
        self.env = QuiesceEnv(self.server, driver="pymysql", position_file=os.path.join(self.mnt, "position.json"))
        request.addfinalizer(self.env.cleanup)
        self.load = writers(server=self.server, engines=self.server.ENGINES)
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.quiesce = str(self.bin / "quiesce")
        (self.bin / "quiesce").write_text("#!/bin/sh\nexec %s -sB -m quiesce \"$@\"\n" % sys.executable)
        (self.bin / "zfs").write_text(ZFS_WRAPPER)
        for path in self.bin.iterdir():
            path.chmod(0o755)
        self.tmp_path = tmp_path

    def environ(self, extra=None):
        return self.env.env(dict({"QUIESCE_CONFIG": self.env.conf, "QTEST_OUT": str(self.out),
                                  "PATH": "%s:%s" % (self.bin, loopfs.SYSTEM_PATH)}, **(extra or {})))

    def ours(self, text):
        """An example's text with the installed quiesce replaced by this test's."""
        return text.replace("/usr/sbin/quiesce", self.quiesce)

    def hold_and_read(self, proc):
        """At the first snapshot: the rows the locked server holds; then lets it go on."""
        wait_for(lambda: (self.out / "started").exists() or proc.poll() is not None, 120,
                 what="the scheduler's first zfs snapshot")
        assert (self.out / "started").exists(), proc.communicate(timeout=30)
        assert_frozen(self.server)
        rows = table_rows(self.server, self.load.database, self.load.tables)
        (self.out / "go").touch()
        return rows

    def statuses(self):
        """What `quiesce status --json` said at each snapshot call (documents one after another)."""
        text, found, decoder = (self.out / "status.json").read_text(), [], json.JSONDecoder()
        at = 0
        while text[at:].strip():
            document, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
            found.append(document)
        return found

    def last_history(self):
        with open(os.path.join(self.mnt, "history.jsonl"), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle][-1]

    def boots_from(self, request, snapshot, frozen_rows):
        """A writable clone of the snapshot boots with the frozen rows at the coordinates."""
        self.load.wait_for_progress(10)
        self.load.stop()
        assert not self.load.failures, self.load.failures[:3]
        clone = self.pool.name + "/restored"
        zfsfuse.zfs("clone", snapshot, clone)
        restored = os.path.join(self.pool.mnt, "restored")
        with open(os.path.join(restored, "position.json"), encoding="utf-8") as handle:
            assert json.load(handle) == self.env.position(), "the snapshot's position file is not the freeze's"
        _assert_copy_matches(request, self.server, self.env, self.load, os.path.join(restored, "data"), frozen_rows)


@pytest.fixture
def rig(request, tmp_path, mariadb_factory, writers):
    return Rig(request, tmp_path, mariadb_factory, writers)


# ---------------------------------------------------------------------------------- sanoid

def _sanoid(rig, conf_text):
    configdir = rig.tmp_path / "sanoid"
    configdir.mkdir()
    (configdir / "sanoid.conf").write_text(rig.ours(conf_text.replace("[tank/mysql]", "[%s]" % rig.dataset)))
    return subprocess.Popen(
        ["/usr/sbin/sanoid", "--configdir", str(configdir), "--cache-dir", str(rig.tmp_path / "sanoid-cache"),
         "--run-dir", str(rig.tmp_path / "sanoid-run"), "--take-snapshots", "--verbose"],
        env=rig.environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _example(name):
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as handle:
        return handle.read()


def test_sanoid_takes_its_snapshots_under_one_lock_and_they_boot_at_the_coordinates(request, rig):
    rig.load.wait_for_progress(20)
    proc = _sanoid(rig, _example("sanoid.conf"))
    frozen_rows = rig.hold_and_read(proc)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "executing post_snapshot_script" in output and "WARN" not in output, output
    # hourly, daily and monthly are all due: one freeze, three snapshots, one thaw.
    taken = sorted(rig.pool.snapshots())
    assert [s.rsplit("_", 1)[1] for s in taken] == ["daily", "hourly", "monthly"], taken
    assert [s["frozen"] for s in rig.statuses()] == [True, True, True], rig.statuses()
    entry = rig.last_history()
    assert entry["agent"] == "sanoid" and entry["ok"], entry
    rig.boots_from(request, taken[1], frozen_rows)
    assert_clean(rig.env, rig.server)


def test_sanoid_runs_one_freeze_and_thaw_per_dataset_section(rig):
    """Two sections with the hooks (the server's dataset and another one): sanoid runs two
    pairs in one run, one after the other; each one locks and releases on its own."""
    other = rig.pool.dataset("other")
    assert os.path.isdir(other)
    conf = _example("sanoid.conf").replace("[tank/mysql]", "[tank/mysql]\n\tuse_template = mysql\n\n[tank/other]", 1)
    proc = _sanoid(rig, conf.replace("[tank/other]", "[%s/other]" % rig.pool.name))
    (rig.out / "go").touch()    # the wrapper does not stop: both pairs run straight through
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert output.count("executing pre_snapshot_script") == 2, output
    assert output.count("executing post_snapshot_script") == 2 and "WARN" not in output, output
    assert {s.split("@")[0] for s in rig.pool.snapshots()} == {rig.dataset, rig.pool.name + "/other"}
    assert all(s["frozen"] for s in rig.statuses()), rig.statuses()
    with open(os.path.join(rig.mnt, "history.jsonl"), encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle]
    assert [(e["agent"], e["ok"]) for e in entries] == [("sanoid", True), ("sanoid", True)], entries
    assert_clean(rig.env, rig.server)


def test_sanoid_takes_no_snapshot_when_the_freeze_fails(rig):
    rig.env.write_config(socket=os.path.join(str(rig.tmp_path), "no-such.sock"))
    proc = _sanoid(rig, _example("sanoid.conf"))
    output, _ = proc.communicate(timeout=120)
    assert "pre_snapshot_script failed" in output, output
    assert rig.pool.snapshots() == [], "no_inconsistent_snapshot = yes: a failed freeze takes no snapshot"
    assert "executing post_snapshot_script" not in output, output
    assert_clean(rig.env, rig.server)


# -------------------------------------------------------------------------- zfs-autobackup

def _autobackup_commands():
    """The --pre/--post-snapshot-cmd values of examples/schedulers/zfs-autobackup.sh."""
    words = shlex.split(_example("zfs-autobackup.sh").split("exec zfs-autobackup", 1)[1].replace("\\\n", " "),
                        comments=True)
    pre = [words[i + 1] for i, w in enumerate(words) if w == "--pre-snapshot-cmd"]
    post = [words[i + 1] for i, w in enumerate(words) if w == "--post-snapshot-cmd"]
    assert pre and post, words
    return pre, post


# zfs-autobackup's own code: its node runs the commands and the snapshot; the dataset list
# is given instead of selected (zfs-fuse's `zfs get` has no -t).
AUTOBACKUP_SNAPSHOT = textwrap.dedent("""\
    import json, sys
    from zfs_autobackup.LogConsole import LogConsole
    from zfs_autobackup.Thinner import Thinner
    from zfs_autobackup.ZfsNode import ZfsNode
    datasets, name, pre, post = json.loads(sys.argv[1])
    node = ZfsNode(snapshot_time_format="mysql-%Y%m%d%H%M%S", hold_name="zfs_autobackup:mysql",
                   logger=LogConsole(show_debug=False, show_verbose=True, color=False), ssh_config=None,
                   ssh_to=None, readonly=False, description="[Source]", thinner=Thinner("10"))
    node.consistent_snapshot([node.get_dataset(d) for d in datasets], name, min_changed_bytes=0,
                             pre_snapshot_cmds=pre, post_snapshot_cmds=post)
    """)


def _autobackup(rig, pre, post):
    if not os.path.isdir(os.path.join(TOOLS_DIR, "zfs_autobackup")):
        raise loopfs.MissingTool("zfs-autobackup is not in %s: run 'make deps'" % TOOLS_DIR)
    environ = rig.environ({"PYTHONPATH": TOOLS_DIR})
    spec = json.dumps([[rig.dataset], "mysql-20261208000000", [rig.ours(c) for c in pre], [rig.ours(c) for c in post]])
    return subprocess.Popen(["/usr/bin/python3", "-c", AUTOBACKUP_SNAPSHOT, spec], env=environ,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_zfs_autobackup_snapshots_under_the_lock_and_the_copy_boots_at_the_coordinates(request, rig):
    pre, post = _autobackup_commands()
    rig.load.wait_for_progress(20)
    proc = _autobackup(rig, pre, post)
    frozen_rows = rig.hold_and_read(proc)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert rig.pool.snapshots() == [rig.dataset + "@mysql-20261208000000"]
    assert rig.last_history()["agent"] == "zfs-autobackup" and rig.last_history()["ok"]
    rig.boots_from(request, rig.dataset + "@mysql-20261208000000", frozen_rows)
    assert_clean(rig.env, rig.server)


def test_zfs_autobackup_thaws_when_a_later_pre_command_fails(rig):
    pre, post = _autobackup_commands()
    proc = _autobackup(rig, pre + ["false"], post)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output
    assert rig.pool.snapshots() == [], output
    # The freeze before "false" held the lock; the post command in the finally released it.
    assert rig.last_history()["agent"] == "zfs-autobackup", rig.last_history()
    assert_clean(rig.env, rig.server)


# --------------------------------------------------------------------------------- zrepl

def _zrepl_hook_config():
    with open(os.path.join(EXAMPLES, "zrepl.yml"), encoding="utf-8") as handle:
        (job,) = yaml.safe_load(handle)["jobs"]
    (hook,) = job["snapshotting"]["hooks"]
    assert hook["type"] == "command" and hook["err_is_fatal"] is True, hook
    assert hook["timeout"].endswith("s"), hook
    return job, hook, float(hook["timeout"][:-1])


def _zrepl_run_hook(rig, hook_path, phase, fs, snapname, timeout, dry_run=False):
    """As zrepl's CommandHook.Run: no arguments, its environment plus ZREPL_*, stdout and
    stderr read until both close, killed at the timeout."""
    environ = rig.environ({"ZREPL_HOOKTYPE": phase, "ZREPL_FS": fs, "ZREPL_SNAPNAME": snapname,
                           "ZREPL_DRYRUN": "true" if dry_run else "", "ZREPL_TIMEOUT": "%.f" % timeout})
    proc = subprocess.Popen([hook_path], env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("zrepl would have killed the %s hook after %.0f s" % (phase, timeout))
    return proc.returncode, out + err


def _zrepl_hook(rig):
    path = rig.tmp_path / "zrepl-hook"
    path.write_text(rig.ours(_example("zrepl-hook")))
    path.chmod(0o755)
    return str(path)


def test_zrepl_hook_holds_the_lock_around_the_snapshot_and_the_copy_boots(request, rig):
    job, _hook, timeout = _zrepl_hook_config()
    assert rig.dataset.replace(rig.pool.name, "tank") in job["filesystems"]
    hook = _zrepl_hook(rig)
    snapname = "zrepl_20261208_000000_000"
    rig.load.wait_for_progress(20)
    rc, said = _zrepl_run_hook(rig, hook, "pre_snapshot", rig.dataset, snapname, timeout)
    assert rc == 0, said
    # zrepl's own snapshot, taken while the pre hook's holder keeps the lock.
    snapshot = subprocess.Popen([str(rig.bin / "zfs"), "snapshot", "%s@%s" % (rig.dataset, snapname)],
                                env=rig.environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    frozen_rows = rig.hold_and_read(snapshot)
    assert snapshot.wait(60) == 0, snapshot.stdout.read()
    rc, said = _zrepl_run_hook(rig, hook, "post_snapshot", rig.dataset, snapname, timeout)
    assert rc == 0, said
    assert rig.last_history()["agent"] == "zrepl" and rig.last_history()["ok"]
    rig.boots_from(request, "%s@%s" % (rig.dataset, snapname), frozen_rows)
    assert_clean(rig.env, rig.server)


def test_zrepl_dry_run_and_a_foreign_caller_take_no_lock(rig):
    _job, _hook, timeout = _zrepl_hook_config()
    hook = _zrepl_hook(rig)
    rc, said = _zrepl_run_hook(rig, hook, "pre_snapshot", rig.dataset, "zrepl_x", timeout, dry_run=True)
    assert rc == 0 and "dry run" in said, said
    assert rig.env.status()["frozen"] is False
    proc = subprocess.run([hook], env=rig.environ(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "ZREPL_HOOKTYPE" in proc.stderr, proc
    assert_clean(rig.env, rig.server)


# -------------------------------------------------------------------------------- snapper

# snapper runs plugins before a snapshot from 0.10.5 on: Debian 13's, not Debian 12's
# 0.10.4 (which calls them only after it). snapper and the quiesce under test run in a
# Debian 13 root; the server is the host's, its datadir on a btrfs subvolume under /tmp,
# which the root shares.
SNAPPER_IMAGE = chroot.Image("trixie", ("snapper", "btrfs-progs", "python3-configargparse", "python3-pymysql"))

# Runs after 50-quiesce's freeze: waits until the test has read the locked server's rows.
WAIT_PLUGIN = textwrap.dedent("""\
    #!/bin/sh
    [ "$1" = create-snapshot-pre ] || exit 0
    touch "$QTEST_OUT/started"
    n=0
    while [ ! -e "$QTEST_OUT/go" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
    """)


def test_snapper_plugin_holds_the_lock_while_snapper_snapshots_and_the_copy_boots(
        request, btrfs_fs, mariadb_factory, writers, tmp_path):
    root = chroot.root_for("snapper", SNAPPER_IMAGE)
    live = os.path.join(btrfs_fs.mnt, "live")
    server = mariadb_factory(name="snapper", datadir=os.path.join(live, "data"))
    env = QuiesceEnv(server, driver="pymysql", position_file=os.path.join(live, "position.json"))
    request.addfinalizer(env.cleanup)
    load = writers(server=server, engines=server.ENGINES)
    # quiesce as the root's python3 runs it, from a copy under the shared /tmp.
    source = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "quiesce"), str(source / "quiesce"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    launcher = tmp_path / "quiesce"
    launcher.write_text("#!/bin/sh\nPYTHONPATH=%s exec python3 -sB -m quiesce \"$@\"\n" % source)
    plugins = os.path.join(root.path, "usr", "lib", "snapper", "plugins")
    os.makedirs(plugins, exist_ok=True)
    plugin = _example("snapper-plugin").replace('SUBVOLUMES="/srv/mysql"', 'SUBVOLUMES="%s"' % live)
    for name, text in (("50-quiesce", plugin.replace("/usr/sbin/quiesce", str(launcher))),
                       ("60-test-wait", WAIT_PLUGIN)):
        with open(os.path.join(plugins, name), "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(os.path.join(plugins, name), 0o755)
    launcher.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    environ = {"PATH": chroot.SYSTEM_PATH, "LANG": "C.UTF-8", "QUIESCE_CONFIG": env.conf, "QTEST_OUT": str(out)}

    def snapper(*args, timeout=120):
        return subprocess.Popen(root.command(["snapper", "--no-dbus", "-c", "mysql", *args]), env=environ,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    made = snapper("create-config", "--fstype", "btrfs", live)
    assert made.wait(60) == 0, made.stdout.read()
    # create-config's own snapshot-less run of the plugins did not touch the server.
    assert env.status()["frozen"] is False
    load.wait_for_progress(20)
    proc = snapper("create", "--print-number", "--description", "quiesce test")
    wait_for(lambda: (out / "started").exists() or proc.poll() is not None, 120,
             what="snapper's create-snapshot-pre plugins")
    assert (out / "started").exists(), proc.communicate(timeout=30)
    assert_frozen(server)
    frozen_rows = table_rows(server, load.database, load.tables)
    (out / "go").touch()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    number = output.split()[-1]
    with open(os.path.join(os.path.dirname(env.position_file), "history.jsonl"), encoding="utf-8") as handle:
        entry = json.loads(handle.read().splitlines()[-1])
    assert entry["agent"] == "snapper" and entry["ok"], entry
    load.wait_for_progress(10)
    load.stop()
    assert not load.failures, load.failures[:3]
    clone = os.path.join(btrfs_fs.mnt, "clone")
    loopfs.sh("btrfs", "subvolume", "snapshot", os.path.join(live, ".snapshots", number, "snapshot"), clone)
    _assert_copy_matches(request, server, env, load, os.path.join(clone, "data"), frozen_rows)
    assert_clean(env, server)


# ------------------------------------------------------------- examples/storage (ZFS)

def test_the_zfs_example_snapshots_under_the_lock_and_the_copy_boots(request, rig):
    rig.load.wait_for_progress(20)
    proc = subprocess.Popen([os.path.join(REPO, "examples", "storage", "zfs-snapshot.sh"), rig.dataset],
                            env=rig.environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    frozen_rows = rig.hold_and_read(proc)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    (taken,) = rig.pool.snapshots()
    assert taken.startswith(rig.dataset + "@quiesce-"), taken
    assert rig.last_history()["agent"] == "zfs" and rig.last_history()["ok"]
    rig.boots_from(request, taken, frozen_rows)
    assert_clean(rig.env, rig.server)
