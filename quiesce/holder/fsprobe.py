"""Notice the moment the database's filesystem is thawed, so the lock can go at once.

Backup software runs our thaw hook about a second after it thaws the filesystems; for
that second the database is locked for nothing.  While a filesystem is frozen every
write to it sleeps on the superblock's freeze lock, and returns as soon as the thaw
releases that lock.  So a writer that keeps rewriting one byte of a file on the
datadir's filesystem ends up asleep on that lock during the snapshot and wakes up at
the thaw.  What the kernel says the writer waits for (/proc/PID/stack, else
/proc/PID/wchan) tells a freeze from anything else: only a write seen asleep on the
freeze lock counts as a thaw when it returns.  Slow or failing I/O, a freeze of some
other filesystem, or no freeze at all never fire.

The writer is a small child process (fsprobe_writer), not a thread of the holder: a
process cannot finish exiting while one of its threads sleeps in a frozen write, and
until it has, its descriptors stay open -- the database connection, and with it the
lock, would outlive even a SIGKILL of the holder until the thaw.  The child is spawned
with nothing but the probe file, so the holder never touches the probed filesystem
after start() and can always exit or be killed.  This module is the detector: it
drives the writer and tells a freeze from anything else.

Nothing here logs or writes anywhere but the probe file: the holder must not touch a
frozen filesystem, and it reads what happened from the probe's attributes.
"""

from __future__ import annotations

import os
import re
import select
import stat
import subprocess
import sys
import threading
import time
from typing import Callable, List, NamedTuple, Optional, Sequence

from quiesce.base import budget, paths
from quiesce.holder import fsprobe_writer

__all__ = [
    "PROBE_PREFIX",
    "Stamp",
    "WaitClass",
    "FsThawProbe",
    "choose_probe_dir",
    "classify_wait",
    "parse_stack",
    "sweep_stale",
]

PROBE_PREFIX = ".quiesce-fsprobe-"
WRITER_START_LIMIT = budget.WRITER_START_LIMIT
# pid then 16 random hex digits; the pid tells a sweep whether the owner is still alive.
_PROBE_NAME = re.compile(r"^" + re.escape(PROBE_PREFIX) + r"(\d+)-[0-9a-f]{16}$")


class Stamp(NamedTuple):
    """One instant on both clocks: monotonic for durations, wall for reports."""

    monotonic: float
    wall: float

    @classmethod
    def now(cls) -> "Stamp":
        return cls(time.monotonic(), time.time())


class WaitClass(NamedTuple):
    """What a blocked thread waits for, as far as the kernel tells.

    frozen -- the thread sleeps on a superblock freeze lock
    wait   -- the innermost wait function seen (diagnostics), None if nothing readable
    source -- "stack", "wchan" or None: which /proc file decided
    """

    frozen: bool
    wait: Optional[str]
    source: Optional[str]


# --- classification (pure functions, unit-tested on captured text) -------------------

# Frames of the context switch itself; they say nothing about what is awaited.
_SWITCH_FRAMES = frozenset({
    "__switch_to", "__switch_to_asm", "__schedule", "schedule",
    "schedule_preempt_disabled", "schedule_timeout", "preempt_schedule_common",
    "_cond_resched", "__cond_resched",
})

# Sleeping primitives the freeze lock has been built from: a percpu rw-semaphore since
# 4.6 (whose slow path went through a plain rw-semaphore until 5.7), wait_event inside
# __sb_start_write before that.  The plain rwsem ones are only accepted when a percpu
# frame and a write-side caller are also there: on their own they are any read lock
# (an inode's i_data_sem under slow I/O, mmap_lock, ...).
_LOCK_FRAMES = frozenset({
    "percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read",
    "percpu_down_read_internal",
    "rwsem_down_read_slowpath", "rwsem_down_read_failed",
    "rwsem_down_read_failed_killable", "call_rwsem_down_read_failed",
    "__down_read", "down_read", "__down_read_common",
})
_PERCPU_FRAMES = frozenset({
    "percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read",
    "percpu_down_read_internal",
})

