"""Clean up after a holder that died or was killed (SIGKILL, OOM killer, crash, timeout).

Its sessions, and so its locks, died with it; what it could not do is say so and
restart the replica SQL threads it had stopped. It recorded those in replicas.json
before stopping them, so every path that ends a holder the hard way -- freeze giving up
on it, thaw killing it, or the next command finding it dead -- restarts them from there.
"""

from __future__ import annotations

from . import state
from .config import Settings


def restart_orphaned_replicas(settings: Settings, files: state.RuntimeFiles,
                              extra: dict[str, list[str]] | None = None) -> None:
    """Restart the SQL threads a dead holder had stopped (bounded: connect-timeout per server)."""
    record = files.read_replicas()
    if record is not None and state.holder_alive(record):
        return  # its owner restarts them itself
    stopped: dict[str, list[str]] = dict(extra or {})
    if record is not None:
        for name, channels in dict(record.get("instances") or {}).items():
            stopped[str(name)] = sorted(set(stopped.get(str(name), [])) | set(channels or []))
    if stopped:
        from . import locking, log  # the driver: only on this rare path, never on a normal thaw
        for target in settings.targets:
            if stopped.get(target.name):
                locking.restart_replica_fresh(target, settings, None, stopped[target.name], log.get())
    state.remove(files.replicas)


def adopt_dead_holder(settings: Settings, files: state.RuntimeFiles, current: dict[str, object],
                      acknowledged: bool) -> dict[str, object]:
    """Turn a dead holder's state.json into a "lost" result and clear it."""
    # state.json of a holder from before replicas.json existed names its stopped channels too.
    older = {str(i.get("name")): list(i.get("replica_stopped") or []) for i in current.get("instances", [])
             if i.get("replica_stopped")}
    restart_orphaned_replicas(settings, files, older)
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
