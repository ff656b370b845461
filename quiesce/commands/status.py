"""quiesce status: frozen or not, since when, by whom, and how the last freeze ended."""

from __future__ import annotations

import json
import sys

from quiesce.base.config import Settings
from quiesce.base.errors import Exit, StateError
from quiesce.holder import protocol, sharing
from quiesce.records import history, state


def collect(settings: Settings) -> dict[str, object]:
    files = state.RuntimeFiles(settings.runtime_dir)
    report: dict[str, object] = {"frozen": False, "since": None, "holder_pid": None, "deadline": None,
                              "instances": [], "callers": [], "release_on_fs_thaw": settings.release_on_fs_thaw,
                              "last_result": None, "history": history.recent(settings)}
    if not state.ensure_runtime_dir(settings.runtime_dir, create=False):
        return report
    current = files.read_state()
    if current is not None:
        alive = state.holder_alive(current)
        report.update(frozen=alive, since=current.get("since"), holder_pid=current.get("holder_pid"),
                      deadline=current.get("deadline"), instances=current.get("instances", []),
                      release_on_fs_thaw=current.get("release_on_fs_thaw"))
        if alive:
            try:
                live = protocol.request(files.socket, {"cmd": protocol.STATUS}, 2.0)
                lost = {i["name"]: i["lost"] for i in live.get("instances", [])}
                for item in report["instances"]:
                    item["lost"] = lost.get(item["name"])
                report["fs_frozen_seen"] = live.get("fs_frozen_seen")
                # Joins move the deadline, in the holder's memory only (the disks may be frozen).
                report["deadline"] = live.get("deadline") or report["deadline"]
                report["callers"] = live.get("callers") or current.get("callers") or []
            except (ConnectionRefusedError, FileNotFoundError):
                # It closed its socket: it has released and is recording its result.
                report.update(frozen=False, releasing=True)
            except (OSError, ValueError, StateError):
                report["holder_responding"] = False
        else:
            report["holder_died"] = True
    result = files.read_result()
    if result is not None:
        result.pop("log", None)
        report["last_result"] = result
    return report


def verdict(report: dict[str, object]) -> Exit:
    """Non-zero while a snapshot being taken now may not be consistent, so that a monitor
    or playbook that only looks at the exit status sees it."""
    if report.get("holder_died") or any(i.get("lost") for i in report["instances"]):  # type: ignore[union-attr]
        return Exit.LOCK_LOST
    if report.get("holder_responding") is False:
        return Exit.STATE
    result = report.get("last_result")
    # Lost or expired, and a caller's thaw has yet to hear it. The placeholder for joins a
    # dead holder may have had is not counted: it would keep status failing until the
    # next freeze although every known caller has heard.
    if isinstance(result, dict) and result.get("outcome") not in sharing.GOOD and \
            [c for c in sharing.pending_of(result) if c != sharing.ANY]:
        return Exit.LOCK_LOST
    return Exit.OK


def run(settings: Settings) -> int:
    report = collect(settings)
    code = int(verdict(report))
    if settings.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return code
    if report["frozen"]:
        print("frozen since %s by holder pid %s for %s; releases by itself at %s" % (
            report["since"], report["holder_pid"], ", ".join(report.get("callers") or ["?"]), report["deadline"]))
        for item in report["instances"]:
            print("  %s: %s on %s%s" % (item["name"], item["lock"], item.get("server", "?"),
                                        " -- LOCK LOST: %s" % item["lost"] if item.get("lost") else ""))
    elif report.get("holder_died"):
        print("NOT frozen: holder pid %s died while frozen (thaw will report the loss)" % report["holder_pid"])
    else:
        print("not frozen")
    result = report["last_result"]
    if result:
        print("last result: %s at %s, held %s ms%s" % (result.get("outcome"), result.get("at"),
                                                      result.get("held_ms"),
                                                      " (%s)" % result["reason"] if result.get("reason") else ""))
    recent = report["history"]
    if recent:
        print("history: %s (oldest first); %d failure(s) in a row" % (
            " ".join("ok" if e.get("ok") else str(e.get("outcome")).upper() for e in recent),
            int(recent[-1].get("consecutive_failures") or 0)))
    print("release on filesystem thaw: %s" % ("on" if report["release_on_fs_thaw"] else "off"))
    return code
