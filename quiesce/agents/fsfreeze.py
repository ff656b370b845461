"""Freezing the filesystems that hold the server's files, as VMware Tools or qemu-ga do
before a snapshot: for `quiesce run --freeze-fs`, where the snapshot command does not.

FIFREEZE flushes the filesystem and blocks every new write to it until FITHAW; it is the
ioctl fsfreeze(8) uses. Each call runs in a thread of its own so that a flush that stalls
is abandoned after its timeout (the freeze it may still complete is undone by thaw_all).
"""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Dict, List, Sequence

from quiesce.base import paths
from quiesce.base.errors import ConfigError, StateError

# _IOWR('X', 119, int) and _IOWR('X', 120, int), from linux/fs.h.
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def mount_point(path: str) -> str:
    """The mount point of the filesystem that holds path (as findmnt -T tells)."""
    path = paths.resolved(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def mount_points(directories: Sequence[str]) -> List[str]:
    """The distinct filesystems holding these directories, in a fixed order; refuses the
    root filesystem, from which quiesce itself and the snapshot command run."""
    found: List[str] = []
    for directory in directories:
        point = mount_point(directory)
        if point == "/":
            raise ConfigError("%s is on the root filesystem, which --freeze-fs does not freeze (quiesce and the "
                              "snapshot command run from it); fix: leave out --freeze-fs, or give the server's "
                              "files a filesystem of their own" % directory)
        if point not in found:
            found.append(point)
    return sorted(found)


def _ioctl(point: str, request: int) -> None:
    fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)


class Frozen:
    """The filesystems this process froze, to be thawed in the reverse order."""

    def __init__(self) -> None:
        self.points: List[str] = []
        self._pending: Dict[str, threading.Thread] = {}

    def freeze(self, point: str, timeout: float) -> None:
        errors: List[BaseException] = []

        def work() -> None:
            try:
                _ioctl(point, FIFREEZE)
            except BaseException as exc:  # handed to the waiting thread
                errors.append(exc)

        thread = threading.Thread(target=work, name="quiesce-fsfreeze", daemon=True)
        self._pending[point] = thread
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise StateError("freezing %s took longer than %g s (a stalled flush); fix: check the disk, or leave out "
                             "--freeze-fs" % (point, timeout))
        del self._pending[point]
        if errors:
            exc = errors[0]
            raise StateError("cannot freeze %s: %s; fix: run as root on a filesystem that supports freezing (not "
                             "ZFS), or leave out --freeze-fs" % (point, getattr(exc, "strerror", None) or exc))
        self.points.append(point)

    def thaw_all(self, timeout: float) -> List[str]:
        """Thaw everything frozen (a freeze that timed out too, once it completes); the problems."""
        problems = []
        for point, thread in list(self._pending.items()):
            thread.join(timeout)
            if thread.is_alive():
                problems.append("the freeze of %s has not returned after %g s more: thaw it with "
                                "'fsfreeze -u %s' once it does" % (point, timeout, point))
                continue
            self.points.append(point)
        self._pending.clear()
        for point in reversed(self.points):
            try:
                _ioctl(point, FITHAW)
            except OSError as exc:
                if exc.errno != 22:  # EINVAL: not frozen (a timed-out freeze that failed)
                    problems.append("cannot thaw %s: %s; fix: fsfreeze -u %s" % (point, exc.strerror, point))
        self.points = []
        return problems

