"""Debian root filesystems for servers the host does not ship (MariaDB 11.8, MySQL 9.7).

An image is built once with mmdebstrap into a tarball cached under /var/tmp, keyed by suite,
package list and mirror (rebuilt when older than MAX_AGE: unstable moves), and extracted
into a fresh directory for each test process. A program runs in it through `Root.command`:
a private mount namespace (unshare -m) in which /proc is mounted and the host's /tmp is
bind-mounted over the root's /tmp, then chroot. So a server's work directory, datadir and
socket under /tmp have the same path inside and outside, the host's quiesce reaches the
server's socket directly, and every mount dies with the process: nothing is left mounted
on the host. The command execs all the way down, so its pid is the server's own (SIGSTOP,
SIGKILL and /proc work on it as on a host server). Where the mount namespace cannot be made
private (the test process itself runs in a chroot, whose / is no mount point), the root is
bind-mounted onto itself and made private once instead, so that the mounts under it still
stay out of the host's namespace; that mount is undone when the root is removed.

Extracted roots are removed when the process ends; roots of a test process that died are
removed by the next one (the owner is recorded as for server work directories).

A root that cannot be built (no network, no mmdebstrap) raises ChrootError with what to
do about it: the tests that need it fail, they are never skipped.
"""

import atexit
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Dict, List, Sequence

from .mariadb import _owner_gone, _write_owner

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CACHE_DIR = "/var/tmp/quiesce-chroots"
ROOT_PREFIX = "quiesce-root-"
ROOTS_DIR = "/var/tmp"
MIRROR = os.environ.get("QUIESCE_TEST_MIRROR", "http://deb.debian.org/debian")
MAX_AGE = 7 * 86400
BUILD_TIMEOUT = 900

# Shared by the bind mount: a path under it means the same file inside and outside a root.
SHARED = "/tmp"

_lock = threading.Lock()
_roots: Dict[str, "Root"] = {}


class ChrootError(RuntimeError):
    """A root filesystem could not be built or extracted; the message says why and what to do."""


class Image:
    """A Debian suite with a package list, as a cached tarball."""

    def __init__(self, suite: str, packages: Sequence[str], aptopts: Sequence[str] = (),
                 mirror: str = MIRROR, cache_dir: str = CACHE_DIR):
        self.suite = suite
        self.packages = tuple(sorted(packages))
        self.aptopts = tuple(aptopts)
        self.mirror = mirror
        self.cache_dir = cache_dir
        key = "\n".join((suite, mirror, *self.packages, *self.aptopts)).encode()
        self.tarball = os.path.join(cache_dir, "%s-%s.tar" % (suite, hashlib.sha256(key).hexdigest()[:12]))

    def _fresh(self) -> bool:
        try:
            return time.time() - os.stat(self.tarball).st_mtime < MAX_AGE
        except OSError:
            return False

    def build(self) -> str:
        """The tarball's path, building it first if it is missing or stale (one builder at a time)."""
        os.makedirs(self.cache_dir, exist_ok=True)
        with open(self.tarball + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._fresh():
                return self.tarball
            mmdebstrap = shutil.which("mmdebstrap", path=SYSTEM_PATH)
            if mmdebstrap is None:
                raise ChrootError("mmdebstrap is not installed; fix: run 'make deps' (it is in DEB_PACKAGES)")
            partial = self.tarball + ".partial"
            cmd = [mmdebstrap, "--quiet", "--variant=apt", "--mode=root", "--format=tar",
                   "--include=" + ",".join(self.packages)]
            cmd += ["--aptopt=%s" % opt for opt in self.aptopts]
            cmd += [self.suite, partial, self.mirror]
            try:
                result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT,
                                        env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "TMPDIR": "/var/tmp"})
            except subprocess.TimeoutExpired:
                _remove(partial)
                raise ChrootError("mmdebstrap %s did not finish within %d s; fix: check the network and "
                                  "the mirror %s" % (self.suite, BUILD_TIMEOUT, self.mirror)) from None
            if result.returncode != 0:
                _remove(partial)
                tail = "\n".join(result.stdout.decode("utf-8", "replace").splitlines()[-15:])
                raise ChrootError("cannot build a Debian %s root with %s (mmdebstrap exited %d): the tests "
                                  "need network access to %s; fix: connect the machine or set "
                                  "QUIESCE_TEST_MIRROR to a reachable mirror\n%s"
                                  % (self.suite, ", ".join(self.packages), result.returncode, self.mirror, tail))
            os.replace(partial, self.tarball)
            return self.tarball


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sweep_stale_roots() -> None:
    """Remove roots extracted by test processes that died (their servers are reaped first)."""
    for entry in os.listdir(ROOTS_DIR):
        path = os.path.join(ROOTS_DIR, entry)
        if entry.startswith(ROOT_PREFIX) and _owner_gone(path):
            _kill_and_delete(path)