# Callers that take the freeze lock: the sb_start_*() helpers when not inlined, and the
# write entry points they are inlined into.  Another percpu rwsem taken elsewhere in the
# write path (ext4's s_writepages_rwsem under fsync, cpu hotplug) has a different caller.
_SB_START_FRAMES = frozenset({
    "__sb_start_write", "sb_start_write", "__sb_start_write_trylock",
    "sb_start_write_trylock", "sb_start_intwrite", "sb_start_pagefault",
})
_FREEZE_CALLERS = _SB_START_FRAMES | frozenset({
    "file_start_write", "kiocb_start_write",
    "vfs_write", "__vfs_write", "vfs_writev", "do_iter_write", "vfs_iter_write",
    "__kernel_write", "kernel_write", "ksys_write", "ksys_pwrite64",
    "sys_write", "SyS_write", "sys_pwrite64", "SyS_pwrite64",
    "__x64_sys_pwrite64", "__do_sys_pwrite64", "__se_sys_pwrite64",
    "__ia32_sys_pwrite64", "__arm64_sys_pwrite64", "__x64_sys_write",
    "__arm64_sys_write", "mnt_want_write", "mnt_want_write_file",
})

# With only wchan to go by, a percpu-rwsem wait during our pwrite() can only be the
# freeze lock; a plain rwsem wait can be many things, so it never counts.
_WCHAN_FREEZE = frozenset({
    "percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read",
    "__sb_start_write", "sb_start_write",
})

_FRAME = re.compile(r"^\s*(?:\[<[0-9a-fA-Fx]*>\]\s*)?([A-Za-z_$][\w.$]*)\+0x")


def _base_name(symbol: str) -> str:
    # Compiler clones: "vfs_write.part.0", "percpu_rwsem_wait.constprop.0".
    return symbol.split(".", 1)[0]


def parse_stack(text: str) -> List[str]:
    """Function names of a /proc/PID/stack dump, innermost first."""
    frames = []
    for line in text.splitlines():
        m = _FRAME.match(line)
        if m:
            frames.append(_base_name(m.group(1)))
    return frames


def classify_wait(stack: Optional[str], wchan: Optional[str],
                  in_write: bool = True) -> WaitClass:
    """Decide from /proc text whether a blocked thread waits for a filesystem thaw.

    stack    -- contents of /proc/.../stack, or None if unreadable
    wchan    -- contents of /proc/.../wchan, or None if unreadable
    in_write -- the thread is inside write()/pwrite() (not fsync); wchan alone is only
                trusted then, because the percpu rwsem it names could belong to
                something else during an fsync

    The stack decides when it has frames; wchan is the fallback.  Anything not clearly
    the freeze lock is "not frozen": a missed thaw only costs the usual thaw hook, a
    false one would release the lock during the snapshot.
    """
    frames = parse_stack(stack) if stack else []
    while frames and frames[0] in _SWITCH_FRAMES:
        frames.pop(0)
    if frames:
        i = 0
        percpu = False
        while i < len(frames) and frames[i] in _LOCK_FRAMES:
            percpu = percpu or frames[i] in _PERCPU_FRAMES
            i += 1
        caller = frames[i] if i < len(frames) else None
        frozen = caller in _SB_START_FRAMES or (percpu and caller in _FREEZE_CALLERS)
        return WaitClass(frozen, frames[0], "stack")
    w = _base_name(wchan.strip()) if wchan else ""
    if w and w != "0":
        return WaitClass(in_write and w in _WCHAN_FREEZE, w, "wchan")
    return WaitClass(False, None, None)


# --- where to put the probe ----------------------------------------------------------

