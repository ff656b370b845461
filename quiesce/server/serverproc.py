"""The MySQL/MariaDB server processes on this host, as /proc shows them.

Anyone can name a process "mysqld" (prctl, or a copy of any program under that name). A
process counts as a server only if the program it runs is a file named like a server that
only root or the server's account can replace: a user cannot create a file they do not own,
and with protected hardlinks (the default) cannot link one under a new name either.
"""

import os
import pwd
import stat
from typing import FrozenSet, List, NamedTuple, Optional

from quiesce.base import paths

SERVER_ACCOUNT = "mysql"
_DELETED = " (deleted)"   # readlink of /proc/PID/exe once a package upgrade replaced the file


def _binary_owners() -> FrozenSet[int]:
    """root, and the server's account: MySQL's binary tarballs are often chowned to it whole."""
    try:
        return frozenset((0, pwd.getpwnam(SERVER_ACCOUNT).pw_uid))
    except KeyError:
        return frozenset((0,))


class ServerProcess(NamedTuple):
    pid: int
    uid: int
    # The program file is a server binary only root or the server's account can replace;
    # None: cannot tell (its exe and cwd are readable only to root and the process's owner).
    genuine: Optional[bool]
    # Runs under a root directory of its own, in our user namespace: a container that root
    # started (see contained()).
    contained: bool = False


def _genuine(pid: str, owners: FrozenSet[int]) -> Optional[bool]:
    try:
        program = os.readlink("/proc/%s/exe" % pid)
        info = os.stat("/proc/%s/exe" % pid)
    except PermissionError:
        return None
    if program.endswith(_DELETED):
        program = program[:-len(_DELETED)]
    return (os.path.basename(program) in paths.SERVER_PROCESS_NAMES and info.st_uid in owners
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def contained(pid: object) -> bool:
    """The process has a root directory other than ours but shares our user namespace.

    Changing the root (chroot, pivot_root) takes CAP_SYS_CHROOT or CAP_SYS_ADMIN in the
    user namespace that owns the mount namespace; for ours only root has them. So such a
    process was put there by root, as a container runtime (Docker, Podman, containerd)
    does, and not by a user, whose unshare(1) gets a user namespace of its own.
    """
    try:
        theirs = os.stat("/proc/%s/root/" % pid)
        ours = os.stat("/")
        same_users = os.readlink("/proc/%s/ns/user" % pid) == os.readlink("/proc/self/ns/user")
    except OSError:
        return False
    return same_users and (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino)


def scan() -> Optional[List[ServerProcess]]:
    """Every process named mysqld or mariadbd; None if /proc cannot be read at all."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    found = []
    owners = _binary_owners()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry, encoding="utf-8", errors="replace") as handle:
                if handle.read().strip() not in paths.SERVER_PROCESS_NAMES:
                    continue
            genuine = _genuine(entry, owners)
            found.append(ServerProcess(int(entry), os.stat("/proc/%s" % entry).st_uid, genuine,
                                       bool(genuine) and contained(entry)))
        except OSError:
            continue  # the process ended while being looked at
    return found


def servers() -> Optional[List[ServerProcess]]:
    """The processes that may be real servers (genuine, or that cannot be told); None: /proc unreadable."""
    found = scan()
    return None if found is None else [p for p in found if p.genuine is not False]


def cwd(pid: int) -> Optional[str]:
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return None
