"""Restarting the replication SQL threads a holder stopped for the freeze."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence, Tuple

from quiesce.base.config import Settings
from quiesce.records import state
from quiesce.server import locking


def restart_stopped(settings: Settings, files: state.RuntimeFiles, locked_items: Sequence[Any],
                    stopping: Dict[str, List[str]], log: logging.Logger) -> Tuple[Dict[str, List[str]], List[str]]:
    """Restart every SQL thread the holder meant to stop (stopping); returns those still
    stopped (by instance) and why.

    Goes by the record written before the first STOP, not by the STOPs that answered: one
    that timed out may have taken effect. locking.release() has started the locked ones
    over their own sessions; the rest get a new connection. replicas.json stays until every
    one runs again, so that the next quiesce command retries.
    """
    left: Dict[str, List[str]] = {}
    problems: Dict[str, str] = {}
    locked = {item.target.name: item for item in locked_items}
    for target in settings.targets:
        wanted = stopping.get(target.name) or []
        item = locked.get(target.name)
        if not wanted:
            continue
        if item is not None and item.lost is None:
            # Its session was up after the unlock: what failed over it would fail again.
            rest = [c for c in wanted if c not in item.restarted]
            if rest:
                left[target.name], problems[target.name] = rest, str(item.restart_problem)
            continue
        problem = locking.restart_replica_fresh(target, settings, item.server if item else None, wanted, log)
        if problem:
            left[target.name], problems[target.name] = list(wanted), problem
    why = [problems[name] for name in left]
    if not stopping:
        return left, why
    if left:
        try:
            state.write_json_atomic(files.replicas, dict(state.owner_record(), instances=left))
        except OSError as exc:
            log.error("cannot rewrite %s: %s", files.replicas, exc.strerror)
    else:
        state.remove(files.replicas)
    return left, why