def _usable_dir(path: str, dev: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_dev != dev:
        return False
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def choose_probe_dir(datadir: str,
                     preferred: Sequence[str] = ("/var/lib/quiesce",)) -> Optional[str]:
    """A writable directory on the same filesystem (st_dev) as datadir, or None.

    In order: the first of `preferred` that qualifies, the datadir's parent, the datadir
    itself.  Paths are resolved, and nothing below the datadir is used except the
    datadir itself: a subdirectory there would be a database to the server.

    The datadir itself is the last resort because a datadir on its own filesystem
    (mounted at /var/lib/mysql) is the usual layout on database servers, and without
    it the feature would be off exactly there.  The probe file is a dotfile and not a
    directory, so neither MariaDB nor MySQL sees it as a schema or a tablespace, and it
    exists only while the lock is held.  Returns None when the datadir is not an
    existing directory.
    """
    try:
        real = os.path.realpath(datadir)
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    dev = st.st_dev
    for cand in preferred:
        path = os.path.realpath(cand)
        if not paths.inside(path, real) and _usable_dir(path, dev):
            return path
    parent = os.path.dirname(real)
    if parent != real and _usable_dir(parent, dev):
        return parent
    if os.access(real, os.W_OK | os.X_OK):
        return real
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def sweep_stale(directory: str, dir_fd: Optional[int] = None) -> List[str]:
    """Remove probe files left by processes that are gone; return their names.

    A probe whose thread was still stuck in a frozen write when its process exited
    leaves its file behind, and a snapshot always contains the probe of the moment.
    Files of live processes (this one included: its probes clean up after themselves)
    are left alone.
    """
    removed = []
    own = dir_fd is None
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if own else dir_fd
    try:
        for name in os.listdir(dfd):
            m = _PROBE_NAME.match(name)
            if not m:
                continue
            pid = int(m.group(1))
            if pid == os.getpid() or _pid_alive(pid):
                continue
            try:
                # unlink never follows a symlink: at worst it removes the link.
                os.unlink(name, dir_fd=dfd)
                removed.append(name)
            except OSError:
                pass
    finally:
        if own:
            os.close(dfd)
    return removed


# --- the probe -----------------------------------------------------------------------

class _Op(NamedTuple):
    seq: int
    phase: str      # "write" or "sync"
    started: Stamp


def _read_proc(path: str) -> Optional[str]:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(65536).decode("ascii", "replace")
    except OSError:
        return None


def _close(fd: Optional[int]) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class FsThawProbe:
    """Calls on_thaw() once, from a thread of its own, when the probed filesystem thaws.

    probe = FsThawProbe(directory, on_thaw)   # directory from choose_probe_dir()
    probe.start()    # raises OSError if the probe file or the writer cannot be made
    ...
    probe.stop()     # never blocks on a frozen filesystem

    Start it before the freeze, and after any fork (its thread does not survive one).
    Made with armed=False, it counts no freeze until arm() is called (a holder arms it
    once the lock is held, so a freeze begun earlier is never taken for the snapshot's).
    on_thaw runs in the probe's thread, so it must be
    quick and must not raise or touch a filesystem: writing a byte to a pipe the
    holder's select() loop watches is the intended use.  It is called at most once, only
    after a probe write was seen asleep on the freeze lock and then returned without
    error, and never once stop() has been called (a call already under way may still be
    running when stop() returns; stop(wait=...) waits for it).  Each probe is good for
    one freeze; make a new one for the next.

    The writer child is reaped by the probe's thread; a holder that reaps every child
    itself (waitpid(-1)) takes that job over, which is harmless.

    Attributes are safe to read from any thread at any time.
    """

    def __init__(self, directory: str, on_thaw: Callable[[], None],
                 interval: float = 0.025, stall_after: float = 0.05, armed: bool = True) -> None:
        """interval    -- pause between probe writes, seconds
        stall_after -- a probe call blocked this long gets its kernel wait inspected
        armed       -- count freezes that begin after start(); False: none until arm()
        """
        if interval <= 0 or stall_after <= 0:
            raise ValueError("interval and stall_after must be positive")
        self._directory = directory
        self._on_thaw = on_thaw
        self._interval = interval
        self._stall_after = stall_after
        self._mu = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self._stopping = False
        self._op: Optional[_Op] = None
        self._frozen_seq: Optional[int] = None
        self._frozen_at: Optional[Stamp] = None
        self._thawed_at: Optional[Stamp] = None
        self._fired = False
        # A freeze counts only if it began after _count_from (monotonic; None: not armed),
        # which a probe call started since then and not held by a freeze proves (_clear).
        self._armed = armed
        self._count_from: Optional[float] = None
        self._clear = False
        self._ignored = 0
        self._error: Optional[str] = None
        self._callback_error: Optional[str] = None
        self._stalls = 0
        self._last_wait: Optional[str] = None
        self._inspection: Optional[str] = None
        self._name: Optional[str] = None
        self._child: Optional[subprocess.Popen] = None
        self._cmd_w: Optional[int] = None
        self._rep_r: Optional[int] = None
        self._wake_r: Optional[int] = None
        self._wake_w: Optional[int] = None
        self._writes = 0
        self._thread: Optional[threading.Thread] = None

    # -- status, read-only --
    @property
    def path(self) -> Optional[str]:
        """The probe file, once started."""
        return os.path.join(self._directory, self._name) if self._name else None

    @property
    def pid(self) -> Optional[int]:
        """The writer child's pid, once started."""
        return self._child.pid if self._child else None

    @property
    def frozen_at(self) -> Optional[Stamp]:
        """Start of the probe write that was seen asleep on the freeze lock."""
        return self._frozen_at

    @property
    def thawed_at(self) -> Optional[Stamp]:
        """When that write returned, i.e. the thaw; set only together with fired."""
        return self._thawed_at

    @property
    def fired(self) -> bool:
        return self._fired

    @property
    def error(self) -> Optional[str]:
        """Why probing ended early ("write: [Errno 5] ..."); it never fires after one."""
        return self._error

    @property
    def callback_error(self) -> Optional[str]:
        """What on_thaw raised, if it did."""
        return self._callback_error

    @property
    def stalls(self) -> int:
        """Probe calls blocked longer than stall_after on something other than a freeze."""
        return self._stalls

    @property
    def last_wait(self) -> Optional[str]:
        """Kernel wait function of the last inspected stall or freeze (diagnostics)."""
        return self._last_wait

    @property
    def inspection(self) -> Optional[str]:
        """"stack", "wchan" or "none": what this kernel lets the probe read.  With
        "none" the probe can never fire."""
        return self._inspection

    @property
    def ignored_freezes(self) -> int:
        """Freezes seen that may have begun before the probe was armed, so not counted."""
        return self._ignored

    @property
    def writes(self) -> int:
        """Probe calls completed."""
        return self._writes

    @property
    def finished(self) -> bool:
        """The writer has exited (having removed its file, if it could) and been reaped."""
        return self._done.is_set()

    @property
    def state(self) -> str:
        """new | probing | frozen | fired | failed | stopping | stopped"""
        with self._mu:
            if not self._started:
                return "new"
            if self._fired:
                return "fired"
            if self._error:
                return "failed"
            if self._stopping:
                return "stopped" if self._done.is_set() else "stopping"
            if self._frozen_seq is not None:
                return "frozen"
            return "probing"

    # -- control --
    def start(self) -> None:
        """Make the probe file, start the writer and the probe's thread.  Raises OSError
        (and leaves nothing behind) if the directory is a symlink, the file cannot be
        created exclusively, its first write fails, or the writer does not start."""
        with self._mu:
            if self._started:
                raise RuntimeError("probe already started")
            self._started = True
        begun = time.monotonic()
        try:
            self._spawn()
        except BaseException as e:
            self._error = "start: %s" % (e,)
            raise
        if self._armed:
            # _spawn()'s own write went through: the filesystem was not frozen since begun.
            self._count_from, self._clear = begun, True
        self._inspection = self._probe_inspection()
        thread = threading.Thread(target=self._run, name="fsprobe", daemon=True)
        try:
            thread.start()
        except BaseException as e:
            self._error = "start: %s" % (e,)
            self._finish()  # the writer removes its file and exits
            raise
        self._thread = thread

    def arm(self) -> None:
        """Count only a freeze that begins from now on: one already under way, or one that
        began earlier and ends later, is not the one this probe waits for. Never blocks."""
        with self._mu:
            self._count_from = time.monotonic()
            self._clear = False
            self._nudge()

    def _nudge(self) -> None:
        # Wakes the probe's thread (for a prompt probe call, or to stop). Under self._mu:
        # _finish() closes this descriptor under it too, so the number cannot have been
        # reused by then. Non-blocking, and one byte is enough.
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def stop(self, wait: float = 0.2) -> bool:
        """Stop probing; on_thaw will not be called any more.

        Returns True when the writer has exited and removed its file.  If a probe call
        is blocked (frozen filesystem, stuck I/O) this returns False at once; the writer
        removes its file and exits when the call returns, whether or not this process
        still exists then.  Otherwise it waits at most `wait` seconds.  Never touches
        the probed filesystem itself.
        """
        with self._mu:
            if not self._started:
                return True
            self._stopping = True
            op = self._op
            self._nudge()
        if self._thread is None:
            return True
        if op is not None and time.monotonic() - op.started.monotonic >= self._stall_after:
            return self._done.is_set()
        return self._done.wait(wait)

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the writer to exit and be reaped; True if it was."""
        if self._thread is None:
            return True
        return self._done.wait(timeout)

    # -- internals --
    @staticmethod
    def _token() -> str:
        import secrets  # only when a probe starts: the holder imports this module early
        return secrets.token_hex(8)

    def _child_command(self) -> List[str]:
        """argv of the writer, without its five arguments."""
        return [sys.executable, "-I", "-S", "-B", os.path.abspath(fsprobe_writer.__file__)]

    def _spawn(self) -> None:
        if not sys.executable:
            raise OSError("no interpreter path to start the probe writer with")
        dfd = os.open(self._directory,
                      os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fd = cmd_r = cmd_w = rep_r = rep_w = wake_r = wake_w = None
        name = PROBE_PREFIX + "%d-%s" % (os.getpid(), self._token())
        created = False
        try:
            try:
                sweep_stale(self._directory, dir_fd=dfd)
            except OSError:
                pass
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            created = True
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise OSError("probe file %s is not a fresh regular file" % name)
            os.fchmod(fd, 0o600)
            # The block is allocated now, before any freeze; later writes only
            # overwrite it.
            os.pwrite(fd, b"\0", 0)
            os.fdatasync(fd)
            cmd_r, cmd_w = os.pipe()
            rep_r, rep_w = os.pipe()
            wake_r, wake_w = os.pipe()
            for p in (cmd_w, rep_r, wake_r, wake_w):
                os.set_inheritable(p, False)
            os.set_blocking(wake_w, False)
            child = subprocess.Popen(
                self._child_command() + [str(dfd), str(fd), str(cmd_r), str(rep_w), name],
                pass_fds=(dfd, fd, cmd_r, rep_w), close_fds=True, cwd="/",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            for mine in (fd, cmd_r, rep_w):
                os.close(mine)
            fd = cmd_r = rep_w = None
            ready, _, _ = select.select([rep_r], [], [], WRITER_START_LIMIT)
            hello = os.read(rep_r, 64) if ready else b""
            if hello != b"0\n":
                os.close(cmd_w)
                cmd_w = None
                try:
                    child.wait(5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                raise OSError("the probe writer did not start (%r)" % (hello,))
            # From here on the writer owns the file: it unlinks it when it exits.
            created = False
            os.close(dfd)
            dfd = None
        except BaseException:
            if created and dfd is not None:
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:
                    pass
            for p in (fd, dfd, cmd_r, cmd_w, rep_r, rep_w, wake_r, wake_w):
                _close(p)
            raise
        self._name, self._child = name, child
        self._cmd_w, self._rep_r, self._wake_r, self._wake_w = cmd_w, rep_r, wake_r, wake_w

    def _probe_inspection(self) -> str:
        # The kernel shows no stack for a task running on another CPU, so give the
        # writer a moment to go to sleep in read(); an unreadable file (None) is final.
        for _ in range(100):
            text = _read_proc("/proc/%d/stack" % self._child.pid)
            if text is None:
                break
            if parse_stack(text):
                return "stack"
            time.sleep(0.002)
        if _read_proc("/proc/%d/wchan" % self._child.pid) is not None:
            return "wchan"
        return "none"

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._finish()

    def _loop(self) -> None:
        seq = 0
        while True:
            for phase in ("write", "sync"):
                seq += 1
                with self._mu:
                    if self._stopping:
                        return
                    op = self._op = _Op(seq, phase, Stamp.now())
                try:
                    os.write(self._cmd_w, fsprobe_writer.COMMANDS[phase])
                except OSError as e:
                    reply: Optional[int] = None
                    self._error = "writer gone: %s" % (e,)
                else:
                    reply = self._await_reply(op)
                returned = Stamp.now()
                fire = False
                with self._mu:
                    self._op = None
                    frozen = self._frozen_seq == seq
                    if reply is None:
                        if self._error is None:
                            self._error = "writer exited unexpectedly"
                    elif reply != 0:
                        self._error = "%s: [Errno %d] %s" % (phase, reply, os.strerror(reply))
                    else:
                        self._writes += 1
                        if (not frozen and self._count_from is not None
                                and op.started.monotonic >= self._count_from):
                            # Entered the filesystem after arming without waiting for a
                            # freeze: a freeze seen from now on began after arming.
                            self._clear = True
                        if frozen and not self._stopping and not self._fired:
                            self._thawed_at = returned
                            self._fired = fire = True
                if fire:
                    try:
                        self._on_thaw()
                    except Exception as e:  # the holder must still see fired
                        self._callback_error = repr(e)
                    return
                if reply != 0 or frozen:
                    return
            if self._pause(self._interval):
                return

    def _pause(self, seconds: float) -> bool:
        """Sleep; True if stop() woke us (arm() only cuts the pause short)."""
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            # stop() sets _stopping before it writes: read first, then look.
            os.read(self._wake_r, 64)
        with self._mu:
            return self._stopping

    def _await_reply(self, op: _Op) -> Optional[int]:
        """The writer's answer to op: errno (0 for success), None if it died."""
        poll = min(self._stall_after / 2, 0.025)
        check_at: Optional[float] = op.started.monotonic + self._stall_after
        waiting = [self._rep_r, self._wake_r]
        stalled = False
        while True:
            timeout = None
            if check_at is not None:
                timeout = max(0.0, check_at - time.monotonic())
            ready, _, _ = select.select(waiting, [], [], timeout)
            if self._rep_r in ready:
                data = os.read(self._rep_r, 64)
                try:
                    return int(data) if data else None
                except ValueError:
                    return None
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
                with self._mu:
                    stopping = self._stopping
                if not stopping:
                    continue  # arm(): it applies from the next probe call on
                # stop(): no more inspecting; still wait for the answer so the writer
                # is never left with an unread reply and gets reaped.
                waiting = [self._rep_r]
                check_at = None
                continue
            if check_at is None:
                continue
            verdict = classify_wait(
                _read_proc("/proc/%d/stack" % self._child.pid)
                if self._inspection == "stack" else None,
                _read_proc("/proc/%d/wchan" % self._child.pid), op.phase == "write")
            with self._mu:
                if verdict.wait:
                    self._last_wait = verdict.wait
                if verdict.frozen and not self._clear:
                    # Perhaps under way before arming: not the freeze waited for. Its
                    # thaw lets this call return, and probing goes on.
                    self._ignored += 1
                    check_at = None
                    continue
                if verdict.frozen:
                    self._frozen_seq = op.seq
                    self._frozen_at = op.started
                    check_at = None
                    continue
                if not stalled:
                    stalled = True
                    self._stalls += 1
            check_at = time.monotonic() + poll

    def _finish(self) -> None:
        # Closing the command pipe tells the writer to remove its file and exit; if it
        # is stuck in a frozen write it does so after the thaw, and this thread waits
        # for that in waitpid(), which, unlike the write, never holds up an exit.
        _close(self._cmd_w)
        self._cmd_w = None
        try:
            if self._child is not None:
                self._child.wait()
        except Exception:
            pass
        with self._mu:
            wake_w, self._wake_w = self._wake_w, None
        for fd in (self._rep_r, self._wake_r, wake_w):
            _close(fd)
        self._rep_r = self._wake_r = None
        self._done.set()
