"""A bounded history of freeze outcomes (JSON lines); recorder.py appends to it.

Written only when no filesystem can be frozen, because a write to a frozen filesystem
blocks until its thaw:
- by the holder after the thaw command reached it (agents send thaw after the filesystem
  thaw), or after it saw the data directory's filesystem thaw;
- by the holder when a freeze failed, before it reports: the agent freezes nothing until
  the freeze command has returned; by freeze when it found no server running (no lock
  was taken, and the agent freezes nothing before freeze returns);
- by thaw, for outcomes the holder could not record safely (the deadline passed, a signal
  or a lost caller ended the lock: the filesystems may still have been frozen then), and
  by freeze or thaw for a holder that died.

The file lives next to the (first) position file, /var/lib/quiesce/history.jsonl by
default, and keeps the last HISTORY_KEEP entries. Writing it never fails a command: a
problem is logged and the command goes on.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence

from quiesce.base import outcome, paths
from quiesce.records import state

SUCCESS = outcome.GOOD
# Seconds to wait for another writer of the history (it writes a few kilobytes).
WRITER_WAIT = 5.0


def path_for(position_file: str) -> str:
    return os.path.join(os.path.dirname(position_file), paths.HISTORY_NAME)


def lock_for(history_path: str):
    """The bounded flock that lets one writer at a time rewrite the history."""
    return state.exclusive_lock(os.path.join(os.path.dirname(history_path), paths.HISTORY_LOCK_NAME),
                                WRITER_WAIT, "the history")


def entry_from_result(result: dict[str, object], agent: str | None) -> dict[str, object]:
    instances = list(result.get("instances") or [])
    return {"at": result.get("at"), "since": result.get("since"), "outcome": result.get("outcome"),
            "ok": result.get("outcome") in SUCCESS, "agent": agent or "unknown",
            "lock": sorted({str(i.get("lock")) for i in instances if i.get("lock")}),
            "instances": [i.get("name") for i in instances], "held_ms": result.get("held_ms"),
            "reason": result.get("reason"), "errors": list(result.get("problems") or []),
            **_marks(result.get("callers"), bool(result.get("test")))}


def failure_entry(message: str, agent: str | None, at: str, since: str, test: bool = False) -> dict[str, object]:
    return {"at": at, "since": since, "outcome": "failed", "ok": False, "agent": agent or "unknown", "lock": [],
            "instances": [], "held_ms": None, "reason": None, "errors": [message], **_marks(None, test)}


def not_running_entry(message: str, agent: str | None, at: str, since: str, test: bool = False,
                      what: str = outcome.NOT_RUNNING) -> dict[str, object]:
    """what: NOT_RUNNING or DISABLED, the freezes that took nothing and failed nothing."""
    return dict(failure_entry(message, agent, at, since, test), outcome=what, reason=message, errors=[])


def _marks(callers: object, test: bool) -> dict[str, object]:
    """Who held the lock; and whether it was only check --cycle's test, which is no backup."""
    marks: dict[str, object] = {}
    if callers:
        marks["callers"] = [str(c) for c in callers]  # type: ignore[union-attr]
    if test:
        marks["test"] = True
    return marks


def backups(entries: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """The entries of real snapshots: check --cycle's tests left out."""
    return [e for e in entries if not e.get("test")]


def holder_recorded(result: dict[str, object]) -> bool:
    """Did the holder itself record this result (see the module's docstring)?"""
    return bool(result.get("acknowledged")) or result.get("outcome") == "released-at-fs-thaw"


def parse_lines(text: str) -> list[dict[str, object]]:
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: the rest is still good
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def appended(entries: Sequence[dict[str, object]], entry: dict[str, object],
             keep: int = paths.HISTORY_KEEP) -> list[dict[str, object]]:
    """The history with entry added, its failure streak counted, bounded to keep entries.

    Recording the same outcome twice (freeze and then thaw both report a dead holder) adds it once.
    """
    key = (entry.get("at"), entry.get("since"), entry.get("outcome"))
    if any((e.get("at"), e.get("since"), e.get("outcome")) == key for e in entries):
        return list(entries)[-keep:]
    # A test cycle neither breaks nor extends a streak of failed backups, nor does a freeze
    # that found no server running (nothing failed, but nothing consistent was taken either).
    earlier = backups(entries)
    previous = earlier[-1] if earlier else {}
    streak = int(previous.get("consecutive_failures") or 0)
    if not entry.get("test") and entry.get("outcome") not in outcome.UNCOUNTED:
        streak = 0 if entry.get("ok") else streak + 1
    return (list(entries) + [dict(entry, consecutive_failures=streak)])[-keep:]


def epoch(text: object) -> float | None:
    try:
        return datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def read(path: str) -> list[dict[str, object]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_lines(handle.read())
    except FileNotFoundError:
        return []


def recent(settings, count: int = 10) -> list[dict[str, object]]:
    try:
        return read(path_for(settings.targets[0].position_file))[-count:]
    except OSError:
        return []
