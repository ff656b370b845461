"""quiesce.holder.fsprobe without a real freeze: wait classification on captured /proc text,
choice of the probe directory, safe creation of the probe file, and the probe's
firing rules driven through a scripted writer process that blocks on a full FIFO."""

import fcntl
import os
import stat
import subprocess
import sys
import time

import pytest

from quiesce.holder import fsprobe, fswait
from quiesce.holder import probedir as probe_location
from quiesce.holder.fsprobe import FsThawProbe
from quiesce.holder.fswait import classify_wait, parse_stack
from quiesce.holder.probedir import choose_probe_dir


# --- captured samples ---------------------------------------------------------------
# Debian 12 guest kernel 6.18, root, thread blocked in pwrite() on an fsfreeze'd ext4.
FREEZE_6_18 = """\
[<0>] percpu_rwsem_wait+0x15f/0x1d0
[<0>] vfs_write+0x3f0/0x450
[<0>] __x64_sys_pwrite64+0xa3/0xe0
[<0>] do_syscall_64+0x71/0x280
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
"""
# Same kernel: fdatasync() on an ext4 whose loop device's backing file sits on a
# frozen filesystem: the I/O is stuck, the probe's own filesystem is not frozen.
STUCK_IO_WRITEBACK = """\
[<0>] folio_wait_bit+0xd6/0x220
[<0>] folio_wait_writeback+0x2a/0x90
[<0>] __filemap_fdatawait_range+0x7c/0xe0
[<0>] file_write_and_wait_range+0x8f/0xc0
[<0>] ext4_sync_file+0xa0/0x2d0
[<0>] do_fsync+0x3b/0xa0
[<0>] __x64_sys_fdatasync+0x12/0x20
[<0>] do_syscall_64+0x71/0x280
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
"""
# Same kernel: fdatasync() on a loop device throttled by blkio to 2 writes/s.
SLOW_IO_FLUSH = """\
[<0>] submit_bio_wait+0x74/0xc0
[<0>] blkdev_issue_flush+0x33/0x60
[<0>] ext4_sync_file+0x242/0x2d0
[<0>] do_fsync+0x3b/0xa0
[<0>] __x64_sys_fdatasync+0x12/0x20
[<0>] do_syscall_64+0x71/0x280
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
"""
# Same kernel: write() to a full pipe -- blocked under vfs_write, but not on a freeze.
PIPE_WRITE = """\
[<0>] anon_pipe_write+0x332/0x6c0
[<0>] vfs_write+0x398/0x450
[<0>] ksys_write+0xba/0xe0
[<0>] do_syscall_64+0x71/0x280
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
"""
# Same kernel: time.sleep().
NANOSLEEP = """\
[<0>] hrtimer_nanosleep+0x74/0xf0
[<0>] common_nsleep_timens+0x3d/0xa0
[<0>] __x64_sys_clock_nanosleep+0xce/0x140
[<0>] do_syscall_64+0x71/0x280
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
"""

