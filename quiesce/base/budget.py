"""How long a freeze may take before it answers: the one formula for every user of it.

check compares it with each agent's timeout, register azure writes it (plus a margin)
as Azure's timeoutInSeconds, and the freeze command waits for its holder a little longer
than this before killing it. Each term is a wait that some code path really makes, with
the limit that path uses; a freeze that hits one fails (or goes on) by itself.
"""

from __future__ import annotations

from typing import Dict

from quiesce.base.config import Settings

# The drain costs no writer anything, but it delays freeze: past this, lock anyway (and
# the sync under the lock then waits behind what the drain has not written yet). About
# 4 GB at 150 MB/s, a busy VM datastore; snapshot agents allow their hooks minutes.
DRAIN_LIMIT = 30.0
# Seconds the filesystem probe's writer process gets to start and say hello (a cold
# interpreter on a busy host).
WRITER_START_LIMIT = 10.0
# Statements after the lock (coordinates, replica status, the flush) each get
# connect-timeout plus this: a stalled one ends the freeze when it runs out.
AFTER_LOCK_GRACE = 30.0
# Starting the holder's interpreter, the control socket, the records: beyond the waits.
BOOKKEEPING = 2.0


def per_server(settings: Settings, local: bool = True) -> Dict[str, float]:
    """The longest each phase may take for one server, in the order a freeze runs them."""
    phases = {
        "connect": 2 * settings.connect_timeout,            # the locking and the helper session
        "long_query_wait": settings.long_query_wait,
        "drain": DRAIN_LIMIT if local else 0.0,     # then it locks anyway
        "probe_start": WRITER_START_LIMIT if local and settings.release_on_fs_thaw else 0.0,
        "acquire": settings.acquire_timeout,
        "after_lock": settings.connect_timeout + AFTER_LOCK_GRACE,
        "sync": settings.acquire_timeout if local else 0.0,  # the server's files, under the lock
    }
    return phases


def freeze_budget(settings: Settings) -> float:
    """Seconds a freeze may take, for every configured server, before it fails by its own timeouts."""
    servers = sum(sum(per_server(settings, target.is_local).values()) for target in settings.targets)
    # The position and state files are written once, under the locks, within acquire-timeout.
    return servers + settings.acquire_timeout + BOOKKEEPING
