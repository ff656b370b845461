"""quiesce freeze: start a holder and return once it holds every lock.

A freeze that finds a healthy lock of ours joins it instead (two snapshot agents in one
backup, e.g. VMware Tools and a Veeam job script): the holder's deadline is extended
and each joined freeze's thaw later reports the same outcome.
"""

from . import holder, log as logsetup, protocol, recovery, state
from .config import Settings
from .errors import LockLost, StateError, error_for_code

JOIN_TIMEOUT = 10.0


def _join(files: state.RuntimeFiles, current: dict) -> int:
    try:
        reply = protocol.request(files.socket, {"cmd": protocol.JOIN}, JOIN_TIMEOUT)
    except (OSError, ValueError, StateError) as exc:
        raise StateError("already frozen by holder pid %s, which did not answer (%s); the lock cannot be "
                         "shared; fix: run 'quiesce thaw' (it reports whether the lock lasted)"
                         % (current.get("holder_pid"), exc))
    if not reply.get("joined"):
        raise LockLost("already frozen since %s by holder pid %s, but that lock is lost (%s); this freeze "
                       "cannot join it; fix: run 'quiesce thaw', then freeze again"
                       % (current.get("since"), current.get("holder_pid"), reply.get("reason") or reply))
    logsetup.get().info("joined the lock held since %s by holder pid %s (another agent's freeze): it now "
                        "lasts at most %s s more; the first thaw releases it",
                        current.get("since"), current.get("holder_pid"), reply.get("seconds_left"))
    return 0


def run(settings: Settings) -> int:
    log = logsetup.get()
    files = state.RuntimeFiles(settings.runtime_dir)
    state.ensure_runtime_dir(settings.runtime_dir)
    with files.exclusive(holder.spawn_timeout(settings), "freeze"):
        # A thaw's cancel marker from before this freeze began is not meant for it.
        state.remove(files.cancel)
        current = files.read_state()
        if current is not None:
            if state.holder_alive(current):
                return _join(files, current)
            # Kept unacknowledged: the next thaw still reports the loss.
            recovery.adopt_dead_holder(settings, files, current, acknowledged=False)
        else:
            recovery.restart_orphaned_replicas(settings, files)
        reply = holder.spawn(settings)
    status = reply.get("status")
    if status == "not-running":
        log.info("%s: nothing to quiesce, freeze succeeds", reply.get("message"))
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
