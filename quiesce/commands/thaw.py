"""quiesce thaw: tell the holder this caller is done, and say honestly what happened.

The lock is released when the last caller sharing it thaws (quiesce/holder/sharing.py); a thaw
by one of several callers leaves it held for the others. Kept small and free of the
MySQL driver: it runs on the snapshot's critical path.
"""

from __future__ import annotations

import os
import signal

from quiesce.base import caller as callers, outcome
from quiesce.base.config import Settings
from quiesce.base.errors import LockLost, ReplicaStopped, StateError
from quiesce.commands.fastthaw import Answer
from quiesce.holder import protocol, recovery, sharing
from quiesce.records import state

LOCK_WAIT = 60.0
STATUS_WAIT = 5.0


def _log():
    # Only after the holder has answered: until then writers may be waiting for us.
    from quiesce.base import log
    return log.get()


def _report_result(result: dict[str, object], fresh: bool, caller: str) -> int:
    log = _log()
    if fresh:
        late = None if result.get("outcome") in outcome.GOOD else sharing.late_verdict(result, caller)
    else:
        late = sharing.late_verdict(result, caller)
    if late:
        raise LockLost("%s; the snapshot may be inconsistent" % late)
    if fresh and result.get("replicas_stopped"):
        why = result.get("replica_problems") or [str(result["replicas_stopped"])]
        raise ReplicaStopped("the lock lasted, so the snapshot is consistent, but %s" % "; ".join(why))
    if result.get("outcome") == outcome.RELEASED_AT_FS_THAW:
        log.info("lock was already released when the filesystem thawed (%s), after %s ms",
                 result.get("at"), result.get("held_ms"))
        return 0
    if fresh:
        log.info("thawed: lock held %s ms, released %s", result.get("held_ms"), result.get("at"))
        instances = result.get("instances") or []
        if len(instances) > 1:
            for item in instances:
                log.info("thawed %s (%s): lock held %s ms", item.get("name"), item.get("lock"), item.get("held_ms"))
        others = result.get("pending") or []
        if others:
            log.warning("released for every caller (--all): %s had not thawed yet, and their thaws will say so",
                        ", ".join(str(c) for c in others))
    return 0


def _report_held(settings: Settings, files: state.RuntimeFiles, reply: dict[str, object], caller: str) -> int:
    """The lock stays: other callers share it, or this caller is not one of them."""
    holders = ", ".join(str(c) for c in reply.get("callers") or [])
    if reply.get("member"):
        _log().info("thawed for %s; the lock stays held for %s until they thaw (at the latest until %s)",
                    caller, holders, reply.get("deadline"))
        return 0
    # This caller may have frozen an earlier holder that died since: that loss is still its to hear.
    previous = _take_pending(files, caller)
    if previous is not None:
        return _report_result(previous, fresh=False, caller=caller)
    _log().warning("%s did not freeze (or its freeze failed): nothing to thaw for it; the lock held for %s stays "
                   "until they thaw (at the latest until %s); fix: 'quiesce thaw --all' releases it now",
                   caller, holders, reply.get("deadline"))
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
        return _after_holder_ended(settings, files, current)  # it ended on its own meanwhile: nothing was killed
    state.wait_holder_gone(current, 10.0)
    recovery.adopt_dead_holder(settings, files, current, acknowledged=True, outcome=outcome.KILLED,
                               reason="holder pid %s did not answer thaw (%s) and was killed; whether the lock "
                                      "lasted until then is unknown" % (current.get("holder_pid"), why),
                               thawing=callers.identify(settings.caller))
    raise StateError("holder pid %s did not answer (%s); it was killed, which released the lock; whether the "
                     "lock lasted until now is unknown" % (current.get("holder_pid"), why))


def _after_holder_ended(settings: Settings, files: state.RuntimeFiles, current: dict[str, object],
                        ours: bool = False) -> int:
    """The holder has ended: report what it recorded, or, if it recorded nothing, that it died."""
    result = files.read_result()
    if result is None or result.get("holder_pid") != current.get("holder_pid"):
        # It died before recording its result (SIGKILL, OOM during its release).
        caller = callers.identify(settings.caller)
        return _report_result(recovery.adopt_dead_holder(settings, files, current, acknowledged=True,
                                                         thawing=caller), fresh=True, caller=caller)
    if files.read_state() == current:
        state.remove(files.state)  # recorded, then died before dropping it
    return _report_unacknowledged(settings, files, ours=ours)