# Older kernels, in the shapes their sources give.
# 5.8-5.10: __percpu_down_read out of line, sb_start_write inlined into vfs_write.
FREEZE_5_10 = """\
[<0>] percpu_rwsem_wait+0x116/0x140
[<0>] __percpu_down_read+0x4b/0x60
[<0>] vfs_write+0x2a4/0x2b0
[<0>] ksys_pwrite64+0x65/0xa0
[<0>] do_syscall_64+0x33/0x80
[<0>] entry_SYSCALL_64_after_hwframe+0x44/0xa9
"""
# 5.3-5.7: the percpu rwsem's slow path is a plain rwsem; __sb_start_write out of line.
FREEZE_5_4 = """\
[<0>] rwsem_down_read_slowpath+0x1a4/0x4b0
[<0>] __percpu_down_read+0x59/0x70
[<0>] __sb_start_write+0x5b/0x70
[<0>] vfs_write+0x16e/0x1a0
[<0>] ksys_pwrite64+0x69/0xa0
[<0>] __x64_sys_pwrite64+0x1e/0x30
[<0>] do_syscall_64+0x57/0x190
[<0>] entry_SYSCALL_64_after_hwframe+0x44/0xa9
"""
# 4.6-4.20 on x86: asm thunk, SyS_ names, real addresses hidden or not.
FREEZE_4_15 = """\
[<ffffffffa7b8f0a8>] call_rwsem_down_read_failed+0x18/0x30
[<ffffffffa74f3f36>] __percpu_down_read+0x56/0x80
[<ffffffffa7676b7b>] __sb_start_write+0x8b/0x90
[<ffffffffa767316d>] vfs_write+0x16d/0x1a0
[<ffffffffa7673625>] SyS_pwrite64+0x95/0xb0
[<ffffffffa7403b57>] do_syscall_64+0x67/0x130
[<ffffffffa7e00081>] entry_SYSCALL_64_after_hwframe+0x3d/0xa2
[<ffffffffffffffff>] 0xffffffffffffffff
"""
# 3.6-4.5 (RHEL 7): wait_event() inside __sb_start_write, which wchan names too.
FREEZE_3_10 = """\
[<ffffffff8120b8f5>] __sb_start_write+0xe5/0x120
[<ffffffff81209a3d>] vfs_write+0x19d/0x1f0
[<ffffffff8120a8bf>] SyS_pwrite64+0x9f/0xc0
[<ffffffff816c7715>] system_call_fastpath+0x1c/0x21
[<ffffffffffffffff>] 0xffffffffffffffff
"""
FREEZE_3_10_WITH_SCHEDULE = "[<ffffffff816a8ec9>] schedule+0x29/0x70\n" + FREEZE_3_10
# Older kernels wait for I/O in io_schedule.
SLOW_IO_4_X = """\
[<0>] io_schedule+0x16/0x40
[<0>] wait_on_page_bit+0x11a/0x1a0
[<0>] __filemap_fdatawait_range+0xe5/0x140
[<0>] file_write_and_wait_range+0x5a/0xb0
[<0>] ext4_sync_file+0x8f/0x3a0
[<0>] do_fsync+0x38/0x70
[<0>] __x64_sys_fdatasync+0x13/0x20
[<0>] do_syscall_64+0x57/0x190
[<0>] entry_SYSCALL_64_after_hwframe+0x44/0xa9
"""
# A percpu rwsem that is not the freeze lock: ext4's s_writepages_rwsem under fsync.
WRITEPAGES_RWSEM = """\
[<0>] percpu_rwsem_wait+0x116/0x140
[<0>] __percpu_down_read+0x4b/0x60
[<0>] ext4_writepages+0x3e/0x80 [ext4]
[<0>] do_writepages+0xc7/0x1c0
[<0>] filemap_fdatawrite_wbc+0x66/0x90
[<0>] file_write_and_wait_range+0x5f/0xc0
[<0>] ext4_sync_file+0xa0/0x2d0 [ext4]
[<0>] do_fsync+0x3b/0xa0
[<0>] __x64_sys_fdatasync+0x12/0x20
[<0>] do_syscall_64+0x33/0x80
"""
# A plain read lock in pwrite() under slow I/O: i_data_sem while extents are mapped.
DATA_SEM_IN_WRITE = """\
[<0>] rwsem_down_read_slowpath+0x1a4/0x4b0
[<0>] ext4_map_blocks+0x8a/0x5b0
[<0>] ext4_da_get_block_prep+0x1cc/0x440
[<0>] __block_write_begin_int+0x15f/0x5e0
[<0>] ext4_da_write_begin+0x10b/0x2a0
[<0>] generic_perform_write+0xc2/0x1c0
[<0>] ext4_buffered_write_iter+0x6d/0x140
[<0>] vfs_write+0x2a4/0x2b0
[<0>] ksys_pwrite64+0x65/0xa0
"""
# A percpu rwsem with a plain write caller: no percpu frame means no freeze.
PLAIN_RWSEM_UNDER_VFS_WRITE = """\
[<0>] rwsem_down_read_slowpath+0x1a4/0x4b0
[<0>] vfs_write+0x2a4/0x2b0
[<0>] ksys_pwrite64+0x65/0xa0
"""
CPU_HOTPLUG_LOCK = """\
[<0>] percpu_rwsem_wait+0x116/0x140
[<0>] __percpu_down_read+0x4b/0x60
[<0>] cpus_read_lock+0x20/0x30
[<0>] static_key_slow_inc+0x12/0x30
"""
# Compiler clone suffixes and module tags must not hide the names.
FREEZE_CLONES = """\
[<0>] percpu_rwsem_wait.constprop.0+0x15f/0x1d0
[<0>] vfs_write.part.0+0x3f0/0x450
[<0>] __x64_sys_pwrite64+0xa3/0xe0
"""