def _kill_and_delete(path: str) -> None:
    for pid in pids_rooted_in(path):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    if _mounted(path):
        subprocess.run(["umount", "--recursive", "--lazy", path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    if _mounted(path):
        raise ChrootError("cannot unmount %s; remove it by hand" % path)
    subprocess.run(["rm", "-rf", "--one-file-system", path], stdin=subprocess.DEVNULL, timeout=300)


def _mounted(path: str) -> bool:
    """Is something mounted at path? (os.path.ismount misses a directory bound onto itself.)"""
    try:
        with open("/proc/self/mountinfo") as handle:
            return any(line.split()[4] == path for line in handle)
    except OSError:
        return os.path.ismount(path)


def _private_namespaces_work() -> bool:
    """Can a new mount namespace be made private here (not in a chroot)?"""
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return result.returncode == 0


def pids_rooted_in(root: str) -> List[int]:
    """Processes whose root directory is `root` (servers running in it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink("/proc/%s/root" % entry) == root:
                    found.append(int(entry))
            except OSError:
                pass
    return found


class Root:
    """One extracted image, private to this test process."""

    def __init__(self, image: Image, name: str):
        tarball = image.build()
        _sweep_stale_roots()
        self.path = tempfile.mkdtemp(prefix=ROOT_PREFIX + name + "-", dir=ROOTS_DIR)
        _write_owner(self.path)
        result = subprocess.run(["tar", "-x", "-f", tarball, "-C", self.path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        if result.returncode != 0:
            self.remove()
            raise ChrootError("cannot extract %s: %s; fix: delete it so that it is rebuilt"
                              % (tarball, result.stdout.decode("utf-8", "replace")[-500:]))
        atexit.register(self.remove)
        self.propagation = "private"
        if not _private_namespaces_work():
            self.propagation = "unchanged"
            for cmd in (["mount", "--bind", self.path, self.path], ["mount", "--make-private", self.path]):
                done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, timeout=60)
                if done.returncode != 0:
                    self.remove()
                    raise ChrootError("%s failed: %s" % (" ".join(cmd), done.stdout.decode(errors="replace")))

    def command(self, argv: Sequence[str]) -> List[str]:
        """argv run inside the root, with /proc and the shared /tmp mounted in a private namespace."""
        script = ('mount -t proc proc "$0/proc" && mount --rbind %s "$0%s" && exec chroot "$0" "$@"'
                  % (SHARED, SHARED))
        return ["unshare", "--mount", "--propagation", self.propagation, "--", "/bin/sh", "-c", script,
                self.path, *argv]

    def run(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout,
                              env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "TZ": "UTC"})

    def package_version(self, package: str) -> str:
        result = self.run(["dpkg-query", "-W", "-f=${Version}", package], timeout=60)
        return result.stdout.decode().strip()

    def remove(self) -> None:
        """Kill what still runs in the root, then delete it (nothing is mounted on the host)."""
        if os.path.isdir(self.path):
            _kill_and_delete(self.path)


def root_for(name: str, image: Image) -> Root:
    """The extracted root of this name for this process (built and extracted on first use)."""
    with _lock:
        root = _roots.get(name)
        if root is None or not os.path.isdir(root.path):
            root = _roots[name] = Root(image, name)
        return root


def remove_all() -> None:
    with _lock:
        roots = list(_roots.values())
        _roots.clear()
    for root in roots:
        root.remove()
