"""A private ext4 filesystem on a loop device, for real FIFREEZE/FITHAW cycles (root only).

Only this filesystem is ever frozen: before every fsfreeze the mount point must be a
mount of exactly our loop device. A frozen filesystem left behind would hang every
process that writes to it, so besides the finally blocks of the caller a guardian
process watches this one: if the benchmark dies without saying goodbye (SIGKILL,
crash), the guardian thaws the filesystem, kills what still uses it, unmounts it and
detaches the loop device. close() does the same in an orderly way.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional, Tuple

from bench.common import wait_exit
from tests.integration import loopfs
from tests.integration.loopfs import SYSTEM_PATH

# Reads stdin until EOF; "bye" means a clean goodbye, anything else a dead parent. Then it
# does what close() would have done: thaw, stop whatever still uses the filesystem (the
# server whose datadir is there), unmount, detach the loop device, remove the image.
_GUARDIAN = r"""
import os, shutil, signal, subprocess, sys, time
base, mnt, dev = sys.argv[1], sys.argv[2], sys.argv[3]
data = b""
try:
    while True:
        chunk = os.read(0, 64)
        if not chunk:
            break
        data += chunk
except OSError:
    pass
if b"bye" in data:
    sys.exit(0)
def ours():
    try:
        return os.path.ismount(mnt) and os.stat(mnt).st_dev == os.stat(dev).st_rdev
    except OSError:
        return False
def run(*cmd):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode
if ours():
    run("fsfreeze", "-u", mnt)
    for _ in range(3):
        users = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                for fd in os.listdir("/proc/%s/fd" % pid):
                    if os.readlink("/proc/%s/fd/%s" % (pid, fd)).startswith(mnt + "/"):
                        users.add(int(pid))
                        break
            except OSError:
                pass
        users.discard(os.getpid())
        for pid in users:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
        if run("umount", mnt) == 0:
            break
    else:
        run("umount", "-l", mnt)
run("losetup", "-d", dev)
shutil.rmtree(base, ignore_errors=True)
"""


unavailable_reason = loopfs.unavailable_reason
_sh = loopfs.sh


class LoopFs:
    def __init__(self, size_mb: int = 256, base: Optional[str] = None):
        self.base = base or tempfile.mkdtemp(prefix="quiesce-bench-fs-", dir="/tmp")
        self.image = os.path.join(self.base, "fs.img")
        self.mnt = os.path.join(self.base, "mnt")
        self.size_mb = size_mb
        self.dev: Optional[str] = None
        self.mounted = False
        self.frozen = False
        self._guardian: Optional[subprocess.Popen] = None

    def setup(self) -> "LoopFs":
        os.makedirs(self.mnt, exist_ok=True)
        # Eager initialisation: nothing writes in the background while we time freezes.
        loopfs.make_image(self.image, self.size_mb, eager=True)
        self.dev = loopfs.attach(self.image)
        _sh("mount", "-t", "ext4", self.dev, self.mnt)
        self.mounted = True
        self._guardian = subprocess.Popen([sys.executable, "-c", _GUARDIAN, self.base, self.mnt, self.dev],
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, cwd="/", start_new_session=True)
        return self

    def _check_ours(self) -> None:
        # A failed mount would leave the mount point on the parent filesystem: never freeze that.
        if not (self.mounted and loopfs.is_mount_of(self.mnt, self.dev)):
            raise RuntimeError("%s is not a mount of %s; refusing to freeze it" % (self.mnt, self.dev))

    def _timed(self, flag: str) -> Tuple[float, float]:
        self._check_ours()
        began = time.monotonic()
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(["fsfreeze", flag, self.mnt], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, cwd="/",
                                    env={"PATH": SYSTEM_PATH, "LANG": "C"})
            ended = wait_exit(proc, 60, "fsfreeze %s" % flag)
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError("fsfreeze %s %s failed: %s"
                                   % (flag, self.mnt, err.read().decode(errors="replace").strip()))
        return began, ended

    def freeze(self) -> Tuple[float, float]:
        """fsfreeze -f; returns (monotonic before, monotonic after)."""
        self._check_ours()
        self.frozen = True      # set before: a timeout or Ctrl-C mid-way must still thaw
        return self._timed("-f")

    def thaw(self) -> Tuple[float, float]:
        """fsfreeze -u; returns (monotonic before, monotonic after)."""
        stamps = self._timed("-u")
        self.frozen = False
        return stamps

    def ensure_thawed(self) -> None:
        if self.frozen and self.mounted:
            self._check_ours()
            result = _sh("fsfreeze", "-u", self.mnt, check=False)
            # "Invalid argument": it was not frozen after all (fsfreeze -f failed).
            if result.returncode == 0 or "Invalid argument" in result.stderr:
                self.frozen = False

    def close(self) -> None:
        """Thaw, unmount, detach, remove; every step is tried even if one before failed."""
        problems = []
        try:
            self.ensure_thawed()
        except Exception as exc:
            problems.append("thaw: %s" % exc)
        if self.mounted:
            if not loopfs.unmount(self.mnt):
                problems.append("umount %s failed (busy); lazily unmounted" % self.mnt)
            self.mounted = False
        if self.dev:
            if not loopfs.detach(self.dev):
                problems.append("losetup -d %s failed" % self.dev)
            self.dev = None
        if self._guardian is not None:
            try:
                self._guardian.stdin.write(b"bye")
                self._guardian.stdin.close()
                self._guardian.wait(10)
            except Exception:
                self._guardian.kill()
            self._guardian = None
        shutil.rmtree(self.base, ignore_errors=True)
        if problems:
            raise RuntimeError("; ".join(problems))