@pytest.mark.parametrize("stack", [
    FREEZE_6_18, FREEZE_5_10, FREEZE_5_4, FREEZE_4_15, FREEZE_3_10,
    FREEZE_3_10_WITH_SCHEDULE, FREEZE_CLONES,
], ids=["6.18", "5.10", "5.4", "4.15", "3.10", "3.10-schedule", "clones"])
def test_freeze_stacks_are_frozen(stack):
    verdict = classify_wait(stack, "whatever", in_write=True)
    assert verdict.frozen
    assert verdict.source == "stack"


def test_freeze_stack_counts_in_fsync_too():
    # The stack names the caller, so the call the probe was in does not matter.
    assert classify_wait(FREEZE_5_4, None, in_write=False).frozen


@pytest.mark.parametrize("stack,wait", [
    (STUCK_IO_WRITEBACK, "folio_wait_bit"),
    (SLOW_IO_FLUSH, "submit_bio_wait"),
    (SLOW_IO_4_X, "io_schedule"),
    (PIPE_WRITE, "anon_pipe_write"),
    (NANOSLEEP, "hrtimer_nanosleep"),
    (WRITEPAGES_RWSEM, "percpu_rwsem_wait"),
    (DATA_SEM_IN_WRITE, "rwsem_down_read_slowpath"),
    (PLAIN_RWSEM_UNDER_VFS_WRITE, "rwsem_down_read_slowpath"),
    (CPU_HOTPLUG_LOCK, "percpu_rwsem_wait"),
], ids=["stuck-writeback", "slow-flush", "io_schedule", "pipe", "sleep",
        "ext4-writepages-rwsem", "i_data_sem", "plain-rwsem", "cpu-hotplug"])
def test_other_waits_are_not_frozen(stack, wait):
    # Even a wchan that alone would say "freeze" is overruled by a readable stack.
    verdict = classify_wait(stack, "percpu_rwsem_wait\n", in_write=True)
    assert not verdict.frozen
    assert verdict.wait == wait
    assert verdict.source == "stack"


@pytest.mark.parametrize("wchan", [
    "percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read", "__sb_start_write",
    "percpu_rwsem_wait.constprop.0",
])
def test_wchan_fallback_freeze_during_write(wchan):
    for stack in (None, "", "\n"):
        verdict = classify_wait(stack, wchan, in_write=True)
        assert verdict.frozen and verdict.source == "wchan"


def test_wchan_fallback_not_trusted_outside_write():
    assert not classify_wait(None, "percpu_rwsem_wait", in_write=False).frozen


@pytest.mark.parametrize("wchan", [
    "io_schedule", "folio_wait_bit", "anon_pipe_write", "pipe_write",
    "hrtimer_nanosleep", "rwsem_down_read_slowpath", "rwsem_down_read_failed",
    "futex_wait_queue",
])
def test_wchan_fallback_other_waits(wchan):
    verdict = classify_wait(None, wchan + "\n", in_write=True)
    assert not verdict.frozen
    assert verdict.wait == wchan


