"""Clean up after a holder that died or was killed (SIGKILL, OOM killer, crash, timeout).

Its sessions, and so its locks, died with it; what it could not do is say so and
restart the replica SQL threads it had stopped, and put back the global it had raised
for its flush. It recorded those in replicas.json and globals.json before changing them,
so every path that ends a holder the hard way -- freeze giving up on it, thaw killing it,
or the next command finding it dead -- puts them right from there.
"""

from __future__ import annotations

import logging

from quiesce.base.config import Settings
from quiesce.base.errors import QuiesceError
from quiesce.holder import sharing
from quiesce.records import changedglobals, state


def restore_orphaned_globals(settings: Settings, files: state.RuntimeFiles,
                             logger: logging.Logger | None = None) -> None:
    """Put back the globals a dead holder changed (bounded: connect-timeout per server).

    Only the setting named here is ever written back, whatever the file says.
    """
    record = changedglobals.read(files.dir)
    if record is None or state.holder_alive(record):
        return  # nothing changed, or its owner puts it back itself
    from quiesce.server import db, locking
    from quiesce.base import log as logsetup
    logger = logger or logsetup.get()
    pending = dict(record.get("instances") or {})
    for target in settings.targets:
        value = dict(pending.get(target.name) or {}).get(changedglobals.FLUSH_LOG)
        if not isinstance(value, int) or isinstance(value, bool) or value not in (0, 1, 2):
            continue
        statement = "SET GLOBAL %s = %d" % (changedglobals.FLUSH_LOG, value)
        try:
            conn = locking.connect(target, settings)
            try:
                conn.execute(statement)
            finally:
                conn.close()
        except (db.DbError, QuiesceError) as exc:  # keep the record: the next command tries again
            logger.error("%s: %s is still 1, as a holder that died left it; cannot put it back to %d: %s; "
                         "fix: %s", target.name, changedglobals.FLUSH_LOG, value, exc, statement)
            continue
        logger.warning("%s: put %s back to %d (a holder that died had raised it to 1 for its flush)",
                       target.name, changedglobals.FLUSH_LOG, value)
        changedglobals.forget(files.dir, target.name, changedglobals.FLUSH_LOG)


def orphaned_channels(files: state.RuntimeFiles) -> dict[str, list[str]]:
    """The SQL threads a holder that is gone recorded as stopped and nobody has restarted yet."""
    record = files.read_replicas()
    if record is None or state.holder_alive(record):
        return {}  # none, or its owner restarts them itself
    return {str(name): sorted(set(channels or [])) for name, channels in dict(record.get("instances") or {}).items()
            if channels}


def restart_orphaned_replicas(settings: Settings, files: state.RuntimeFiles,
                              extra: dict[str, list[str]] | None = None) -> list[str]:
    """Restart the SQL threads a dead holder had stopped (bounded: connect-timeout per server),
    and put back the globals it changed.

    Returns the problems. replicas.json then names only those still stopped, for the next
    command to retry; it goes once every one runs.
    """
    restore_orphaned_globals(settings, files)
    record = files.read_replicas()
    if record is not None and state.holder_alive(record):
        return []  # its owner restarts them itself
    stopped: dict[str, list[str]] = dict(extra or {})
    for name, channels in orphaned_channels(files).items():
        stopped[name] = sorted(set(stopped.get(name, [])) | set(channels))
    problems: list[str] = []
    left: dict[str, list[str]] = {}
    if stopped:
        from quiesce.server import locking
        from quiesce.base import log
        for target in settings.targets:
            if stopped.get(target.name):
                problem = locking.restart_replica_fresh(target, settings, None, stopped[target.name], log.get())
                if problem:
                    problems.append(problem)
                    left[target.name] = stopped[target.name]
    if left:
        # Owned by the dead holder (or by nobody): every later command, and the next holder, retries.
        state.write_json_atomic(files.replicas, dict(record or {"holder_pid": None}, instances=left))
    else:
        state.remove(files.replicas)
    return problems


def adopt_dead_holder(settings: Settings, files: state.RuntimeFiles, current: dict[str, object],
                      acknowledged: bool, outcome: str = "lost", reason: str | None = None,
                      thawing: str | None = None) -> dict[str, object]:
    """Turn a dead (or killed) holder's state.json into a result and clear it.

    Its callers' thaws report it (thawing: the caller whose thaw is reporting it now).
    state.json names the callers as of the lock: one that joined later may be unknown, so
    one more thaw, whoever's, hears it too (sharing.ANY).
    """
    # state.json names the stopped channels too (and is the only record a 0.1.x holder wrote).
    in_state = {str(i.get("name")): list(i.get("replica_stopped") or []) for i in current.get("instances", [])
             if i.get("replica_stopped")}
    problems = restart_orphaned_replicas(settings, files, in_state)
    pending = [str(c) for c in current.get("callers") or []] + [sharing.ANY]
    if thawing is not None:
        pending = sharing.take(pending, thawing)[1]
    result = {"outcome": outcome, "acknowledged": acknowledged, "at": state.utc_now(),
              "since": current.get("since"), "instances": current.get("instances", []),
              "holder_pid": current.get("holder_pid"), "callers": current.get("callers") or [],
              "test": bool(current.get("test")), "pending": pending, "thaws_pending": len(pending),
              "problems": problems, "replica_problems": problems, "replicas_stopped": orphaned_channels(files),
              "reason": reason or "holder pid %s died while frozen (killed?), so the lock ended early"
                                  % current.get("holder_pid")}
    state.write_json_atomic(files.result, result)
    from quiesce.records import recorder
    recorder.after_thaw(settings, result)
    state.remove(files.state)
    state.remove(files.socket)
    return result
