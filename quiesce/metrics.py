"""The Prometheus node_exporter textfile: the last freeze's outcome, for alerting.

Rewritten from the history after every recorded outcome (never while filesystems may be
frozen, see history.py), atomically: node_exporter reads either the old file or the new.
The textfile directory belongs to node_exporter's setup, so quiesce writes there only if
nobody but root can write to it, unless metrics-dir-shared says the sharing is intended.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import paths, safefile
from .history import backups, epoch

OFF = ("", "none", "off", "no", "false")


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


def _gauge(lines: list[str], name: str, help_text: str, value: float, labels: str = "") -> None:
    lines += ["# HELP %s %s" % (name, help_text), "# TYPE %s gauge" % name,
              "%s%s %s" % (name, labels, ("%d" % value) if float(value).is_integer() else ("%.3f" % value))]


def render(entries: Sequence[dict[str, object]]) -> str:
    """Text exposition format from the history (oldest first); empty history, no metrics.

    check --cycle's test entries are left out: a daily test must not hide failing backups.
    """
    entries = backups(entries)
    if not entries:
        return ""
    last = entries[-1]
    lines: list[str] = []
    outcome = str(last.get("outcome")).replace("\\", "\\\\").replace('"', '\\"')
    _gauge(lines, "quiesce_last_outcome", "Outcome of the last freeze (the label), always 1.", 1,
           '{outcome="%s"}' % outcome)
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