@pytest.mark.parametrize("wchan", [None, "", "0", "0\n"])
def test_nothing_readable_or_running(wchan):
    assert classify_wait(None, wchan) == fswait.WaitClass(False, None, None)


def test_parse_stack():
    assert parse_stack(FREEZE_4_15) == [
        "call_rwsem_down_read_failed", "__percpu_down_read", "__sb_start_write",
        "vfs_write", "SyS_pwrite64", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"]
    assert parse_stack(WRITEPAGES_RWSEM)[2] == "ext4_writepages"
    assert parse_stack("garbage\n\n") == []


# --- choose_probe_dir ---------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    datadir = tmp_path / "lib" / "mysql"
    datadir.mkdir(parents=True)
    state = tmp_path / "lib" / "quiesce"
    state.mkdir(mode=0o700)
    return tmp_path, datadir, state


def fake_devices(monkeypatch, devices):
    """Make os.stat report st_dev from `devices` (path -> dev) for those paths."""
    real_stat = os.stat

    def fake_stat(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        dev = devices.get(os.fspath(path))
        if dev is None:
            return st
        fields = list(st)
        fields[stat.ST_DEV] = dev
        return os.stat_result(fields)

    monkeypatch.setattr(probe_location.os, "stat", fake_stat)


def test_choose_preferred_on_same_device(tree):
    _, datadir, state = tree
    assert choose_probe_dir(str(datadir), ["/nonexistent", str(state)]) == str(state)


def test_choose_parent_when_no_preferred(tree):
    _, datadir, _ = tree
    assert choose_probe_dir(str(datadir), ["/nonexistent"]) == str(datadir.parent)


def test_choose_skips_preferred_on_other_device(tree, monkeypatch):
    _, datadir, state = tree
    fake_devices(monkeypatch, {str(state): 4242})
    assert choose_probe_dir(str(datadir), [str(state)]) == str(datadir.parent)


def test_choose_datadir_itself_when_it_is_a_mount_root(tree, monkeypatch):
    _, datadir, state = tree
    dev = os.stat(datadir).st_dev + 1
    fake_devices(monkeypatch, {str(datadir): dev})
    assert choose_probe_dir(str(datadir), [str(state)]) == str(datadir)


def test_choose_never_below_datadir(tree):
    _, datadir, _ = tree
    inner = datadir / "quiesce"
    inner.mkdir()
    assert choose_probe_dir(str(datadir), [str(inner), str(datadir)]) == str(datadir.parent)


def test_choose_skips_world_writable_without_sticky_bit(tree):
    tmp, datadir, _ = tree
    open_dir = tmp / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    sticky = tmp / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert choose_probe_dir(str(datadir), [str(open_dir)]) == str(datadir.parent)
    assert choose_probe_dir(str(datadir), [str(open_dir), str(sticky)]) == str(sticky)


def test_choose_resolves_symlinked_datadir(tree):
    tmp, datadir, _ = tree
    link = tmp / "mysql-link"
    link.symlink_to(datadir)
    assert choose_probe_dir(str(link), []) == str(datadir.parent)


def test_choose_resolves_symlinked_preferred(tree):
    tmp, datadir, state = tree
    link = tmp / "state-link"
    link.symlink_to(state)
    assert choose_probe_dir(str(datadir), [str(link)]) == str(state)


def test_choose_none_for_missing_or_non_directory(tree):
    tmp, _, state = tree
    assert choose_probe_dir(str(tmp / "missing"), [str(state)]) is None
    afile = tmp / "afile"
    afile.write_text("x")
    assert choose_probe_dir(str(afile), [str(state)]) is None


# --- probe file ---------------------------------------------------------------------

def probe_files(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(probe_location.PROBE_PREFIX))


def test_start_creates_private_file_and_stop_removes_it(tmp_path):
    old = os.umask(0)
    try:
        probe = FsThawProbe(str(tmp_path), lambda: None, interval=0.005)
        probe.start()
    finally:
        os.umask(old)
    try:
        names = probe_files(tmp_path)
        assert len(names) == 1
        assert probe_location.PROBE_NAME.match(names[0])
        assert probe.path == str(tmp_path / names[0])
        st = os.lstat(probe.path)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_size == 1
        deadline = time.monotonic() + 2
        while probe.writes < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert probe.writes >= 10
        assert probe.state == "probing"
    finally:
        assert probe.stop(wait=2)
    assert probe_files(tmp_path) == []
    assert probe.finished and probe.state == "stopped"
    assert not probe.fired and probe.error is None and probe.frozen_at is None


def test_start_refuses_symlink_at_probe_path(tmp_path, monkeypatch):
    monkeypatch.setattr(FsThawProbe, "_token", staticmethod(lambda: "0123456789abcdef"))
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    target.chmod(0o644)
    name = "%s%d-0123456789abcdef" % (probe_location.PROBE_PREFIX, os.getpid())
    (tmp_path / name).symlink_to(target)
    probe = FsThawProbe(str(tmp_path), lambda: None)
    with pytest.raises(FileExistsError):
        probe.start()
    assert target.read_bytes() == b"precious"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.path.islink(tmp_path / name)
    assert probe.error and not probe.fired
    assert probe.stop() is True


def test_start_refuses_dangling_symlink_at_probe_path(tmp_path, monkeypatch):
    monkeypatch.setattr(FsThawProbe, "_token", staticmethod(lambda: "fedcba9876543210"))
    name = "%s%d-fedcba9876543210" % (probe_location.PROBE_PREFIX, os.getpid())
    (tmp_path / name).symlink_to(tmp_path / "would-be-created")
    with pytest.raises(FileExistsError):
        FsThawProbe(str(tmp_path), lambda: None).start()
    assert not (tmp_path / "would-be-created").exists()


def test_start_refuses_symlinked_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OSError):
        FsThawProbe(str(link), lambda: None).start()
    assert os.listdir(real) == []


def test_start_twice_is_an_error(tmp_path):
    probe = FsThawProbe(str(tmp_path), lambda: None)
    probe.start()
    try:
        with pytest.raises(RuntimeError):
            probe.start()
    finally:
        probe.stop(wait=2)


def test_sweep_removes_only_dead_owners(tmp_path):
    dead = "%s%d-%s" % (probe_location.PROBE_PREFIX, 2 ** 22 + 12345, "a" * 16)  # > pid_max
    live = "%s%d-%s" % (probe_location.PROBE_PREFIX, os.getppid(), "b" * 16)
    mine = "%s%d-%s" % (probe_location.PROBE_PREFIX, os.getpid(), "c" * 16)
    other = "%s%d-%s" % (probe_location.PROBE_PREFIX, 2 ** 22 + 12345, "xyz")
    for n in (dead, live, mine, other, "ibdata1"):
        (tmp_path / n).write_text("")
    probe = FsThawProbe(str(tmp_path), lambda: None)
    probe.start()
    probe.stop(wait=2)
    assert sorted(os.listdir(tmp_path)) == sorted([live, mine, other, "ibdata1"])


# --- the writer process ---------------------------------------------------------------

def open_fds(pid):
    return sorted(int(n) for n in os.listdir("/proc/%d/fd" % pid))


def test_writer_holds_only_the_probe_file(tmp_path):
    # The point of a separate writer: the holder's descriptors (its database
    # connection) must not be kept alive by a write stuck in a frozen filesystem.
    r, w = os.pipe()  # stands in for the holder's database socket
    os.set_inheritable(w, True)
    probe = FsThawProbe(str(tmp_path), lambda: None)
    probe.start()
    try:
        fds = open_fds(probe.pid)
        assert len(fds) == 3 + 4, fds  # stdio (/dev/null), dir, file, two pipes
        targets = [os.readlink("/proc/%d/fd/%d" % (probe.pid, n)) for n in fds]
        assert os.readlink("/proc/self/fd/%d" % w) not in targets
        assert targets.count("/dev/null") == 3
        assert probe.path in targets and str(tmp_path) in targets
        assert not any(t.startswith("socket:") for t in targets)
        assert os.readlink("/proc/%d/cwd" % probe.pid) == "/"
        mine = [os.readlink("/proc/self/fd/%s" % n) for n in os.listdir("/proc/self/fd")
                if os.path.exists("/proc/self/fd/%s" % n)]
        assert probe.path not in mine, "the holder side must not keep the probe file open"
    finally:
        probe.stop(wait=2)
        os.close(r)
        os.close(w)
    assert not os.path.exists("/proc/%d/fd" % probe.pid)  # exited and reaped


def test_writer_exits_and_cleans_up_when_the_holder_dies(tmp_path):
    code = ("import sys, time; sys.path.insert(0, %r);"
            "from quiesce.holder.fsprobe import FsThawProbe;"
            "p = FsThawProbe(%r, lambda: None); p.start();"
            "print(p.pid, p.path, flush=True); time.sleep(60)"
            % (os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
               str(tmp_path)))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              universal_newlines=True)
    try:
        pid, path = holder.stdout.readline().split()
        assert os.path.exists(path)
    finally:
        holder.kill()
        holder.wait()
    assert wait_for(lambda: not os.path.exists(path), 3)
    assert wait_for(lambda: not os.path.exists("/proc/%s/fd" % pid), 3)


