"""quiesce freeze: start a holder and return once it holds every lock."""

from . import holder, log as logsetup, protocol, recovery, state
from .config import Settings
from .errors import Busy, error_for_code


def run(settings: Settings) -> int:
    log = logsetup.get()
    files = state.RuntimeFiles(settings.runtime_dir)
    state.ensure_runtime_dir(settings.runtime_dir)
    with files.exclusive(holder.spawn_timeout(settings), "freeze"):
        current = files.read_state()
        if current is not None:
            if state.holder_alive(current):
                raise Busy("already frozen since %s by holder pid %s; this freeze changed nothing and the "
                           "existing lock stays; fix: run 'quiesce thaw' first"
                           % (current.get("since"), current.get("holder_pid")))
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
