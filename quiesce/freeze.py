"""quiesce freeze: start a holder and return once it holds every lock."""

from typing import Any, Dict

from . import holder, log as logsetup, state
from .config import Settings
from .errors import Busy, error_for_code


def _adopt_stale_state(files: state.RuntimeFiles, current: Dict[str, Any]) -> None:
    """A holder that died while frozen left state.json: keep it as an unreported loss."""
    result = {"outcome": "lost", "acknowledged": False, "at": state.utc_now(), "since": current.get("since"),
              "reason": "holder pid %s died while frozen (killed?); the lock ended with it"
                        % current.get("holder_pid"),
              "instances": current.get("instances", [])}
    state.write_json_atomic(files.result, result)
    state.remove(files.state)
    state.remove(files.socket)


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
            _adopt_stale_state(files, current)
        reply = holder.spawn(settings)
    status = reply.get("status")
    if status == "not-running":
        log.info("%s: nothing to quiesce, freeze succeeds", reply.get("message"))
        return 0
    if status != "locked":
        raise error_for_code(int(reply.get("exit", 1)), str(reply.get("message")))
    for item in reply["instances"]:
        position = item.get("binlog_file")
        where = "%s:%s" % (position, item.get("binlog_position")) if position else "binary log off"
        log.info("frozen %s (%s, %s) in %.1f ms; %s%s; holder pid %s", item["instance"], item["server_version"],
                 item["lock"], item["wait_ms"], where, ", gtid " + item["gtid"] if item.get("gtid") else "",
                 reply["pid"])
    return 0