def test_writer_that_does_not_start_fails_closed(tmp_path):
    class Broken(FsThawProbe):
        def _child_command(self):
            return [sys.executable, "-c", "pass"]

    probe = Broken(str(tmp_path), lambda: None)
    with pytest.raises(OSError):
        probe.start()
    assert probe_files(tmp_path) == [] and probe.error


# --- firing rules, driven through a scripted writer -------------------------------------

# Speaks the writer's protocol.  When the file "arm" exists in its control directory,
# its next write goes to the control FIFO instead, which the test has filled: a real
# kernel wait in write() that is not a freeze.  mode "eio" fails from the 4th call on;
# "eio-after-block" fails the call that was blocked.
SCRIPTED_WRITER = r"""
import os, sys
mode, ctl = sys.argv[1], sys.argv[2]
dfd, fd, cmd, rep = (int(a) for a in sys.argv[3:7])
name = sys.argv[7]
os.write(rep, b"0\n")
n = 0
try:
    while True:
        c = os.read(cmd, 1)
        if not c:
            break
        n += 1
        err = 0
        if c == b"w" and os.path.exists(os.path.join(ctl, "arm")):
            os.unlink(os.path.join(ctl, "arm"))
            w = os.open(os.path.join(ctl, "fifo"), os.O_WRONLY)
            open(os.path.join(ctl, "blocked"), "w").close()
            os.write(w, b"y")
            os.close(w)
            if mode == "eio-after-block":
                err = 5
        elif mode == "eio" and n > 3:
            err = 5
        else:
            try:
                if c == b"w":
                    os.pwrite(fd, b"\0", 0)
                else:
                    os.fdatasync(fd)
            except OSError as e:
                err = e.errno
        os.write(rep, b"%d\n" % err)
finally:
    os.close(fd)
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass
"""


