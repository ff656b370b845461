"""Clean up after a holder that died while frozen (SIGKILL, OOM killer, crash).

Its sessions, and so its locks, died with it; what it could not do is say so and
restart the replica SQL threads it had stopped. Freeze and thaw both call this.
"""

from __future__ import annotations


from . import state
from .config import Settings


def restart_stopped_replicas(settings: Settings, current: dict[str, object]) -> None:
    stopped = {i.get("name"): i.get("replica_stopped") for i in current.get("instances", [])
               if i.get("replica_stopped")}
    if not stopped:
        return
    from . import locking, log  # the driver: only on this rare path, never on a normal thaw
    for target in settings.targets:
        if stopped.get(target.name):
            locking.restart_replica_fresh(target, settings, None, stopped[target.name], log.get())


def adopt_dead_holder(settings: Settings, files: state.RuntimeFiles, current: dict[str, object],
                      acknowledged: bool) -> dict[str, object]:
    """Turn a dead holder's state.json into a "lost" result and clear it."""
    restart_stopped_replicas(settings, current)
    result = {"outcome": "lost", "acknowledged": acknowledged, "at": state.utc_now(),
              "since": current.get("since"), "instances": current.get("instances", []),
              "reason": "holder pid %s died while frozen (killed?), so the lock ended early"
                        % current.get("holder_pid")}
    state.write_json_atomic(files.result, result)
    from . import history  # freeze and thaw run while no filesystem is frozen
    history.after_thaw(settings, result)
    state.remove(files.state)
    state.remove(files.socket)
    return result
