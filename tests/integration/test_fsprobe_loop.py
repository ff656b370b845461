"""quiesce.holder.fsprobe against real freezes of loop-mounted ext4 filesystems.

Root only.  Every loop device, mount and I/O throttle made here is undone at teardown,
frozen filesystems are thawed first, and only the test's own loop mounts are ever
frozen (checked against the loop device before each fsfreeze).

Slow and stuck I/O without a freeze of the probed filesystem are made two ways, since
device-mapper (dm-delay) is not available on every test machine:
  - stuck: the probed ext4's image lives on a second loop ext4, which is frozen; the
    probe's fdatasync waits for writeback that cannot finish until that thaw;
  - slow: a throttle of 2 writes/s on the probed loop device: cgroup v1's blkio
    controller where it is mounted, else cgroup v2's io.max on a child cgroup holding the
    probe's writer; with neither the test fails (it is never skipped).

The last tests run the whole program: a real MariaDB whose datadir is the root of a
loop-mounted ext4, frozen and thawed under `quiesce freeze`.
"""

import datetime
import fcntl
import json
import os
import resource
import select
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time

import pytest

from quiesce.holder import fswait
from quiesce.holder.fsprobe import FsThawProbe
from quiesce.holder.probedir import PROBE_PREFIX

from . import loopfs
from .prodhelpers import lock_waiters
from .runner import QuiesceEnv, wait_for

BLKIO_WRITE_IOPS = "/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device"
THROTTLE_CGROUP = "quiesce-test-throttle-%d" % os.getpid()
EXT4_IOC_SHUTDOWN = 0x8004587D          # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 0x2
_sh = loopfs.sh
_REASON = loopfs.skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


class LoopFs:
    """An ext4 image on a loop device, mounted; freeze()/thaw() act on it only."""

    def __init__(self, image, mountpoint, size_mb=64):
        self.image = image
        self.mnt = mountpoint
        self.dev = None
        self.mounted = False
        self.frozen = False
        os.makedirs(mountpoint, exist_ok=True)
        loopfs.make_image(image, size_mb)
        self.dev = loopfs.attach(image)
        _sh("mount", "-t", "ext4", self.dev, mountpoint)
        self.mounted = True

    @property
    def majmin(self):
        rdev = os.stat(self.dev).st_rdev
        return "%d:%d" % (os.major(rdev), os.minor(rdev))

    def _check_ours(self):
        # Never freeze anything but this loop mount.
        assert self.mounted and loopfs.is_mount_of(self.mnt, self.dev)

    def freeze(self):
        self._check_ours()
        t0 = time.monotonic()
        _sh("fsfreeze", "-f", self.mnt)
        self.frozen = True
        return time.monotonic() - t0

    def thaw(self):
        """Returns (monotonic before the command, monotonic after it returned)."""
        self._check_ours()
        t0 = time.monotonic()
        _sh("fsfreeze", "-u", self.mnt)
        t1 = time.monotonic()
        self.frozen = False
        return t0, t1

    def close(self):
        if self.frozen:
            _sh("fsfreeze", "-u", self.mnt, check=False)
            self.frozen = False
        if self.mounted:
            loopfs.unmount(self.mnt)
            self.mounted = False
        if self.dev:
            loopfs.detach(self.dev)
            self.dev = None