class Control:
    """The scripted writer's control directory and its pre-filled FIFO."""

    def __init__(self, base):
        self.dir = str(base / "ctl")
        os.mkdir(self.dir)
        self.script = os.path.join(self.dir, "writer.py")
        with open(self.script, "w") as f:
            f.write(SCRIPTED_WRITER)
        fifo = os.path.join(self.dir, "fifo")
        os.mkfifo(fifo)
        self.r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        fcntl.fcntl(self.w, 1031, 4096)  # F_SETPIPE_SZ: smallest buffer
        try:
            while True:
                os.write(self.w, b"x" * 4096)
        except BlockingIOError:
            pass

    def arm(self):
        open(os.path.join(self.dir, "arm"), "w").close()

    def wait_blocked(self, timeout=3):
        return wait_for(lambda: os.path.exists(os.path.join(self.dir, "blocked")), timeout)

    def drain(self):
        try:
            while os.read(self.r, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self):
        self.drain()
        os.close(self.w)
        os.close(self.r)


@pytest.fixture
def ctl(tmp_path):
    c = Control(tmp_path)
    yield c
    c.close()


@pytest.fixture
def probedir(tmp_path):
    d = tmp_path / "probe"
    d.mkdir()
    return d


class ScriptedProbe(FsThawProbe):
    def __init__(self, directory, on_thaw, ctl, mode="normal", **kwargs):
        kwargs.setdefault("interval", 0.01)
        kwargs.setdefault("stall_after", 0.02)
        super().__init__(directory, on_thaw, **kwargs)
        self.ctl, self.mode = ctl, mode

    def _child_command(self):
        return [sys.executable, "-I", "-S", "-B", self.ctl.script, self.mode, self.ctl.dir]