def _ask_holder(settings: Settings, files: state.RuntimeFiles, current: dict[str, object],
                early: Answer | None) -> int:
    caller = callers.identify(settings.caller)
    if early is not None and early.holder_pid == current.get("holder_pid"):
        # The fast path's request reached this holder but its answer did not reach us.
        live = _live_status(files)
        if live is None:
            # Finishing, because of that request: give it its full time, then report its result.
            if state.wait_holder_gone(current, thaw_timeout(settings)):
                return _after_holder_ended(settings, files, current, ours=True)
            return _kill_holder(settings, files, current, str(early.problem))
        if caller not in (live.get("callers") or []):
            return _report_held(settings, files, dict(live, member=True), caller)
        # Still counted: the request never arrived. Send it again.
    request = {"cmd": protocol.THAW, "caller": caller, "all": bool(settings.all_agents)}
    try:
        reply = protocol.request(files.socket, request, thaw_timeout(settings))
    except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
        # It closed its socket (a client waiting in its backlog is reset): it is finishing on
        # its own (deadline, filesystem thaw, signal) and records its result before it drops
        # state.json.
        if state.wait_holder_gone(current, thaw_timeout(settings)):
            return _after_holder_ended(settings, files, current)
        return _kill_holder(settings, files, current, "it closed its socket but did not end")
    except (OSError, ValueError, StateError) as exc:
        if not state.holder_alive(current):
            return _after_holder_ended(settings, files, current)
        return _kill_holder(settings, files, current, str(exc))
    return _answered(settings, files, reply, caller)


def _live_status(files: state.RuntimeFiles) -> dict[str, object] | None:
    try:
        return protocol.request(files.socket, {"cmd": protocol.STATUS}, STATUS_WAIT)
    except (OSError, ValueError, StateError):
        return None


def _answered(settings: Settings, files: state.RuntimeFiles, reply: dict[str, object], caller: str) -> int:
    if reply.get("held"):
        return _report_held(settings, files, reply, caller)
    if "outcome" not in reply:
        raise StateError("holder answered %r" % reply)
    return _report_result(reply, fresh=True, caller=caller)


def _take_pending(files: state.RuntimeFiles, caller: str) -> dict[str, object] | None:
    """The last result, if caller has yet to hear it (and it is then marked as heard)."""
    result = files.read_result()
    if result is None:
        return None
    had, rest = sharing.take(sharing.pending_of(result), caller)
    if not had:
        return None
    state.write_json_atomic(files.result, dict(result, pending=rest, thaws_pending=len(rest)))
    return result


def _report_unacknowledged(settings: Settings, files: state.RuntimeFiles, ours: bool = False) -> int:
    """Report a result this caller has not heard yet (or, ours: the one our own request caused)."""
    caller = callers.identify(settings.caller)
    result = files.read_result() if ours else _take_pending(files, caller)
    if result is not None:
        from quiesce.records import recorder
        recorder.after_thaw(settings, result)
        return _report_result(result, fresh=ours, caller=caller)
    _log().info("nothing is frozen%s; thaw has nothing to do",
                "" if caller == callers.UNKNOWN else " for %s" % caller)
    return 0


def _early_reply(settings: Settings, answer: Answer) -> int:
    try:
        reply = protocol.decode(answer.reply or b"")
    except ValueError:
        reply = {}
    if not reply.get("held") and "outcome" not in reply:
        raise StateError("holder pid %s answered %r" % (answer.holder_pid, answer.reply))
    files = state.RuntimeFiles(settings.runtime_dir)
    return _answered(settings, files, reply, callers.identify(settings.caller))


def run(settings: Settings, early: Answer | None = None) -> int:
    """early: what the holder answered to the hook's fast path (fastthaw), if it asked."""
    if early is not None and early.reply is not None:
        return _early_reply(settings, early)
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
            # Appliers an earlier holder could not restart: each command retries them.
            problems = recovery.restart_orphaned_replicas(settings, files)
            code = _report_unacknowledged(settings, files)
            if problems:
                raise ReplicaStopped("; ".join(problems))
            return code
        if state.holder_alive(current):
            return _ask_holder(settings, files, current, early)
        # Re-read: a holder that just ended on its own has removed state.json after its result.
        if files.read_state() is None:
            return _report_unacknowledged(settings, files)
        caller = callers.identify(settings.caller)
        return _report_result(recovery.adopt_dead_holder(settings, files, current, acknowledged=True,
                                                         thawing=caller), fresh=True, caller=caller)
