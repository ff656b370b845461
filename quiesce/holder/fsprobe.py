"""Notice the moment the database's filesystem is thawed, so the lock can go at once.

Backup software runs our thaw hook about a second after it thaws the filesystems; for
that second the database is locked for nothing.  While a filesystem is frozen every
write to it sleeps on the superblock's freeze lock, and returns as soon as the thaw
releases that lock.  So a writer that keeps rewriting one byte of a file on the
datadir's filesystem ends up asleep on that lock during the snapshot and wakes up at
the thaw.  What the kernel says the writer waits for tells a freeze from anything else
(fswait.py): only a write seen asleep on the freeze lock counts as a thaw when it
returns.  Slow or failing I/O, a freeze of some other filesystem, or no freeze at all
never fire.

This module is the probe's state machine: one thread that asks the writer process
(probewriter.py) for one probe call at a time, inspects a call that takes long, and
fires once. Where the probe file goes is probedir.py.

Nothing here logs or writes anywhere but the probe file: the holder must not touch a
frozen filesystem, and it reads what happened from the probe's attributes.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Callable, List, NamedTuple, Optional

from quiesce.holder import fswait, probewriter
from quiesce.holder.fswait import Stamp, classify_wait, read_proc

__all__ = ["FsThawProbe"]


class _Op(NamedTuple):
    seq: int
    phase: str      # "write" or "sync"
    started: Stamp


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
        self._writer: Optional[probewriter.WriterProcess] = None
        self._wake_r: Optional[int] = None
        self._wake_w: Optional[int] = None
        self._writes = 0
        self._thread: Optional[threading.Thread] = None

    # -- status, read-only --
    @property
    def path(self) -> Optional[str]:
        """The probe file, once started."""
        return os.path.join(self._directory, self._writer.name) if self._writer else None

    @property
    def pid(self) -> Optional[int]:
        """The writer child's pid, once started."""
        return self._writer.pid if self._writer else None

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
        self._inspection = fswait.inspection(self._writer.pid)
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
        return probewriter.writer_command()

    def _spawn(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(wake_w, False)
        try:
            writer = probewriter.start(self._directory, self._token(), self._child_command())
        except BaseException:
            probewriter.close_quietly(wake_r)
            probewriter.close_quietly(wake_w)
            raise
        self._writer, self._wake_r, self._wake_w = writer, wake_r, wake_w

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
                    self._writer.send(phase)
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
        reply_fd = self._writer.reply_fd
        waiting = [reply_fd, self._wake_r]
        stalled = False
        while True:
            timeout = None
            if check_at is not None:
                timeout = max(0.0, check_at - time.monotonic())
            ready, _, _ = select.select(waiting, [], [], timeout)
            if reply_fd in ready:
                return self._writer.read_reply()
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
                with self._mu:
                    stopping = self._stopping
                if not stopping:
                    continue  # arm(): it applies from the next probe call on
                # stop(): no more inspecting; still wait for the answer so the writer
                # is never left with an unread reply and gets reaped.
                waiting = [reply_fd]
                check_at = None
                continue
            if check_at is None:
                continue
            pid = self._writer.pid
            verdict = classify_wait(read_proc("/proc/%d/stack" % pid) if self._inspection == "stack" else None,
                                    read_proc("/proc/%d/wchan" % pid), op.phase == "write")
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
        # The writer removes its file and exits (after the thaw, if a write is frozen);
        # waiting for that here never holds up the holder's own exit.
        if self._writer is not None:
            self._writer.finish()
        with self._mu:
            wake_w, self._wake_w = self._wake_w, None
        for fd in (self._wake_r, wake_w):
            probewriter.close_quietly(fd)
        self._wake_r = None
        self._done.set()