class Lab:
    """Loop filesystems, probes and throttles of one test, all undone at teardown."""

    def __init__(self, base):
        self.base = base
        self.filesystems = []
        self.probes = []
        self.throttled = []
        self.mounts = []

    def loopfs(self, name, image_dir=None, size_mb=64):
        image = os.path.join(image_dir or self.base, name + ".img")
        fs = LoopFs(image, os.path.join(self.base, name), size_mb)
        self.filesystems.append(fs)
        return fs

    def probe(self, directory, **kwargs):
        thaws = []
        fired = threading.Event()

        def on_thaw():
            thaws.append(time.monotonic())
            fired.set()

        probe = FsThawProbe(directory, on_thaw, **kwargs)
        probe.thaws = thaws
        probe.fired_event = fired
        self.probes.append(probe)
        probe.start()
        return probe

    def _blkio_file(self):
        """cgroup v1's write throttle: where it is mounted, else a private mount of the blkio
        hierarchy (a chroot whose /sys was bind-mounted without its submounts has none)."""
        if os.path.exists(BLKIO_WRITE_IOPS):
            return BLKIO_WRITE_IOPS
        if not _blkio_on_v1():
            return None
        point = os.path.join(self.base, "blkio")
        os.makedirs(point, exist_ok=True)
        if subprocess.run(["mount", "-t", "cgroup", "-o", "blkio", "quiesce-test", point],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode != 0:
            return None
        self.mounts.append(point)
        return os.path.join(point, os.path.basename(BLKIO_WRITE_IOPS))

    def throttle_writes(self, fs, iops, pid):
        """At most iops writes/s to fs's device: for everyone (cgroup v1), or for pid (v2)."""
        blkio = self._blkio_file()
        if blkio:
            with open(blkio, "w") as f:
                f.write("%s %d\n" % (fs.majmin, iops))
            self.throttled.append((blkio, "%s 0\n" % fs.majmin, None))
            return
        root = _cgroup2_with_io()
        assert root, ("no way to throttle a loop device here: neither cgroup v1's blkio controller "
                      "(%s) nor cgroup v2 with the io controller; fix: boot with either" % BLKIO_WRITE_IOPS)
        child = os.path.join(root, THROTTLE_CGROUP)
        with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
            f.write("+io\n")
        os.makedirs(child, exist_ok=True)
        with open(os.path.join(child, "cgroup.procs"), "w") as f:
            f.write("%d\n" % pid)
        self.throttled.append((os.path.join(child, "io.max"), "%s wiops=max\n" % fs.majmin, (root, child)))
        with open(os.path.join(child, "io.max"), "w") as f:
            f.write("%s wiops=%d\n" % (fs.majmin, iops))

    def unthrottle(self):
        while self.throttled:
            path, undo, cgroup = self.throttled.pop()
            with open(path, "w") as f:
                f.write(undo)
            if cgroup:
                root, child = cgroup
                with open(os.path.join(child, "cgroup.procs")) as f:
                    pids = f.read().split()
                for pid in pids:  # back to the root cgroup, which may hold processes
                    with open(os.path.join(root, "cgroup.procs"), "w") as f:
                        f.write(pid + "\n")
                os.rmdir(child)

    def close(self):
        errors = []
        for step in ([self.unthrottle]
                     + [fs.thaw for fs in self.filesystems if fs.frozen]
                     + [p.stop for p in self.probes]
                     + [lambda p=p: p.join(10) for p in self.probes]
                     + [fs.close for fs in reversed(self.filesystems)]
                     + [lambda m=m: subprocess.run(["umount", m], check=True, timeout=30) for m in self.mounts]):
            try:
                step()
            except Exception as e:  # keep undoing the rest
                errors.append(repr(e))
        assert not errors, errors


@pytest.fixture
def lab(tmp_path):
    lab = Lab(str(tmp_path))
    try:
        probe_fs = lab.loopfs("first")
    except subprocess.CalledProcessError as e:
        lab.close()
        # Never a skip: half of what these tests prove would drop out of CI unnoticed.
        pytest.fail("cannot set up a loop-mounted ext4: %s; fix: run as root with free loop devices "
                    "(a container needs /dev/loop* and CAP_SYS_ADMIN)" % (e.stderr or e).strip())
    lab.first = probe_fs
    yield lab
    lab.close()


def stay_unfired(probe, seconds):
    """Assert the probe does not fire for `seconds`, watching closely."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not probe.fired and not probe.thaws
        time.sleep(0.01)


def freeze_thaw_cycle(lab, fs, hold=0.5):
    """Probe fs, freeze, check it holds, thaw; return latencies in seconds."""
    probe = lab.probe(fs.mnt)
    assert probe.inspection == "stack"
    time.sleep(0.1)
    freeze_s = fs.freeze()
    stay_unfired(probe, hold)
    assert probe.frozen_at is not None, "the freeze was not recognised (last wait: %s)" % (
        probe.last_wait,)
    # The wait the kernel showed is the freeze lock itself (or the sb_start helper taking it).
    assert probe.last_wait in fswait.LOCK_FRAMES | fswait.SB_START_FRAMES, probe.last_wait
    before, after = fs.thaw()
    assert probe.fired_event.wait(2), "no on_thaw after the thaw"
    fired_at = probe.thaws[0]
    assert probe.join(2)
    assert probe.fired and len(probe.thaws) == 1 and probe.error is None
    assert fired_at > before, "fired before the thaw command even started"
    assert probe.thawed_at.monotonic <= fired_at
    assert not os.path.exists(probe.path)
    return {
        "after_cmd": fired_at - after,        # from fsfreeze -u returning
        "after_cmd_start": fired_at - before,
        "write_return_to_callback": fired_at - probe.thawed_at.monotonic,
        "freeze_cmd": freeze_s,
    }


def test_thaw_fires_after_the_thaw_and_not_before(lab):
    # Ordering (fired after 'fsfreeze -u' began, never while frozen) is asserted in
    # freeze_thaw_cycle; the latency is only reported: on 2 busy cores it is no test.
    lat = freeze_thaw_cycle(lab, lab.first, hold=0.5)
    print("\non_thaw after 'fsfreeze -u' returned: %+.2f ms (after it started: %.2f ms; "
          "write return -> callback %.3f ms; fsfreeze -f took %.1f ms)"
          % (lat["after_cmd"] * 1e3, lat["after_cmd_start"] * 1e3,
             lat["write_return_to_callback"] * 1e3, lat["freeze_cmd"] * 1e3))


def test_repeated_cycles_fire_each_time(lab):
    runs = [freeze_thaw_cycle(lab, lab.first, hold=0.3) for _ in range(10)]
    after = [r["after_cmd"] for r in runs]
    after_start = [r["after_cmd_start"] for r in runs]
    freeze = [r["freeze_cmd"] for r in runs]
    print("\n10 cycles: on_thaw after 'fsfreeze -u' returned: median %+.2f ms, max %+.2f ms;"
          " after it started: median %.2f ms, max %.2f ms; fsfreeze -f median %.1f ms"
          % (statistics.median(after) * 1e3, max(after) * 1e3,
             statistics.median(after_start) * 1e3, max(after_start) * 1e3,
             statistics.median(freeze) * 1e3))


def test_freeze_of_another_filesystem_never_fires(lab):
    other = lab.loopfs("other")
    probe = lab.probe(lab.first.mnt)
    time.sleep(0.1)
    other.freeze()
    stay_unfired(probe, 0.6)
    other.thaw()
    stay_unfired(probe, 0.3)
    # Not stalls == 0: a probe call may well wait 50 ms for a busy disk (the other image's
    # freeze syncs through the same backing filesystem); what matters is no freeze seen.
    assert probe.frozen_at is None and probe.ignored_freezes == 0 and probe.error is None
    assert probe.state == "probing"


def test_a_freeze_begun_before_arming_never_fires(lab):
    # The holder starts its probe before the lock and arms it once the lock is held: a
    # freeze already under way then (another tool's, an LVM snapshot) is not the snapshot's.
    probe = lab.probe(lab.first.mnt, armed=False)
    wait_for(lambda: probe.writes >= 2, 2, interval=0.005, what="the probe to write")
    lab.first.freeze()
    wait_for(lambda: probe.ignored_freezes, 2, interval=0.005, what="the probe to see the freeze")
    probe.arm()
    lab.first.thaw()
    n = probe.writes
    wait_for(lambda: probe.writes > n + 2, 2, interval=0.005, what="probe writes to resume")
    assert not probe.fired and not probe.thaws and probe.frozen_at is None
    # A freeze that begins after arming is the one it waits for.
    lab.first.freeze()
    wait_for(lambda: probe.frozen_at is not None, 2, interval=0.005, what="the probe to count the freeze")
    assert probe.ignored_freezes == 1
    before, _after = lab.first.thaw()
    assert probe.fired_event.wait(2), "no on_thaw after a freeze begun after arming"
    assert probe.thaws[0] > before


def test_stuck_io_below_the_filesystem_never_fires(lab):
    # The probed ext4 lives in an image on `first`; freezing `first` stalls the probed
    # filesystem's writeback without freezing it.
    inner = lab.loopfs("inner", image_dir=lab.first.mnt, size_mb=32)
    probe = lab.probe(inner.mnt)
    time.sleep(0.1)
    lab.first.freeze()
    stay_unfired(probe, 1.0)
    assert probe.stalls >= 1, "the probe was never stuck: the test did not test anything"
    assert probe.frozen_at is None
    print("\nstuck below the filesystem: probe waited in %s" % probe.last_wait)
    stuck_writes = probe.writes
    lab.first.thaw()
    wait_for(lambda: probe.writes > stuck_writes + 4, 2, interval=0.005, what="probe writes to resume")
    stay_unfired(probe, 0.2)
    assert probe.frozen_at is None and probe.error is None and probe.state == "probing"


def _blkio_on_v1():
    """Whether the kernel has the blkio controller on a cgroup v1 hierarchy (/proc/cgroups)."""
    with open("/proc/cgroups") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "blkio":
                return fields[1] != "0" and fields[3] == "1"
    return False


def _cgroup2_with_io():
    """The cgroup v2 mount point if its io controller is available there, else None."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[2] == "cgroup2"]
    for point in points:
        try:
            with open(os.path.join(point, "cgroup.controllers")) as f:
                if "io" in f.read().split():
                    return point
        except OSError:
            continue
    return None


def test_slow_io_never_fires(lab):
    probe = lab.probe(lab.first.mnt)
    time.sleep(0.1)
    lab.throttle_writes(lab.first, 2, probe.pid)
    stay_unfired(probe, 2.5)
    assert probe.stalls >= 1, "the throttle did not slow the probe down"
    assert probe.frozen_at is None
    print("\nslow I/O (2 writes/s): %d stalls, last wait %s" % (probe.stalls, probe.last_wait))
    lab.unthrottle()
    n = probe.writes
    wait_for(lambda: probe.writes > n + 4, 3, interval=0.005, what="probe writes to resume")
    stay_unfired(probe, 0.2)
    assert probe.frozen_at is None and probe.error is None


def test_stop_while_frozen_is_prompt_and_cleans_up_after_thaw(lab):
    probe = lab.probe(lab.first.mnt)
    time.sleep(0.1)
    lab.first.freeze()
    wait_for(lambda: probe.frozen_at is not None, 2, interval=0.005, what="the probe to see the freeze")
    t0 = time.monotonic()
    assert probe.stop(wait=5) is False
    took = time.monotonic() - t0
    print("\nstop() while frozen returned in %.3f ms" % (took * 1e3))
    # It did not wait for the writer: 5 s is 100 times what a descheduled thread costs.
    assert took < 5
    assert os.path.exists(probe.path) and probe.state == "stopping"
    lab.first.thaw()
    assert probe.join(2), "the probe thread did not finish after the thaw"
    assert not os.path.exists(probe.path)
    assert not probe.fired and not probe.thaws and probe.state == "stopped"


def test_io_error_stops_quietly(lab):
    probe = lab.probe(lab.first.mnt)
    time.sleep(0.1)
    fd = os.open(lab.first.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)
    assert probe.join(2)
    assert probe.error and "Errno 5" in probe.error
    assert not probe.fired and probe.state == "failed"


def _task_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_no_freeze_never_fires_and_cost(lab):
    probe = lab.probe(lab.first.mnt)
    time.sleep(0.2)
    n0, t0 = probe.writes, time.monotonic()
    r0, c0 = resource.getrusage(resource.RUSAGE_SELF), _task_cpu(probe.pid)
    time.sleep(5.0)
    n1, t1 = probe.writes, time.monotonic()
    r1, c1 = resource.getrusage(resource.RUSAGE_SELF), _task_cpu(probe.pid)
    holder_side = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    writer = c1 - c0
    pairs_per_s = (n1 - n0) / 2 / (t1 - t0)
    print("\nprobe on idle loop ext4, interval 25 ms: %.1f write+fdatasync pairs/s; CPU "
          "%.2f%% of one core in this process (probe thread; main thread asleep), "
          "%.2f%% in the writer (over %.1f s, tick resolution)"
          % (pairs_per_s, 100 * holder_side / (t1 - t0), 100 * writer / (t1 - t0), t1 - t0))
    assert not probe.fired and probe.frozen_at is None and probe.error is None
    assert pairs_per_s > 10


HOLDER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from quiesce.holder.fsprobe import FsThawProbe
conn = int(sys.argv[3])            # stands in for the database connection
probe = FsThawProbe(sys.argv[2], lambda: None)
probe.start()
print(probe.pid, probe.path, flush=True)
while probe.frozen_at is None:
    time.sleep(0.01)
print("frozen", flush=True)
time.sleep(60)
"""


def test_killed_holder_lets_go_during_a_freeze(lab):
    # A holder killed while the filesystem is frozen must drop its descriptors (the
    # database connection, hence the lock) at once, not at the thaw.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    conn_r, conn_w = os.pipe()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, repo, lab.first.mnt, str(conn_w)],
        pass_fds=(conn_w,), stdout=subprocess.PIPE, universal_newlines=True)
    os.close(conn_w)
    try:
        writer_pid, path = holder.stdout.readline().split()
        time.sleep(0.1)
        lab.first.freeze()
        assert holder.stdout.readline().strip() == "frozen"
        t0 = time.monotonic()
        holder.kill()
        ready, _, _ = select.select([conn_r], [], [], 3)
        assert ready and os.read(conn_r, 1) == b"", "the holder's descriptors outlived it"
        took = time.monotonic() - t0
        holder.wait(3)
        print("\nholder SIGKILLed while frozen: its descriptors closed after %.1f ms" % (
            took * 1e3))
        # Closed while the filesystem is still frozen (the order that matters), with the
        # writer still stuck in its write.
        assert lab.first.frozen
        assert os.path.exists("/proc/%s" % writer_pid) and os.path.exists(path)
        lab.first.thaw()
        wait_for(lambda: not os.path.exists(path), 3, interval=0.005, what="the writer to remove its file")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
        os.close(conn_r)


# --- the holder with a real MariaDB whose datadir is on a loop-mounted ext4 -----------

def _result(env):
    try:
        with open(os.path.join(env.runtime_dir, "result.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _epoch(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _probe_files(directory):
    return [n for n in os.listdir(directory) if n.startswith(PROBE_PREFIX)]


def _process_gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def db_on_loop(lab, mariadb_factory):
    """A MariaDB whose datadir is the root of its own loop-mounted ext4, and a quiesce
    environment for it (config, runtime-dir and position file stay off that filesystem)."""
    fs = lab.loopfs("dbfs", size_mb=384)
    server = mariadb_factory(name="onloop", datadir=os.path.join(fs.mnt, "data"))
    envs = []

    def make(**settings):
        env = QuiesceEnv(server, driver="auto", **settings)
        envs.append(env)
        return env

    yield fs, server, make
    if fs.frozen:
        fs.thaw()
    for env in envs:
        env.cleanup()


@pytest.mark.flavours()
def test_mariadb_lock_released_at_filesystem_thaw(db_on_loop):
    fs, server, make = db_on_loop
    env = make()
    # VMware Tools freezes the filesystems after the freeze hook: its thaw is the snapshot's.
    r = env.run("freeze", "--caller", "vmware-tools")
    assert r.rc == 0, r
    assert env.state()["release_on_fs_thaw"] is True
    wait_for(lambda: _probe_files(fs.mnt), 2, interval=0.005, what="a probe file next to the datadir")
    assert server.try_write(0.3) is None, "the freeze did not lock the server"
    fs.freeze()
    time.sleep(0.5)
    assert _result(env) is None, "released while the filesystem was frozen"
    before_wall = time.time()
    before, after = fs.thaw()
    after_wall = time.time()
    wait_for(lambda: _result(env), 3, interval=0.005, what="the release after the filesystem thawed")
    writable = server.try_write(3.0)
    write_ok = time.monotonic()
    result = _result(env)
    assert result["outcome"] == "released-at-fs-thaw", result
    (probe,) = result["fs_probes"]
    assert probe["fired"] and probe["directory"] == fs.mnt
    assert writable is not None, "the server did not take writes after the thaw"
    release_ms = (_epoch(result["at"]) - after_wall) * 1e3
    print("\nMariaDB on loop ext4: release recorded %+.0f ms after 'fsfreeze -u' returned "
          "(ms resolution); a write committed %.0f ms after it; held %s ms in all"
          % (release_ms, (write_ok - after) * 1e3, result["held_ms"]))
    # Order, not latency: the probe saw the write return, and the release came, only after
    # 'fsfreeze -u' began (stamps have ms resolution, hence the 1 ms).
    assert _epoch(probe["thawed_at"]) >= before_wall - 0.001, (probe, before_wall)
    assert _epoch(result["at"]) >= before_wall - 0.001, (result["at"], before_wall)
    r = env.run("thaw", "--caller", "vmware-tools")
    assert r.rc == 0, r
    assert "already released when the filesystem thawed" in r.stderr, r
    assert not env.wait_no_holder(5)
    wait_for(lambda: not _probe_files(fs.mnt), 2, interval=0.005, what="the probe file to go")


def test_mariadb_lock_kept_across_thaw_when_disabled(db_on_loop):
    fs, server, make = db_on_loop
    env = make(release_on_fs_thaw="false")
    r = env.run("freeze")
    assert r.rc == 0, r
    assert not _probe_files(fs.mnt)
    fs.freeze()
    time.sleep(0.3)
    fs.thaw()
    time.sleep(0.5)
    assert _result(env) is None
    assert server.try_write(0.3) is None, "the lock went without a thaw command"
    r = env.run("thaw")
    assert r.rc == 0, r
    assert _result(env)["outcome"] == "released"
    assert server.try_write(3.0) is not None


def test_mariadb_holder_expires_and_exits_while_frozen(db_on_loop):
    # The deadline passes during the freeze: the holder must release and be gone even
    # though its probe's write is stuck until the thaw.
    fs, server, make = db_on_loop
    env = make(lock_timeout=2, acquire_timeout=1)
    r = env.run("freeze", "--caller", "vmware-tools")
    assert r.rc == 0, r
    holder = env.state()["holder_pid"]
    fs.freeze()
    wait_for(lambda: _process_gone(holder), 6, interval=0.005, what="the holder to exit while frozen")
    assert _result(env)["outcome"] == "expired"
    stuck = _probe_files(fs.mnt)
    assert stuck, "the probe file should still be there: its writer waits for the thaw"
    fs.thaw()
    wait_for(lambda: not _probe_files(fs.mnt), 3, interval=0.005, what="the writer to clean up")
    r = env.run("thaw", "--caller", "vmware-tools")
    assert r.rc == 6, r


def test_mariadb_killed_holder_drops_its_session_while_frozen(db_on_loop):
    # What the thaw command relies on when the holder does not answer: killing it ends
    # its session.  That must hold during a freeze too, with the probe's write stuck.
    fs, server, make = db_on_loop
    env = make()
    others = set(server.connection_ids())
    r = env.run("freeze", "--caller", "vmware-tools")
    assert r.rc == 0, r
    holder = env.state()["holder_pid"]
    sessions = set(server.connection_ids()) - others
    assert sessions, "the holder's session is not in the process list"
    fs.freeze()
    time.sleep(0.3)
    t0 = time.monotonic()
    os.kill(holder, signal.SIGKILL)
    wait_for(lambda: not sessions & set(server.connection_ids()), 3, interval=0.005,
             what="the killed holder's session to go (it must not outlive the holder while frozen)")
    print("\nholder SIGKILLed during the freeze: its session was gone from the server "
          "after %.0f ms" % ((time.monotonic() - t0) * 1e3))
    assert _probe_files(fs.mnt)
    fs.thaw()
    wait_for(lambda: not _probe_files(fs.mnt), 3, interval=0.005, what="the writer to clean up")
    assert server.try_write(3.0) is not None
    r = env.run("thaw", "--caller", "vmware-tools")
    assert r.rc == 6, r


@pytest.mark.parametrize("caller", ["gce", "veeam"])
def test_a_freeze_is_not_the_snapshot_of_a_caller_that_never_freezes(db_on_loop, caller):
    # GCE, AWS, Veeam job scripts, Nutanix and unknown callers take their snapshot without
    # freezing: a freeze seen during their hold (an LVM snapshot, another tool's fsfreeze)
    # is someone else's, and its thaw must not release their lock.
    fs, server, make = db_on_loop
    env = make()
    r = env.run("freeze", "--caller", caller)
    assert r.rc == 0, r
    assert not _probe_files(fs.mnt), "a probe runs for a caller that never freezes"
    fs.freeze()
    time.sleep(0.3)
    fs.thaw()
    # A probe that saw this freeze releases within milliseconds of the thaw; give it a second.
    with pytest.raises(AssertionError):
        wait_for(lambda: _result(env), 1.0, interval=0.01, what="a release (there must be none)")
    assert server.try_write(0.5) is None, "the lock went at a thaw that was not the snapshot's"
    assert env.state() is not None
    r = env.run("thaw", "--caller", caller)
    assert r.rc == 0, r
    result = _result(env)
    assert result["outcome"] == "released" and result["fs_probes"] == [], result
    assert server.try_write(3.0) is not None


def test_a_freeze_during_the_lock_wait_is_not_the_snapshots(db_on_loop):
    # The holder starts its probe before the lock statement, which may wait up to
    # acquire-timeout for a running write. A freeze and thaw of the datadir's filesystem
    # in that wait (an LVM snapshot, another tool) happened before the lock: not the
    # snapshot's, so its thaw must not release the lock once it is taken.
    fs, server, make = db_on_loop
    env = make(acquire_timeout=30, long_query_time=60)
    server.sql("CREATE DATABASE IF NOT EXISTS fsq")
    server.sql("CREATE TABLE fsq.slow (a INT) ENGINE=MyISAM")
    server.sql("INSERT INTO fsq.slow VALUES (1)")
    ended = []

    def slow_update():
        try:
            server.sql("UPDATE fsq.slow SET a = SLEEP(60)")
        except Exception as exc:  # KILL QUERY ends it
            ended.append(exc)
    # The UPDATE sleeps until told to stop: KILL QUERY on its connection once the freeze and
    # thaw are done, so the order does not depend on how long anything takes.
    update = threading.Thread(target=slow_update, daemon=True)
    update.start()
    wait_for(lambda: server.query("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE "
                                  "'UPDATE fsq.slow%%'", as_dict=True), 10, what="the UPDATE to run")
    freeze = env.start("freeze", "--caller", "vmware-tools")
    try:
        wait_for(lambda: lock_waiters(server), 20, what="the holder's lock statement to wait for the UPDATE")
        assert _probe_files(fs.mnt), "the probe should run during the lock wait"
        fs.freeze()
        time.sleep(0.3)
        fs.thaw()
        (row,) = server.query("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE "
                              "'UPDATE fsq.slow%%'", as_dict=True)
        server.sql("KILL QUERY %d" % row["ID"])
        r = freeze.wait(60)
        assert r.rc == 0, r
        with pytest.raises(AssertionError):
            wait_for(lambda: _result(env), 1.0, interval=0.01, what="a release (there must be none)")
        assert server.try_write(0.5) is None, "the lock went at a thaw from before it was taken"
    finally:
        update.join(10)
    r = env.run("thaw", "--caller", "vmware-tools")
    assert r.rc == 0, r
    assert _result(env)["outcome"] == "released"
