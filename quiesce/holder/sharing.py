"""How several callers share one lock, and what each of their thaws may report.

The holder keeps the names of the callers whose freeze it serves (quiesce/base/caller.py).
A freeze by a new caller joins the lock; one by a caller already holding it is a retry
and is not counted twice. A thaw by one of several callers only drops that caller; the
last thaw releases. The deadline is the bound that needs nobody: a join moves it to
now + lock-timeout, never past MAX_HOLD_FACTOR x lock-timeout after the first lock.

When the lock ends, the result lists as pending every caller that has not thawed yet.
A pending caller's later thaw reports the outcome, and never success when the lock
ended before that thaw could have been taken for it: at the deadline, lost, killed, or
released early by another caller's `thaw --all`.

Only the standard library, no imports: thaw uses this on its critical path.
"""

from __future__ import annotations

MAX_HOLD_FACTOR = 2.0
# A caller whose name is not known (a joined caller of a holder that died, or a result
# written by quiesce 0.1.x): the first thaw that matches nobody else takes it.
ANY = "*"
GOOD = ("released", "released-at-fs-thaw")


def capped_deadline(current: float, first_locked: float, now: float, lock_timeout: float) -> float:
    """The deadline after a join: a full lock-timeout from now, within the documented cap."""
    return min(max(current, now + lock_timeout), first_locked + MAX_HOLD_FACTOR * lock_timeout)


def pending_of(result: dict[str, object]) -> list[str]:
    """The callers that have not heard how this lock ended."""
    if "pending" in result:
        return [str(c) for c in result.get("pending") or []]  # type: ignore[union-attr]
    # 0.1.x: thaws_pending counted the joined freezes; the first thaw was still due if
    # nobody had acknowledged the result.
    count = int(result.get("thaws_pending") or 0) + (0 if result.get("acknowledged") else 1)  # type: ignore[arg-type]
    return [ANY] * count


def take(pending: list[str], caller: str) -> tuple[bool, list[str]]:
    """(did caller have a thaw to come, the pending callers without it)."""
    rest = list(pending)
    if caller in rest:
        rest.remove(caller)
        return True, rest
    if ANY in rest:
        rest.remove(ANY)
        return True, rest
    return False, rest


def late_verdict(result: dict[str, object], caller: str) -> str | None:
    """None if the lock lasted until this pending caller's thaw; else why it did not."""
    outcome = result.get("outcome")
    if outcome not in GOOD:
        return "the lock did not last until thaw (%s): %s" % (outcome, result.get("reason"))
    released_by = result.get("released_by")
    if released_by and released_by != caller:
        return ("the lock was released at %s by %s's 'thaw --all', before this thaw by %s"
                % (result.get("at"), released_by, caller))
    return None


def pending_after(callers: list[str], thawing: str | None, everyone: bool) -> list[str]:
    """Who still has a thaw to come once the lock ends (thawing: the caller whose thaw ended it)."""
    if thawing is None:
        return list(callers)
    return [c for c in callers if c != thawing] if everyone else []
