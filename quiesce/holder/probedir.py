"""Where the filesystem probe's file goes, and removing those a dead process left."""

from __future__ import annotations

import os
import re
import stat
from typing import List, Optional, Sequence

from quiesce.base import paths

PROBE_PREFIX = ".quiesce-fsprobe-"
# pid then 16 random hex digits; the pid tells a sweep whether the owner is still alive.
PROBE_NAME = re.compile(r"^" + re.escape(PROBE_PREFIX) + r"(\d+)-[0-9a-f]{16}$")


def probe_name(token: str) -> str:
    """This process's probe file name with a 16-hex-digit token."""
    return PROBE_PREFIX + "%d-%s" % (os.getpid(), token)


def _usable_dir(path: str, dev: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_dev != dev:
        return False
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def choose_probe_dir(datadir: str,
                     preferred: Sequence[str] = ("/var/lib/quiesce",)) -> Optional[str]:
    """A writable directory on the same filesystem (st_dev) as datadir, or None.

    In order: the first of `preferred` that qualifies, the datadir's parent, the datadir
    itself.  Paths are resolved, and nothing below the datadir is used except the
    datadir itself: a subdirectory there would be a database to the server.

    The datadir itself is the last resort because a datadir on its own filesystem
    (mounted at /var/lib/mysql) is the usual layout on database servers, and without
    it the feature would be off exactly there.  The probe file is a dotfile and not a
    directory, so neither MariaDB nor MySQL sees it as a schema or a tablespace, and it
    exists only while the lock is held.  Returns None when the datadir is not an
    existing directory.
    """
    try:
        real = paths.resolved(datadir)
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    dev = st.st_dev
    for cand in preferred:
        path = os.path.realpath(cand)
        if not paths.inside(path, real) and _usable_dir(path, dev):
            return path
    parent = os.path.dirname(real)
    if parent != real and _usable_dir(parent, dev):
        return parent
    if os.access(real, os.W_OK | os.X_OK):
        return real
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def sweep_stale(directory: str, dir_fd: Optional[int] = None) -> List[str]:
    """Remove probe files left by processes that are gone; return their names.

    A probe whose thread was still stuck in a frozen write when its process exited
    leaves its file behind, and a snapshot always contains the probe of the moment.
    Files of live processes (this one included: its probes clean up after themselves)
    are left alone.
    """
    removed = []
    own = dir_fd is None
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if own else dir_fd
    try:
        for name in os.listdir(dfd):
            m = PROBE_NAME.match(name)
            if not m:
                continue
            pid = int(m.group(1))
            if pid == os.getpid() or _pid_alive(pid):
                continue
            try:
                # unlink never follows a symlink: at worst it removes the link.
                os.unlink(name, dir_fd=dfd)
                removed.append(name)
            except OSError:
                pass
    finally:
        if own:
            os.close(dfd)
    return removed
