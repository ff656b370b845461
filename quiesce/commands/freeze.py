"""quiesce freeze: start a holder and return once it holds every lock.

A freeze that finds a healthy lock of ours joins it instead (two snapshot agents in one
backup, e.g. VMware Tools and a Veeam job script, or two snapshots that overlap): the
holder counts its callers and releases when the last of them thaws (quiesce/holder/sharing.py).
"""

from __future__ import annotations

from quiesce.base import caller as callers, log as logsetup
from quiesce.base.config import Settings
from quiesce.base.errors import LockLost, StateError, error_for_code
from quiesce.holder import protocol, recovery, sharing, spawn
from quiesce.records import state

JOIN_TIMEOUT = 10.0


def _join(files: state.RuntimeFiles, current: dict, caller: str) -> int:
    try:
        reply = protocol.request(files.socket, {"cmd": protocol.JOIN, "caller": caller}, JOIN_TIMEOUT)
    except (OSError, ValueError, StateError) as exc:
        raise StateError("already frozen by holder pid %s, which did not answer (%s); the lock cannot be "
                         "shared; fix: run 'quiesce thaw --all' (it reports whether the lock lasted)"
                         % (current.get("holder_pid"), exc))
    if not reply.get("joined"):
        raise LockLost("already frozen since %s by holder pid %s, but that lock is lost (%s); this freeze "
                       "cannot join it; fix: run 'quiesce thaw --all', then freeze again"
                       % (current.get("since"), current.get("holder_pid"), reply.get("reason") or reply))
    shared = [str(c) for c in reply.get("callers") or []]
    if reply.get("retry"):
        logsetup.get().info("%s already holds the lock held since %s by holder pid %s (a repeated freeze); it now "
                            "lasts at most %s s more", caller, current.get("since"), current.get("holder_pid"),
                            reply.get("seconds_left"))
    else:
        logsetup.get().info("joined the lock held since %s by holder pid %s (callers: %s): it is released when the "
                            "last of them thaws, at most %s s from now", current.get("since"),
                            current.get("holder_pid"), ", ".join(shared), reply.get("seconds_left"))
    return 0


def _supersede(settings: Settings, files: state.RuntimeFiles, caller: str) -> None:
    """A caller that freezes again has no thaw to come for its previous lock.

    Its unheard outcome goes into the history now (the holder about to start overwrites
    result.json), so that a failed freeze's thaw does not report an older cycle's loss.
    """
    result = files.read_result()
    if result is None:
        return
    had, rest = sharing.take(sharing.pending_of(result), caller)
    if not had:
        return
    from quiesce.records import recorder
    recorder.after_thaw(settings, result)
    state.write_json_atomic(files.result, dict(result, pending=rest, thaws_pending=len(rest)))


def run(settings: Settings, test: bool = False) -> int:
    """test: check --cycle's cycle, which the history and the metrics do not count as a backup."""
    log = logsetup.get()
    caller = callers.identify(settings.caller)
    files = state.RuntimeFiles(settings.runtime_dir)
    started = state.utc_now()
    if settings.hook_action and not settings.enabled:
        # A host being rolled out: the agent's snapshot goes ahead as if quiesce were absent,
        # and never fails because quiesce is not configured yet.
        message = ("quiesce is disabled (enabled = false): this snapshot is NOT quiesced, only crash-consistent; "
                   "fix: set enabled = true once 'quiesce check' passes")
        log.warning("%s", message)
        from quiesce.records import recorder
        recorder.after_disabled(settings, message, caller, started)
        return 0
    state.ensure_runtime_dir(settings.runtime_dir)
    with files.exclusive(spawn.spawn_timeout(settings), "freeze"):
        # A thaw's cancel marker from before this freeze began is not meant for it.
        state.remove(files.cancel)
        current = files.read_state()
        if current is not None:
            if state.holder_alive(current):
                return _join(files, current, caller)
            # Its callers' thaws report the loss (result.json, pending).
            recovery.adopt_dead_holder(settings, files, current, acknowledged=False)
        else:
            recovery.restart_orphaned_replicas(settings, files)
        _supersede(settings, files, caller)
        reply = spawn.spawn(settings, caller, test)
    status = reply.get("status")
    if status == "not-running":
        log.info("%s: nothing to quiesce, freeze succeeds", reply.get("message"))
        # The holder has exited holding nothing, and the agent freezes only after we return.
        from quiesce.records import recorder
        recorder.after_not_running(settings, str(reply.get("message")), caller, started, test)
        return 0
    if status != "locked":
        raise error_for_code(int(reply.get("exit", 1)), str(reply.get("message")))
    for item in reply["instances"]:
        for warning in item.get("warnings", []):
            log.warning("%s: %s", item["instance"], warning)
        position = item.get("binlog_file")
        where = "%s:%s" % (position, item.get("binlog_position")) if position else "binary log off"
        log.info("frozen %s (%s, %s) in %.1f ms; %s%s; holder pid %s; %s", item["instance"], item["server_version"],
                 item["lock"], item["wait_ms"], where, ", gtid " + item["gtid"] if item.get("gtid") else "",
                 reply["pid"], protocol.describe_timings(item.get("timings_ms") or {}))
    return 0
