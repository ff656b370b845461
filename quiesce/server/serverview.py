"""The server's files as the server sees them: a server in a container, or in a mount
namespace of its own, names paths that are not ours.

The process behind a connection is found by the kernel (SO_PEERCRED on a unix socket; for
TCP, the process holding the server's end of the connection, where it is on this host).
When its mount namespace or root differs from ours, its paths are reached through
/proc/PID/root, which the kernel resolves inside that process's mounts: the drain, the
sync under the lock and the filesystem probe then work on the server's own files.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import List, NamedTuple, Optional, Tuple

from quiesce.base import paths
from quiesce.server import trust


class ServerView(NamedTuple):
    pid: Optional[int]   # None: the process could not be found (a proxy, another host)
    root: str            # "" when the server sees our tree, else /proc/PID/root

    def path(self, server_path: str) -> str:
        """Where a path the server names is, from here: our own path to it where that is the
        same file (a chroot sharing our /tmp), else through /proc/PID/root."""
        if not self.root:
            return server_path
        reached = self.root + server_path
        return server_path if _same(server_path, reached) else reached

    @property
    def foreign(self) -> bool:
        return bool(self.root)


UNKNOWN = ServerView(None, "")


def _same(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _namespace(pid: object) -> Optional[str]:
    try:
        return os.readlink("/proc/%s/ns/mnt" % pid)
    except OSError:
        return None


def _is_server(pid: int) -> bool:
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() in paths.SERVER_PROCESS_NAMES
    except OSError:
        return False


def view_of(pid: Optional[int]) -> ServerView:
    """How the process behind a connection sees its files; UNKNOWN unless it is a server
    process (a TCP proxy on this host is not the server)."""
    if not pid or not _is_server(pid):
        return UNKNOWN
    theirs = _namespace(pid)
    if theirs is None:
        return UNKNOWN   # gone, or not ours to look at
    if in_our_namespace(pid):
        return ServerView(pid, "")
    return ServerView(pid, "/proc/%d/root" % pid)


def in_our_namespace(pid: int) -> bool:
    return _namespace(pid) == _namespace("self") and _same("/proc/%d/root" % pid, "/")


def peer_pid(sock: Optional[socket.socket]) -> Optional[int]:
    """The process at the other end of a connected socket, if it runs on this host."""
    if sock is None:
        return None
    if sock.family == socket.AF_UNIX:
        size = struct.calcsize("3i")
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size))[0]
        return pid or None   # 0: in a PID namespace we cannot see
    inode = trust.peer_socket_inode(sock)
    return _holder_of_socket(inode) if inode else None


def _holder_of_socket(inode: int) -> Optional[int]:
    target = "socket:[%d]" % inode
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % entry)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (entry, fd)) == target:
                    return int(entry)
            except OSError:
                continue
    return None


# -- for check: where a foreign server's data is, seen from this host ---------------------

def _mounts(pid: object) -> List[Tuple[str, str, str]]:
    """(major:minor, root within the filesystem, mount point) of each mount pid sees."""
    found = []
    try:
        with open("/proc/%s/mountinfo" % pid, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 5:
                    found.append((fields[2], _unescape(fields[3]), _unescape(fields[4])))
    except OSError:
        pass
    return found


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _inside(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _device_name(majmin: str) -> str:
    try:
        name = os.path.basename(os.readlink("/sys/dev/block/%s" % majmin))
    except OSError:
        return "device %s" % majmin
    try:
        with open("/sys/block/%s/loop/backing_file" % name, encoding="utf-8") as handle:
            return "/dev/%s (backing file %s)" % (name, handle.read().strip())
    except OSError:
        return "/dev/%s" % name


def host_location(view: ServerView, server_path: str) -> str:
    """Where server_path of a server in another mount namespace is on this host."""
    theirs = [m for m in _mounts(view.pid) if _inside(server_path, m[2])]
    if not theirs:
        return "unknown (its mounts cannot be read)"
    majmin, root, point = max(theirs, key=lambda m: len(m[2]))
    within = os.path.join(root, os.path.relpath(server_path, point)) if server_path != point else root
    for our_majmin, our_root, our_point in _mounts("self"):
        if our_majmin == majmin and _inside(within, our_root):
            rest = os.path.relpath(within, our_root)
            return os.path.normpath(os.path.join(our_point, rest))
    return "%s, which is mounted nowhere on this host" % _device_name(majmin)
