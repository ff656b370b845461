"""Plumbing for private ext4 filesystems on loop devices (root only).

Shared by the filesystem-probe tests, the power-cut tests and the benchmark, which each
add their own behaviour on top. Only filesystems made here are ever frozen: callers
check is_mount_of() before every fsfreeze.
"""

import os
import shutil
import subprocess
import time
from typing import Optional

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("losetup", "mkfs.ext4", "mount", "umount", "fsfreeze")


class MissingTool(RuntimeError):
    """A tool `make deps` installs is missing: the test fails (it is not a reason to skip)."""


def sh(*cmd: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0], path=SYSTEM_PATH) is None:
        raise MissingTool("%s is not installed: run 'make deps' (as root)" % cmd[0])
    return subprocess.run(cmd, check=check, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
                          env={"PATH": SYSTEM_PATH, "LANG": "C"})


# Set to 1 where the tests must run in full (CI): then no reason below is a reason to skip.
STRICT_VAR = "QUIESCE_STRICT_SKIPS"


def unavailable_reason() -> Optional[str]:
    """Why loop filesystems cannot exist here (not root, no loop driver), or None.

    Missing tools are no such reason: sh() fails the test naming the tool.
    """
    if os.geteuid() != 0:
        return "needs root (loop devices, mounts)"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (kernel without loop devices)"
    return None


def skip_reason() -> Optional[str]:
    """unavailable_reason() where skipping is allowed; None in strict mode, where the
    tests then run and fail at their first loop device."""
    return None if os.environ.get(STRICT_VAR) == "1" else unavailable_reason()


def make_image(image: str, size_mb: int, eager: bool = False) -> None:
    with open(image, "wb") as handle:
        handle.truncate(size_mb << 20)
    # Eager initialisation: no ext4lazyinit thread writing in the background later.
    options = ["-E", "lazy_itable_init=0,lazy_journal_init=0"] if eager else []
    sh("mkfs.ext4", "-q", "-F", *options, image)


def attach(image: str) -> str:
    return sh("losetup", "--find", "--show", image).stdout.strip()


def is_mount_of(mnt: str, dev: Optional[str]) -> bool:
    """A failed mount leaves the mount point on the parent filesystem: never freeze that."""
    return bool(dev) and os.path.ismount(mnt) and os.stat(mnt).st_dev == os.stat(dev).st_rdev


def unmount(mnt: str) -> bool:
    """Unmount, retrying while busy (a just-killed server may still hold files); lazily at last.

    Returns False when only the lazy unmount worked.
    """
    for _ in range(50):
        if sh("umount", mnt, check=False).returncode == 0:
            return True
        time.sleep(0.1)
    sh("umount", "-l", mnt, check=False)
    return False


def detach(dev: str) -> bool:
    return sh("losetup", "-d", dev, check=False).returncode == 0
