"""Recording an outcome: a line in the history, then the metrics file rewritten from it.

Problems are only logged: a snapshot's outcome never depends on its bookkeeping.
"""

from __future__ import annotations

import json
import os

from quiesce.base import log as logsetup, outcome, safefile
from quiesce.base.caller import calling_agent
from quiesce.base.errors import Busy, ConfigError
from quiesce.records import history, metrics, state


def record(settings, entry: dict[str, object], log=None) -> None:
    """Append entry to the history and rewrite the metrics file; problems are only logged."""
    path = history.path_for(settings.targets[0].position_file)
    try:
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with history.lock_for(path):
            entries = history.appended(history.read(path), entry)
            safefile.write_atomic(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), 0o600)
    except (OSError, Busy, ConfigError) as exc:
        _warn(log, "history", path, exc)
        return
    try:
        metrics.update(settings.metrics_file, entries, settings.metrics_dir_shared)
    except (OSError, ConfigError) as exc:
        _warn(log, "metrics", settings.metrics_file, exc)


def _warn(log, what: str, path: str, exc: Exception) -> None:
    if log is None:
        log = logsetup.get()
    if isinstance(exc, OSError):
        log.warning("cannot record the outcome in the %s (%s: %s)", what, exc.filename or path, exc.strerror or exc)
    else:
        log.warning("cannot record the outcome in the %s: %s", what, exc)


def after_release(settings, result: dict[str, object], agent: str | None, log) -> None:
    """Holder: record now only when no filesystem can still be frozen; else thaw will."""
    if history.holder_recorded(result):
        record(settings, history.entry_from_result(result, agent), log)


def after_failed_freeze(settings, message: str, agent: str | None, since: str, log, test: bool = False) -> None:
    record(settings, history.failure_entry(message, agent, state.utc_now(), since, test), log)


def after_disabled(settings, message: str, agent: str | None, since: str) -> None:
    """The agent's freeze with enabled = false: recorded, so that monitoring sees it."""
    record(settings, history.not_running_entry(message, agent, state.utc_now(), since, what=outcome.DISABLED))


def after_not_running(settings, message: str, agent: str | None, since: str, test: bool = False) -> None:
    """freeze, once the holder reported no server running and exited: no lock, nothing frozen."""
    record(settings, history.not_running_entry(message, agent, state.utc_now(), since, test))


def after_thaw(settings, result: dict[str, object]) -> None:
    """thaw (or freeze, for a holder that died) reporting a result the holder left to it.

    The agent is this command's caller: the one that asked for the freeze, too.
    """
    if not history.holder_recorded(dict(result, acknowledged=False)):
        callers = result.get("callers") or [calling_agent(os.getppid())]
        record(settings, history.entry_from_result(result, str(callers[0])))
