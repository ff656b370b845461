"""The Prometheus node_exporter textfile: the last freeze's outcome, for alerting.

Rewritten from the history after every recorded outcome (never while filesystems may be
frozen, see history.py), atomically: node_exporter reads either the old file or the new.
The textfile directory belongs to node_exporter's setup, so quiesce writes there only if
nobody but root can write to it, unless metrics-dir-shared says the sharing is intended.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from quiesce.agents import catalog
from quiesce.base import paths, safefile
from quiesce.records.history import backups, epoch

OFF = ("", "none", "off", "no", "false")
# The hook timeouts of the snapshot agents that publish one, by the caller name that
# quiesce/base/caller.py gives them: the agents' defaults (Azure: the least that quiesce
# register writes). An alert compares the freeze's duration with it.
AGENT_TIMEOUTS = {"vmware-tools": catalog.VMWARE.timeout, "qemu-guest-agent": catalog.QEMU_GA.timeout,
                  "google-guest-agent": catalog.GCE.timeout, "azure-waagent": catalog.AZURE.timeout,
                  "aws-ssm-agent": catalog.AWS.timeout}


def resolve(setting: str | None, directories: Sequence[str] = paths.METRICS_DIRS) -> str | None:
    """metrics-file: a path, "auto" (quiesce.prom in the first textfile directory that exists) or off."""
    value = str(setting or "").strip()
    if value.lower() in OFF:
        return None
    if value.lower() == "auto":
        for directory in directories:
            if os.path.isdir(directory):
                return os.path.join(directory, paths.METRICS_NAME)
        return None
    return value


def _number(value: float) -> str:
    return ("%d" % value) if float(value).is_integer() else ("%.3f" % value)


def _gauge(lines: list[str], name: str, help_text: str, value: float, labels: str = "") -> None:
    lines += ["# HELP %s %s" % (name, help_text), "# TYPE %s gauge" % name, "%s%s %s" % (name, labels, _number(value))]


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def freeze_seconds(entry: dict[str, object]) -> float | None:
    """From the freeze's start until the lock was held (or the freeze gave up).

    The entry has the start, the end and how long the lock was held; the difference also
    counts the release, which takes milliseconds: an upper bound, which is the safe side.
    """
    start, end = epoch(entry.get("since")), epoch(entry.get("at"))
    if start is None or end is None:
        return None
    return max(0.0, end - start - float(entry.get("held_ms") or 0) / 1000.0)


def instance_successes(entries: Sequence[dict[str, object]]) -> dict[str, float]:
    """Each instance of the newest entry that names any: when it was last in a good freeze (0: never).

    A freeze locks every instance or none, so an instance's successes differ from the
    others' only after it was added; an instance no longer configured drops out.
    """
    named = [e for e in entries if e.get("instances")]
    if not named:
        return {}
    found = {}
    for name in named[-1]["instances"]:  # type: ignore[union-attr]
        times = [epoch(e.get("at")) for e in named if e.get("ok") and name in e["instances"]]  # type: ignore
        found[str(name)] = next((t for t in reversed(times) if t is not None), 0.0)
    return found


def render(entries: Sequence[dict[str, object]]) -> str:
    """Text exposition format from the history (oldest first); empty history, no metrics.

    check --cycle's test entries are left out: a daily test must not hide failing backups.
    """
    entries = backups(entries)
    if not entries:
        return ""
    last = entries[-1]
    lines: list[str] = []
    _gauge(lines, "quiesce_last_outcome", "Outcome of the last freeze (the label), always 1.", 1,
           '{outcome="%s"}' % _label(last.get("outcome")))
    _gauge(lines, "quiesce_last_success", "1 if the last freeze held its lock until thaw, else 0.",
           1 if last.get("ok") else 0)
    at = epoch(last.get("at"))
    if at is not None:
        _gauge(lines, "quiesce_last_run_timestamp_seconds", "When the last freeze ended (Unix time).", at)
    successes = [epoch(e.get("at")) for e in entries if e.get("ok")]
    if successes and successes[-1] is not None:
        _gauge(lines, "quiesce_last_success_timestamp_seconds", "When the last successful freeze ended (Unix time).",
               successes[-1])
    _gauge(lines, "quiesce_lock_held_seconds", "How long the last freeze held the lock.",
           float(last.get("held_ms") or 0) / 1000.0)
    _gauge(lines, "quiesce_consecutive_failures", "Freezes in a row that failed or lost their lock.",
           int(last.get("consecutive_failures") or 0))
    took = freeze_seconds(last)
    if took is not None:
        _gauge(lines, "quiesce_last_freeze_seconds", "How long the last freeze took to hold the lock, or to fail.",
               round(took, 3))
    timeout = AGENT_TIMEOUTS.get(str(last.get("agent")))
    if timeout is not None:
        _gauge(lines, "quiesce_agent_timeout_seconds", "The hook timeout of the agent that made the last freeze.",
               timeout, '{agent="%s"}' % _label(last.get("agent")))
    per_instance = instance_successes(entries)
    if per_instance:
        # Not "instance": Prometheus gives that label to the scrape target.
        lines += ["# HELP quiesce_instance_last_success_timestamp_seconds When the last successful freeze of "
                  "the instance ended (Unix time; 0: none in the history).",
                  "# TYPE quiesce_instance_last_success_timestamp_seconds gauge"]
        lines += ['quiesce_instance_last_success_timestamp_seconds{quiesce_instance="%s"} %s'
                  % (_label(name), _number(at)) for name, at in sorted(per_instance.items())]
    return "\n".join(lines) + "\n"


def _private_directory(st, directory: str) -> None:
    safefile.refuse_shared_directory(st, directory, "the metrics-file directory", "metrics-dir-shared = yes")


def update(setting: str | None, entries: Sequence[dict[str, object]], dir_shared: bool = False) -> str | None:
    """Rewrite the metrics file (0644: node_exporter does not run as root); returns its path.

    dir_shared: metrics-dir-shared, the directory may be writable by others.
    """
    path = resolve(setting)
    if path is None:
        return None
    safefile.write_atomic(path, render(entries), 0o644, check_dir=None if dir_shared else _private_directory)
    return path
