"""Real ZFS pools for the scheduler tests: Debian's zfs-fuse (ZFS in user space over FUSE,
in Debian 12's main archive), since this kernel has no ZFS module.

zfs-fuse is one daemon per machine, reached through /var/run/zfs/zfs_socket. A pool lives in
a file under the test's tmp_path and is mounted there; it is destroyed at teardown, and a
daemon the test had to start is stopped again. zfs-fuse implements ZFS pool version 23:
snapshots, `zfs snapshot -r`, clones and user properties as the schedulers use them.
"""

import os
import signal
import subprocess
import time
from typing import Optional

from . import loopfs

DAEMON = "/usr/sbin/zfs-fuse"
SOCKET = "/var/run/zfs/zfs_socket"
KSTAT = "/zfs-kstat"


def zfs(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return loopfs.sh("zfs", *args, check=check, timeout=120)


def zpool(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return loopfs.sh("zpool", *args, check=check, timeout=120)


def _mounted(path: str) -> bool:
    # Not os.path.ismount: a FUSE mount whose daemon died cannot be stat()ed.
    with open("/proc/self/mounts", encoding="utf-8") as handle:
        return any(line.split()[1] == path for line in handle)


def _answers() -> bool:
    return os.path.exists(SOCKET) and zpool("list", "-H", check=False).returncode == 0


class Daemon:
    """The machine's zfs-fuse daemon: the running one, or one started (and later stopped) here."""

    def __init__(self):
        self.proc: Optional[subprocess.Popen] = None
        if not os.path.exists(DAEMON):
            raise loopfs.MissingTool("zfs-fuse is not installed: run 'make deps' (as root)")
        if os.path.exists("/dev/fuse") is False:
            raise RuntimeError("no /dev/fuse: zfs-fuse needs the kernel's FUSE device")
        if _answers():
            return
        self.proc = subprocess.Popen([DAEMON, "--no-daemon"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("zfs-fuse did not start (or did not answer within 30 s)")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
            # Its statistics filesystem, which a daemon that did not end cleanly leaves behind.
            if _mounted(KSTAT):
                loopfs.sh("umount", "-l", KSTAT, check=False)


class Pool:
    """A pool in `directory`/pool.img, mounted at `directory`/NAME."""

    def __init__(self, directory: str, size_mb: int = 640):
        self.name = "qtest%d%d" % (os.getpid(), int(time.monotonic() * 1000) % 100000)
        self.image = os.path.join(directory, "pool.img")
        self.mnt = os.path.join(directory, self.name)
        with open(self.image, "wb") as handle:
            handle.truncate(size_mb << 20)
        self.daemon = Daemon()
        try:
            zpool("create", "-m", self.mnt, self.name, self.image)
        except BaseException:
            self.daemon.stop()
            raise

    def dataset(self, name: str) -> str:
        """Creates POOL/name; returns its mount point."""
        zfs("create", "%s/%s" % (self.name, name))
        return os.path.join(self.mnt, name)

    def snapshots(self) -> list:
        listed = zfs("list", "-H", "-o", "name", "-t", "snapshot").stdout.split()
        return [s for s in listed if s.startswith(self.name + "/") or s.startswith(self.name + "@")]

    def destroy(self) -> None:
        try:
            if zpool("list", "-H", self.name, check=False).returncode == 0:
                zpool("destroy", "-f", self.name, check=False)
        finally:
            self.daemon.stop()
