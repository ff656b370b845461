"""quiesce thaw: tell the holder to release, and say honestly what happened.

Kept small and free of the MySQL driver: it runs on the snapshot's critical path.
"""

from __future__ import annotations

import os
import signal

from . import fastthaw, protocol, recovery, state
from .config import Settings
from .errors import LockLost, StateError
from .fastthaw import Answer

LOCK_WAIT = 60.0


def _log():
    # Only after the holder has answered: until then writers may be waiting for us.
    from . import log
    return log.get()


def _report_result(result: dict[str, object], fresh: bool) -> int:
    log = _log()
    outcome = result.get("outcome")
    if outcome in ("expired", "lost"):
        raise LockLost("the lock did not last until thaw (%s): %s; the snapshot may be inconsistent"
                       % (outcome, result.get("reason")))
    if outcome == "released-at-fs-thaw":
        log.info("lock was already released when the filesystem thawed (%s), after %s ms",
                 result.get("at"), result.get("held_ms"))
        return 0
    if fresh:
        log.info("thawed: lock held %s ms, released %s", result.get("held_ms"), result.get("at"))
        instances = result.get("instances") or []
        if len(instances) > 1:
            for item in instances:
                log.info("thawed %s (%s): lock held %s ms", item.get("name"), item.get("lock"), item.get("held_ms"))
    return 0


def thaw_timeout(settings: Settings) -> float:
    """How long the holder may take to answer: a bounded unlock and replica restart per server."""
    return 10.0 + 3 * settings.connect_timeout * len(settings.targets)


def _kill_holder(settings: Settings, files: state.RuntimeFiles, current: dict[str, object], why: str) -> int:
    """The holder is alive but does not answer: end it the hard way, and say so honestly."""
    # Killing the holder closes its sessions; the server then drops the lock.
    try:
        os.kill(int(current["holder_pid"]), signal.SIGKILL)
    except ProcessLookupError:
        return _report_unacknowledged(settings, files)  # it ended on its own meanwhile: nothing was killed
    state.wait_holder_gone(current, 10.0)
    recovery.restart_orphaned_replicas(settings, files)
    state.remove(files.state)
    state.remove(files.socket)
    raise StateError("holder pid %s did not answer (%s); it was killed, which released the lock; whether the "
                     "lock lasted until now is unknown" % (current.get("holder_pid"), why))


def _ask_holder(settings: Settings, files: state.RuntimeFiles, current: dict[str, object],
                early: Answer | None) -> int:
    if early is not None and early.holder_pid == current.get("holder_pid"):
        # The fast path's request reached this holder but its answer did not reach us: give it
        # the rest of its time to end, then report what it recorded (this thaw caused it).
        if state.wait_holder_gone(current, max(0.0, thaw_timeout(settings) - fastthaw.REPLY_TIMEOUT)):
            return _report_unacknowledged(settings, files, ours=True)
        return _kill_holder(settings, files, current, str(early.problem))
    try:
        reply = protocol.request(files.socket, {"cmd": protocol.THAW}, thaw_timeout(settings))
    except (ConnectionRefusedError, FileNotFoundError):
        # It closed its socket: it is finishing on its own (deadline, filesystem thaw, signal)
        # and records its result before it drops state.json.
        if state.wait_holder_gone(current, thaw_timeout(settings)):
            return _report_unacknowledged(settings, files)
        return _kill_holder(settings, files, current, "it closed its socket but did not end")
    except (OSError, ValueError, StateError) as exc:
        if not state.holder_alive(current):
            return _report_unacknowledged(settings, files)
        return _kill_holder(settings, files, current, str(exc))
    if "outcome" not in reply:
        raise StateError("holder answered %r" % reply)
    return _report_result(reply, fresh=True)


def _report_unacknowledged(settings: Settings, files: state.RuntimeFiles, ours: bool = False) -> int:
    """Report a result nobody has reported yet (or, ours: the one our own request caused)."""
    result = files.read_result()
    if result is not None and (ours or not result.get("acknowledged")):
        result["acknowledged"] = True
        state.write_json_atomic(files.result, result)
        from . import history  # not on the common path: the holder records what it released itself
        history.after_thaw(settings, result)
        return _report_result(result, fresh=False)
    if result is not None and int(result.get("thaws_pending") or 0) > 0:
        # The thaw of a freeze that joined the lock: same outcome, same exit status.
        result["thaws_pending"] = int(result["thaws_pending"]) - 1
        state.write_json_atomic(files.result, result)
        _log().info("the lock this freeze joined was released at %s (%s)", result.get("at"), result.get("outcome"))
        return _report_result(result, fresh=False)
    _log().info("nothing is frozen; thaw has nothing to do")
    return 0


def _early_reply(answer: Answer) -> int:
    try:
        reply = protocol.decode(answer.reply or b"")
    except ValueError:
        reply = {}
    if "outcome" not in reply:
        raise StateError("holder pid %s answered %r" % (answer.holder_pid, answer.reply))
    return _report_result(reply, fresh=True)


def run(settings: Settings, early: Answer | None = None) -> int:
    """early: what the holder answered to the hook's fast path (fastthaw), if it asked."""
    if early is not None and early.reply is not None:
        return _early_reply(early)
    files = state.RuntimeFiles(settings.runtime_dir)
    if not state.ensure_runtime_dir(settings.runtime_dir, create=False):
        _log().info("nothing is frozen (no %s)", settings.runtime_dir)
        return 0
    # A freeze still running (Azure runs post beside a pre it timed out on) is told not to
    # lock any more: the snapshot has been taken by now.
    with files.exclusive(LOCK_WAIT, "thaw", on_busy=lambda: state.touch(files.cancel)):
        state.remove(files.cancel)
        current = files.read_state()
        if current is None:
            return _report_unacknowledged(settings, files)
        if state.holder_alive(current):
            return _ask_holder(settings, files, current, early)
        # Re-read: a holder that just ended on its own has removed state.json after its result.
        if files.read_state() is None:
            return _report_unacknowledged(settings, files)
        return _report_result(recovery.adopt_dead_holder(settings, files, current, acknowledged=True),
                              fresh=True)
