"""quiesce run [--freeze-fs] -- CMD [ARGS...]: hold the lock while one command runs.

For storage snapshots taken by a command (btrfs, LVM, ZFS, a cloud CLI): the lock is
taken exactly as freeze takes it (same checks, same position file), the filesystems that
hold the server's files are frozen if asked, CMD runs, and everything is undone in the
reverse order. The exit status is CMD's, unless the lock's verdict is worse: a lock lost
or expired before CMD ended (6), CMD killed at the lock's deadline (6), or a replica that
could not be restarted (10). A freeze that fails runs nothing and exits as freeze would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import List, Optional, Tuple

from quiesce.agents import fsfreeze
from quiesce.base import log as logsetup
from quiesce.base.config import Settings
from quiesce.base.errors import ConfigError, Exit, LockLost, QuiesceError
from quiesce.commands import freeze, thaw
from quiesce.records import history, state

# CMD is stopped this long before the holder's own deadline, so that the lock still holds
# while it is told to stop; then it gets KILL_GRACE to end before SIGKILL.
DEADLINE_MARGIN = 2.0
KILL_GRACE = 10.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _deadline(files: state.RuntimeFiles, settings: Settings) -> float:
    """Monotonic time by which CMD must have ended: the holder's deadline less the margin."""
    current = files.read_state() or {}
    at = history.epoch(current.get("deadline"))
    left = (at - time.time()) if at is not None else settings.lock_timeout
    return time.monotonic() + max(0.0, left - DEADLINE_MARGIN)


def _directories(settings: Settings) -> List[str]:
    """The server's data and log directories, as each holder recorded them under the lock."""
    found: List[str] = []
    for target in settings.targets:
        position = state.read_json(target.position_file) or {}
        found += [d for d in position.get("directories") or [] if d not in found]
    return found


def _stop(proc: subprocess.Popen) -> None:
    for signum, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _Signals:
    """SIGTERM, SIGINT and SIGHUP while run runs: passed on to CMD while it runs, else an
    interruption (KeyboardInterrupt) that the thaw in run()'s finally still follows."""

    def __init__(self) -> None:
        self.child: Optional[subprocess.Popen] = None
        self.previous = {signum: signal.signal(signum, self._handle) for signum in FORWARDED}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.child is None or self.child.returncode is not None:
            raise KeyboardInterrupt
        try:
            os.killpg(self.child.pid, signum)
        except ProcessLookupError:
            pass

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _run_command(words: List[str], deadline: float, signals: _Signals) -> Tuple[Optional[int], bool]:
    """(CMD's exit status or -signal, whether it was stopped at the deadline)."""
    # A process group of its own, so that quiesce alone decides what reaches it (a ^C on the
    # terminal reaches quiesce, which passes it on once).
    proc = subprocess.Popen(words, preexec_fn=os.setpgrp)
    signals.child = proc
    try:
        return proc.wait(max(0.0, deadline - time.monotonic())), False
    except subprocess.TimeoutExpired:
        _stop(proc)
        return proc.returncode, True


def run(settings: Settings) -> int:
    words = list(settings.words)
    if not words:
        raise ConfigError("run needs a command: quiesce run [--freeze-fs] -- CMD [ARGS...]")
    log = logsetup.get()
    files = state.RuntimeFiles(settings.runtime_dir)
    signals = _Signals()
    frozen = fsfreeze.Frozen()
    froze = locked = False
    status: Optional[int] = None
    stopped = False
    failure: Optional[QuiesceError] = None
    try:
        try:
            froze = freeze.run(settings) == 0
            locked = froze and files.read_state() is not None
            if not locked:
                log.info("nothing is locked (no server running): %s runs without a lock", words[0])
            if settings.freeze_fs and locked:
                for point in fsfreeze.mount_points(_directories(settings)):
                    frozen.freeze(point, settings.acquire_timeout)
            try:
                status, stopped = _run_command(words, _deadline(files, settings), signals)
            except OSError as exc:
                failure = ConfigError("cannot run %s: %s; fix: give the command's full path"
                                      % (words[0], exc.strerror))
        except QuiesceError as exc:
            failure = exc
        finally:
            problems = frozen.thaw_all(settings.acquire_timeout)
            try:
                # After every freeze that succeeded, also when its lock is gone by now (a joined
                # lock that expired): thaw tells this caller how its lock ended. And after an
                # interrupted one that may have left a lock.
                verdict = thaw.run(settings) if froze or files.read_state() is not None else 0
            except QuiesceError as exc:
                verdict, failure = int(exc.exit_code), exc
    finally:
        signals.restore()
    for problem in problems:
        log.error("%s", problem)
    if stopped:
        failure = LockLost("%s did not end before the lock's deadline (lock-timeout %g s) and was stopped; a "
                           "snapshot it was taking may be inconsistent; fix: raise lock-timeout"
                           % (words[0], settings.lock_timeout))
    if failure is not None:
        raise failure
    if problems:
        return int(Exit.STATE)
    if verdict:
        return verdict
    if status is None:
        return int(Exit.INTERNAL)
    return 128 - status if status < 0 else status