@pytest.fixture
def pretend_pipe_is_freeze(monkeypatch):
    """Classify every stall as a freeze: exercises firing without root or a real freeze."""
    monkeypatch.setattr(fsprobe, "classify_wait",
                        lambda stack, wchan, in_write=True: fswait.WaitClass(True, "x", "t"))


def wait_for(cond, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _release_and_see_writes_resume(ctl, probe, more):
    """Let the blocked writer go (drain its FIFO) and wait for `more` probe calls after it."""
    ctl.drain()
    n = probe.writes
    assert wait_for(lambda: probe.writes > n + more)


def test_stuck_on_pipe_never_fires(probedir, ctl):
    calls = []
    probe = ScriptedProbe(str(probedir), lambda: calls.append(1), ctl)
    probe.start()
    try:
        ctl.arm()
        assert ctl.wait_blocked()
        assert wait_for(lambda: probe.stalls >= 1)
        time.sleep(0.2)
        assert probe.frozen_at is None and probe.state == "probing"
        if probe.inspection in ("stack", "wchan"):
            assert "pipe" in (probe.last_wait or ""), probe.last_wait
        _release_and_see_writes_resume(ctl, probe, 4)
        assert not calls and not probe.fired and probe.thawed_at is None
    finally:
        probe.stop(wait=2)


def test_fires_once_when_a_frozen_call_returns(probedir, ctl, pretend_pipe_is_freeze):
    fired = []
    probe = ScriptedProbe(str(probedir), lambda: fired.append(time.monotonic()), ctl)
    probe.start()
    try:
        ctl.arm()
        assert ctl.wait_blocked()
        assert wait_for(lambda: probe.frozen_at is not None)
        assert probe.state == "frozen"
        time.sleep(0.1)
        assert not fired
        released = time.monotonic()
        ctl.drain()
        assert wait_for(lambda: probe.finished)
        # After the frozen call was let go, never before (the latency is no unit test).
        assert len(fired) == 1 and fired[0] >= released
        assert probe.fired and probe.state == "fired"
        assert probe.thawed_at.monotonic >= probe.frozen_at.monotonic
        assert probe.thawed_at.monotonic <= fired[0]
        assert probe_files(probedir) == []
    finally:
        probe.stop(wait=2)


def test_stop_while_blocked_returns_at_once_and_never_fires(probedir, ctl,
                                                            pretend_pipe_is_freeze):
    fired = []
    probe = ScriptedProbe(str(probedir), lambda: fired.append(1), ctl)
    probe.start()
    ctl.arm()
    assert wait_for(lambda: probe.frozen_at is not None)
    t0 = time.monotonic()
    assert probe.stop(wait=5) is False
    # It did not wait for the writer: 5 s is 100 times what a descheduled thread costs.
    assert time.monotonic() - t0 < 5
    assert probe.state == "stopping"
    assert len(probe_files(probedir)) == 1
    ctl.drain()
    assert probe.join(2)
    assert probe_files(probedir) == [] and not fired and not probe.fired
    assert probe.state == "stopped"


def test_io_error_stops_quietly(probedir, ctl):
    fired = []
    probe = ScriptedProbe(str(probedir), lambda: fired.append(1), ctl, mode="eio")
    probe.start()
    assert probe.join(2)
    assert probe.error is not None and "Errno 5" in probe.error
    assert probe.state == "failed" and not fired and not probe.fired
    assert probe_files(probedir) == []
    assert probe.stop() is True


def test_io_error_after_freeze_does_not_fire(probedir, ctl, pretend_pipe_is_freeze):
    fired = []
    probe = ScriptedProbe(str(probedir), lambda: fired.append(1), ctl,
                          mode="eio-after-block")
    probe.start()
    ctl.arm()
    assert wait_for(lambda: probe.frozen_at is not None)
    ctl.drain()
    assert probe.join(2)
    assert not fired and not probe.fired and probe.error


def test_writer_dying_mid_call_does_not_fire(probedir, ctl, pretend_pipe_is_freeze):
    fired = []
    probe = ScriptedProbe(str(probedir), lambda: fired.append(1), ctl)
    probe.start()
    ctl.arm()
    assert wait_for(lambda: probe.frozen_at is not None)
    os.kill(probe.pid, 9)
    assert probe.join(2)
    assert not fired and not probe.fired
    assert probe.error == "writer exited unexpectedly"


def test_callback_exception_is_kept(probedir, ctl, pretend_pipe_is_freeze):
    def boom():
        raise ValueError("boom")

    probe = ScriptedProbe(str(probedir), boom, ctl)
    probe.start()
    ctl.arm()
    assert wait_for(lambda: probe.frozen_at is not None)
    ctl.drain()
    assert probe.join(2)
    assert probe.fired and "boom" in probe.callback_error


def test_stop_before_start_and_bad_arguments(tmp_path):
    assert FsThawProbe(str(tmp_path), lambda: None).stop() is True
    with pytest.raises(ValueError):
        FsThawProbe(str(tmp_path), lambda: None, interval=0)


def _refill(ctl):
    """Fill the FIFO again, so that the next armed write blocks (pipe writes of up to a page
    are all or nothing: finish with single bytes)."""
    os.unlink(os.path.join(ctl.dir, "blocked"))
    for chunk in (b"x" * 4096, b"x"):
        try:
            while True:
                os.write(ctl.w, chunk)
        except BlockingIOError:
            pass


def test_a_freeze_begun_before_arming_does_not_count(probedir, ctl, pretend_pipe_is_freeze):
    fired = []
    probe = ScriptedProbe(str(probedir), lambda: fired.append(time.monotonic()), ctl, armed=False)
    probe.start()
    try:
        assert wait_for(lambda: probe.writes >= 2)
        ctl.arm()
        assert wait_for(lambda: probe.ignored_freezes == 1)
        probe.arm()                 # the lock is held now, with that freeze still under way
        _release_and_see_writes_resume(ctl, probe, 2)
        assert not fired and not probe.fired and probe.frozen_at is None and probe.state == "probing"
        # A freeze that begins after arming is the one waited for.
        _refill(ctl)
        ctl.arm()
        assert wait_for(lambda: probe.frozen_at is not None)
        released = time.monotonic()
        ctl.drain()
        assert wait_for(lambda: probe.finished)
        assert len(fired) == 1 and fired[0] >= released and probe.ignored_freezes == 1
    finally:
        probe.stop(wait=2)


def test_an_unarmed_probe_never_fires(probedir, ctl, pretend_pipe_is_freeze):
    fired = []
    probe = ScriptedProbe(str(probedir), lambda: fired.append(1), ctl, armed=False)
    probe.start()
    try:
        ctl.arm()
        assert wait_for(lambda: probe.ignored_freezes == 1)
        _release_and_see_writes_resume(ctl, probe, 2)
        assert not fired and not probe.fired and probe.frozen_at is None
    finally:
        probe.stop(wait=2)
