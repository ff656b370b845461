"""The holder's filesystem-thaw probes: one per data-directory filesystem being locked.

A probe is an optimisation (it releases the lock at the filesystem thaw instead of at the
thaw hook a second later); the lock never depends on one, so every failure to start one
is only a warning.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional

from quiesce.base import caller as callers
from quiesce.base.config import Target
from quiesce.holder import fsprobe, probedir
from quiesce.records import state


class ThawWatch:
    def __init__(self, enabled: bool, on_thaw: Callable[[], None], log: logging.Logger, caller: str):
        # Only a caller whose snapshot freezes the filesystems ends it with their thaw.
        self.enabled = enabled and callers.freezes_filesystems(caller)
        self.on_thaw = on_thaw
        self.log = log
        self.probes: List[Any] = []
        if enabled and not self.enabled:
            log.info("release-on-fs-thaw is off for this freeze: its caller (%s) takes the snapshot without "
                     "freezing filesystems, so a freeze seen now would be someone else's", caller)

    def watch(self, target: Target, datadir: Optional[str]) -> None:
        """Start a probe for this server's data directory (before its lock: it takes tens of ms).

        It counts no freeze until arm(): one begun before the lock is not the snapshot's.
        """
        if not self.enabled or not target.is_local or not datadir:
            return
        try:
            # Preferably beside the position file: quiesce's own directory, not the server's.
            directory = probedir.choose_probe_dir(datadir, (os.path.dirname(target.position_file),))
            if directory is None:
                self.log.info("%s: data directory %s not visible here; release-on-fs-thaw is off for it",
                              target.name, datadir)
                return
            device = os.stat(directory).st_dev
            if any(device == os.stat(os.path.dirname(p.path)).st_dev for p in self.probes):
                return
            probe = fsprobe.FsThawProbe(directory, self.on_thaw, armed=False)
            probe.start()
        except Exception as exc:  # the lock does not depend on the probe
            self.log.warning("%s: no filesystem-thaw probe (%s: %s); the thaw hook or the deadline releases "
                             "the lock", target.name, type(exc).__name__, exc)
            return
        if probe.inspection == "none":
            self.log.warning("%s: this kernel shows the probe writer neither its stack nor its wait channel in "
                             "/proc, so the probe can never see a freeze: release-on-fs-thaw does nothing; "
                             "the thaw hook or the deadline releases the lock", target.name)
        self.probes.append(probe)

    def arm(self) -> None:
        """The lock is held: from now on a freeze of a watched filesystem is the snapshot's."""
        for probe in self.probes:
            probe.arm()

    def stop(self) -> None:
        # Waits for each writer process to end: callers do it after answering thaw.
        for probe in self.probes:
            probe.stop()
            if probe.error and not probe.fired:
                self.log.warning("the filesystem-thaw probe in %s stopped early (%s), so the lock could not be "
                                 "released at the filesystem thaw", os.path.dirname(probe.path or ""), probe.error)

    @property
    def frozen_seen(self) -> bool:
        return any(p.frozen_at is not None for p in self.probes)

    def describe(self) -> List[Dict[str, Any]]:
        # inspection "none" means it could never fire; error, why it stopped early.
        return [{"directory": p.path and os.path.dirname(p.path), "fired": p.fired,
                 "frozen_at": p.frozen_at and state.utc_at(p.frozen_at.wall),
                 "thawed_at": p.thawed_at and state.utc_at(p.thawed_at.wall),
                 "inspection": p.inspection, "error": p.error} for p in self.probes]
