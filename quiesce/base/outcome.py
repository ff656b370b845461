"""How a hold ended, decided in one place from what the holder saw."""

from __future__ import annotations

from typing import List, Optional, Tuple

RELEASED = "released"
RELEASED_AT_FS_THAW = "released-at-fs-thaw"
EXPIRED = "expired"
LOST = "lost"
# thaw killed a holder that did not answer: whether the lock lasted is unknown.
KILLED = "killed"
# freeze found no server running: nothing to lock, so freeze succeeds, but the snapshot
# holds no running database's state; neither a success nor a failure in the history.
NOT_RUNNING = "not-running"
# enabled = false: the agent's freeze did nothing on purpose (a host being rolled out); like
# not-running, neither a success nor a failure, and the snapshot is crash-consistent only.
DISABLED = "disabled"
UNCOUNTED = (NOT_RUNNING, DISABLED)

GOOD = (RELEASED, RELEASED_AT_FS_THAW)


def decide(requested: str, reason: Optional[str], lost: List[Tuple[str, str]]) -> Tuple[str, Optional[str]]:
    """The outcome to report: a release is only good if every session still held its lock.

    lost: (instance, why) for each lock session that was gone or failed to unlock as gone.
    """
    if lost and requested in GOOD:
        return LOST, "; ".join("%s: %s" % pair for pair in lost)
    return requested, reason
