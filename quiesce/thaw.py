"""quiesce thaw: tell the holder to release, and say honestly what happened.

Kept small and free of the MySQL driver: it runs on the snapshot's critical path.
"""

from __future__ import annotations

import os
import signal

from . import protocol, recovery, state
from .config import Settings
from .errors import LockLost, StateError

THAW_TIMEOUT = 30.0
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


def _kill_holder(current: dict[str, object]) -> None:
    if state.holder_alive(current):
        # Killing the holder closes its sessions; the server then drops the lock.
        os.kill(int(current["holder_pid"]), signal.SIGKILL)


def run(settings: Settings) -> int:
    files = state.RuntimeFiles(settings.runtime_dir)
    if not state.ensure_runtime_dir(settings.runtime_dir, create=False):
        _log().info("nothing is frozen (no %s)", settings.runtime_dir)
        return 0
    with files.exclusive(LOCK_WAIT, "thaw"):
        current = files.read_state()
        if current is not None:
            if state.holder_alive(current):
                try:
                    reply = protocol.request(files.socket, {"cmd": protocol.THAW}, THAW_TIMEOUT)
                except (OSError, ValueError, StateError) as exc:
                    _kill_holder(current)
                    state.remove(files.state)
                    raise StateError("holder pid %s did not answer (%s); it was killed, which released the lock; "
                                     "whether the lock lasted until now is unknown"
                                     % (current.get("holder_pid"), exc))
                if "outcome" not in reply:
                    raise StateError("holder answered %r" % reply)
                return _report_result(reply, fresh=True)
            return _report_result(recovery.adopt_dead_holder(settings, files, current, acknowledged=True),
                                  fresh=True)
        result = files.read_result()
        if result is not None and not result.get("acknowledged"):
            result["acknowledged"] = True
            state.write_json_atomic(files.result, result)
            from . import history
            history.after_thaw(settings, result)
            return _report_result(result, fresh=False)
    _log().info("nothing is frozen; thaw has nothing to do")
    return 0
