"""Notice the moment the database's filesystem is thawed, so the lock can go at once.

Backup software runs our thaw hook about a second after it thaws the filesystems; for
that second the database is locked for nothing.  While a filesystem is frozen every
write to it sleeps on the superblock's freeze lock, and it returns as soon as the thaw
releases that lock.  So a thread that keeps writing one byte to a file on the datadir's
filesystem ends up asleep on that lock during the snapshot, and wakes up exactly at the
thaw.  A second thread looks at what the kernel says the writer is waiting for
(/proc/self/task/TID/stack, else .../wchan): only when that is the freeze lock does the
writer's return count as a thaw.  Slow or failing I/O, a freeze of some other filesystem,
or no freeze at all never fire.

Nothing here logs or writes anywhere but the probe file: the holder must not touch a
frozen filesystem, and it reads what happened from the probe's attributes.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import threading
import time
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

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

def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


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
        if not _inside(path, real) and _usable_dir(path, dev):
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


class FsThawProbe:
    """Calls on_thaw() once, from its own thread, when the probed filesystem thaws.

    probe = FsThawProbe(directory, on_thaw)   # directory from choose_probe_dir()
    probe.start()    # raises OSError if the probe file cannot be made and written
    ...
    probe.stop()     # never blocks on a frozen filesystem

    Start it after the lock is held and before the freeze; after any fork, since the
    threads do not survive one.  on_thaw runs in the probe thread, so it must be quick
    and must not raise or touch a filesystem: writing a byte to a pipe the holder's
    select() loop watches is the intended use.  It is called at most once, only after a
    probe write was seen asleep on the freeze lock and then returned without error, and
    never once stop() has been called (a call already decided may still be running when
    stop() returns; stop(wait=...) waits for it).  Each probe is good for one freeze;
    make a new one for the next.

    Attributes are safe to read from any thread at any time.
    """

    def __init__(self, directory: str, on_thaw: Callable[[], None],
                 interval: float = 0.025, stall_after: float = 0.05) -> None:
        """interval    -- pause between probe writes, seconds
        stall_after -- a probe call blocked this long gets its kernel wait inspected
        """
        if interval <= 0 or stall_after <= 0:
            raise ValueError("interval and stall_after must be positive")
        self._directory = directory
        self._on_thaw = on_thaw
        self._interval = interval
        self._stall_after = stall_after
        self._mu = threading.Lock()
        self._stop_evt = threading.Event()
        self._done = threading.Event()
        self._started = False
        self._stopping = False
        self._op: Optional[_Op] = None
        self._frozen_seq: Optional[int] = None
        self._stalled_seq: Optional[int] = None
        self._frozen_at: Optional[Stamp] = None
        self._thawed_at: Optional[Stamp] = None
        self._fired = False
        self._error: Optional[str] = None
        self._callback_error: Optional[str] = None
        self._stalls = 0
        self._last_wait: Optional[str] = None
        self._inspection: Optional[str] = None
        self._tid: Optional[int] = None
        self._name: Optional[str] = None
        self._dfd: Optional[int] = None
        self._fd: Optional[int] = None
        self._writes = 0
        self._probe_thread: Optional[threading.Thread] = None
        self._watch_thread: Optional[threading.Thread] = None

    # -- status, read-only --
    @property
    def path(self) -> Optional[str]:
        """The probe file, once started."""
        return os.path.join(self._directory, self._name) if self._name else None

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
        """Why probing stopped early ("write: [Errno 5] ..."); it never fires after one."""
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
    def writes(self) -> int:
        """Probe calls completed."""
        return self._writes

    @property
    def finished(self) -> bool:
        """The probe thread has ended and removed its file (or tried to)."""
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
        """Make the probe file and start probing.  Raises OSError (and leaves nothing
        behind) if the directory is a symlink, the file cannot be created exclusively,
        or the first write fails."""
        with self._mu:
            if self._started:
                raise RuntimeError("probe already started")
            self._started = True
        try:
            self._create()
        except BaseException as e:
            self._error = "start: %s" % (e,)
            raise
        self._inspection = self._probe_inspection()
        ready = threading.Event()
        self._probe_thread = threading.Thread(
            target=self._run, args=(ready,), name="fsprobe", daemon=True)
        self._watch_thread = threading.Thread(
            target=self._watch, name="fsprobe-watch", daemon=True)
        self._probe_thread.start()
        ready.wait()
        self._watch_thread.start()

    def _create(self) -> None:
        dfd = os.open(self._directory,
                      os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fd = None
        name = PROBE_PREFIX + "%d-%s" % (os.getpid(), self._token())
        try:
            try:
                sweep_stale(self._directory, dir_fd=dfd)
            except OSError:
                pass
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    raise OSError("probe file %s is not a fresh regular file" % name)
                os.fchmod(fd, 0o600)
                # The block is allocated now, before any freeze, so later writes
                # only overwrite it.
                os.pwrite(fd, b"\0", 0)
                os.fdatasync(fd)
            except BaseException:
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:
                    pass
                raise
        except BaseException:
            if fd is not None:
                os.close(fd)
            os.close(dfd)
            raise
        self._dfd, self._fd, self._name = dfd, fd, name

    def stop(self, wait: float = 0.2) -> bool:
        """Stop probing; on_thaw will not be called any more.

        Returns True when the probe thread has ended and removed its file.  If a probe
        call is blocked (frozen filesystem, stuck I/O) this returns False at once
        without waiting; the thread removes its file when the call returns, or the next
        start() in that directory sweeps it if the process is gone by then.  Otherwise
        it waits at most `wait` seconds for the thread to finish.
        """
        with self._mu:
            if not self._started:
                return True
            self._stopping = True
            op = self._op
        self._stop_evt.set()
        if self._probe_thread is None:
            return True
        if op is not None and time.monotonic() - op.started.monotonic >= self._stall_after:
            return self._done.is_set()
        return self._done.wait(wait)

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the probe thread to end and clean up; True if it did."""
        if self._probe_thread is None:
            return True
        return self._done.wait(timeout)

    # -- internals --
    @staticmethod
    def _token() -> str:
        return secrets.token_hex(8)

    def _probe_inspection(self) -> str:
        tid = threading.get_native_id()
        if parse_stack(_read_proc("/proc/self/task/%d/stack" % tid) or ""):
            return "stack"
        if _read_proc("/proc/self/task/%d/wchan" % tid) is not None:
            return "wchan"
        return "none"

    def _io(self, phase: str, fd: int) -> None:
        """One probe call; the only place that touches the probed filesystem."""
        if phase == "write":
            os.pwrite(fd, b"\0", 0)
        else:
            os.fdatasync(fd)

    def _run(self, ready: threading.Event) -> None:
        self._tid = threading.get_native_id()
        ready.set()
        seq = 0
        try:
            while not self._stop_evt.is_set():
                for phase in ("write", "sync"):
                    seq += 1
                    with self._mu:
                        if self._stopping:
                            return
                        self._op = _Op(seq, phase, Stamp.now())
                    err = None
                    try:
                        self._io(phase, self._fd)
                    except OSError as e:
                        err = e
                    returned = Stamp.now()
                    fire = False
                    with self._mu:
                        self._op = None
                        frozen = self._frozen_seq == seq
                        if err is not None:
                            self._error = "%s: %s" % (phase, err)
                        elif frozen and not self._stopping and not self._fired:
                            self._thawed_at = returned
                            self._fired = fire = True
                        if err is None:
                            self._writes += 1
                    if fire:
                        try:
                            self._on_thaw()
                        except Exception as e:  # the holder must still see fired
                            self._callback_error = repr(e)
                        return
                    if err is not None or frozen:
                        return
                self._stop_evt.wait(self._interval)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            if self._fd is not None:
                os.close(self._fd)
            if self._name is not None and self._dfd is not None:
                try:
                    os.unlink(self._name, dir_fd=self._dfd)
                except OSError:
                    pass
            if self._dfd is not None:
                os.close(self._dfd)
        finally:
            self._fd = self._dfd = None
            self._stop_evt.set()
            self._done.set()

    def _watch(self) -> None:
        poll = min(self._stall_after / 2, 0.025)
        stack_path = "/proc/self/task/%d/stack" % self._tid
        wchan_path = "/proc/self/task/%d/wchan" % self._tid
        use_stack = self._inspection == "stack"
        while not self._stop_evt.wait(poll):
            with self._mu:
                op = self._op
                known = op is not None and self._frozen_seq == op.seq
            if op is None or known:
                continue
            if time.monotonic() - op.started.monotonic < self._stall_after:
                continue
            verdict = classify_wait(_read_proc(stack_path) if use_stack else None,
                                    _read_proc(wchan_path), op.phase == "write")
            with self._mu:
                # The sample belongs to op only if op is still the call in progress.
                if self._op is not op:
                    continue
                if verdict.wait:
                    self._last_wait = verdict.wait
                if verdict.frozen:
                    self._frozen_seq = op.seq
                    self._frozen_at = op.started
                elif self._stalled_seq != op.seq:
                    self._stalled_seq = op.seq
                    self._stalls += 1
