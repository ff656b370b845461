"""Who may stand behind a server socket before quiesce hands it credentials.

A unix socket anyone could have created (a world-writable directory, a server that is down
and its socket name free) would receive the configured password. quiesce talks only to a
socket owned by root or by the server's account, in a directory nobody else can write to,
and checks the process that listens on it once connected (SO_PEERCRED), which closes the
gap between looking at the file and connecting to it. A loopback TCP port gets the same
rule through the owner the kernel records for each socket (/proc/net/tcp*): for the
listening socket before connecting, and for the server's end of the connection once
connected, which closes the same gap for TCP.
"""

import ipaddress
import os
import pwd
import socket
import stat
import struct
from typing import FrozenSet, Iterator, Optional, Tuple, Union

from quiesce.base.errors import ConnectError
from quiesce.server import serverproc

SERVER_ACCOUNT = serverproc.SERVER_ACCOUNT


def _running_server_uids() -> FrozenSet[int]:
    """Owners of running server processes whose program file only root can replace.

    Consulted only on hosts without a mysql account (so only root-owned binaries count):
    anyone can name a process "mysqld", but not put a root-owned server binary in its
    place (serverproc.py).
    """
    return frozenset(p.uid for p in serverproc.scan() or () if p.genuine)


def _contained_server_uids() -> FrozenSet[int]:
    """Owners of genuine servers in containers root started: the image's server account
    (999 in the official images), which need not exist, or be the server's, on the host."""
    return frozenset(p.uid for p in serverproc.scan() or () if p.genuine and p.contained)


def _host_uids() -> FrozenSet[int]:
    """root and the server's account (without one: the owners of genuine server processes)."""
    try:
        return frozenset((0, pwd.getpwnam(SERVER_ACCOUNT).pw_uid))
    except KeyError:
        return frozenset((0,)) | _running_server_uids()


def _trusted_gids() -> FrozenSet[int]:
    try:
        return frozenset((0, pwd.getpwnam(SERVER_ACCOUNT).pw_gid))
    except KeyError:
        return frozenset((0,))


def _trusted(uid: int) -> bool:
    # The look at /proc only where the host's own accounts do not answer: a container.
    return uid in _host_uids() or uid in _contained_server_uids()


def trusted_ids() -> Tuple[FrozenSet[int], FrozenSet[int]]:
    """(uids, gids) that may own the server's socket: root, the server's account, and the
    accounts of servers in containers."""
    return _host_uids() | _contained_server_uids(), _trusted_gids()


def _user_name(uid: int) -> str:
    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def check_socket_file(path: str) -> None:
    """Refuse a socket file an unprivileged user could have planted. A missing file passes:
    connecting then fails with the driver's own "no such file" error."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConnectError("cannot examine socket %s: %s; fix: check the socket setting" % (path, exc.strerror))
    gids = _trusted_gids()
    if not stat.S_ISSOCK(info.st_mode):
        raise ConnectError("%s is not a socket; fix: set socket to the server's socket" % path)
    if not _trusted(info.st_uid):
        raise ConnectError("socket %s is owned by %s, not by root or the server's account; refusing to send "
                           "credentials to it; fix: make sure the server runs and socket names its socket"
                           % (path, _user_name(info.st_uid)))
    directory = os.path.dirname(os.path.realpath(path))
    try:
        parent = os.stat(directory)
    except OSError as exc:
        raise ConnectError("cannot examine %s: %s; fix: check the socket setting" % (directory, exc.strerror))
    # In a sticky directory only the owner can remove or rename the socket; otherwise anyone
    # allowed to write there can swap it for their own between this check and the connect.
    sticky = bool(parent.st_mode & stat.S_ISVTX)
    open_to_all = parent.st_mode & stat.S_IWOTH
    open_to_group = parent.st_mode & stat.S_IWGRP and parent.st_gid not in gids
    if not sticky and (open_to_all or open_to_group):
        raise ConnectError("socket %s is in %s, which users other than root and the server's account can "
                           "write to; refusing to send credentials; fix: chmod go-w %s (or o+t)"
                           % (path, directory, directory))
    # A container's account is trusted because root put its server there; setuid helpers
    # (snap-confine, firejail) let users run a server under another root too. Only in a
    # directory others cannot write to, /tmp's sticky bit notwithstanding, is such a
    # socket the container's and not a user's.
    if (open_to_all or open_to_group) and info.st_uid not in _host_uids():
        raise ConnectError("socket %s belongs to %s, the account of a server in a container, and is in %s, "
                           "where others can create files; refusing to send credentials; fix: give the "
                           "container's socket a directory of its own (chmod go-w)"
                           % (path, _user_name(info.st_uid), directory))


def check_peer(sock: socket.socket, path: str) -> None:
    """Refuse a connected unix socket whose listening process runs as an untrusted user."""
    size = struct.calcsize("3i")
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size))
    if not _trusted(uid):
        raise ConnectError("the server on socket %s runs as %s, not as root or the server's account; refusing "
                           "to send credentials to it; fix: make sure the server runs and socket names its socket"
                           % (path, _user_name(uid)))


Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# /proc/net/tcp states (include/net/tcp_states.h).
_LISTEN = "0A"
# A closed socket waiting out its last packets: no process can read from it, and the kernel
# shows it as root's.
_TIME_WAIT = "06"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _decode_address(text: str) -> Address:
    # The kernel prints each 32-bit word of the address in host byte order.
    words = [int(text[i:i + 8], 16) for i in range(0, len(text), 8)]
    return ipaddress.ip_address(b"".join(struct.pack("=I", word) for word in words))


def _endpoint(text: str) -> Tuple[Address, int]:
    address, _, hex_port = text.partition(":")
    decoded = _decode_address(address)
    # A dual-stack socket reached over IPv4 shows the peer as ::ffff:a.b.c.d.
    mapped = getattr(decoded, "ipv4_mapped", None)
    return (mapped or decoded), int(hex_port, 16)


def _tcp_sockets() -> Iterator[Tuple[Tuple[Address, int], Tuple[Address, int], str, int, int]]:
    """(local, remote, state, owner uid, inode) of every TCP socket in this network namespace."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            yield _endpoint(fields[1]), _endpoint(fields[2]), fields[3], int(fields[7]), int(fields[9])


def _listeners(port: int) -> Iterator[Tuple[Address, int]]:
    """(local address, owner uid) of every listening TCP socket on port."""
    for local, _remote, state, uid, _inode in _tcp_sockets():
        if state == _LISTEN and local[1] == port:
            yield local[0], uid


def check_local_port(host: str, port: int) -> None:
    """Refuse a loopback port another user listens on: while the server is down, anyone can."""
    if not _is_loopback(host):
        return
    for address, uid in _listeners(port):
        mapped = getattr(address, "ipv4_mapped", None)
        if (address.is_loopback or address.is_unspecified or (mapped and mapped.is_loopback)) \
                and not _trusted(uid):
            raise ConnectError("port %d on %s is served by a process running as %s, not as root or the server's "
                               "account; refusing to send credentials to it; fix: make sure the server runs, or "
                               "use its socket instead of host" % (port, host, _user_name(uid)))


def _endpoint_of(name: Tuple) -> Tuple[Address, int]:
    address = ipaddress.ip_address(name[0].split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address), int(name[1])


def _server_end(sock: socket.socket) -> Optional[Tuple[int, int]]:
    """(owner uid, inode) of the socket at the other end of a connected TCP socket, if it is
    on this host.

    The server's side of the connection is the entry whose local end is our remote end and
    whose remote end is ours. It belongs to whoever created the listening socket, also while
    it waits in the accept queue.
    """
    ours, theirs = _endpoint_of(sock.getsockname()), _endpoint_of(sock.getpeername())
    for local, remote, state, uid, inode in _tcp_sockets():
        if local == theirs and remote == ours and state != _TIME_WAIT:
            return uid, inode
    return None


def _peer_owner(sock: socket.socket) -> Optional[int]:
    end = _server_end(sock)
    return end[0] if end else None


def peer_socket_inode(sock: socket.socket) -> Optional[int]:
    """The inode of the server's end of a connected TCP socket on this host (0 while it
    waits in the accept queue: no process holds it yet), else None."""
    end = _server_end(sock)
    return end[1] or None if end else None


def check_tcp_peer(sock: socket.socket, address: str, remote_allowed: bool) -> None:
    """Refuse a TCP connection whose far end is an untrusted local user, or an unverified remote host.

    Runs once connected and before the greeting is read: nothing has been sent yet.
    remote_allowed: the server's identity is proven another way (a verified TLS certificate)
    or the admin accepted the risk.
    """
    uid = _peer_owner(sock)
    if uid is not None:
        if not _trusted(uid):
            raise ConnectError("the server at %s runs as %s, not as root or the server's account; refusing to "
                               "send credentials to it; fix: make sure the server runs, or use its socket "
                               "instead of host" % (address, _user_name(uid)))
        return
    peer = _endpoint_of(sock.getpeername())[0]
    if peer.is_loopback:
        raise ConnectError("cannot tell who serves %s (no such connection in /proc/net/tcp); refusing to send "
                           "credentials; fix: use the server's socket instead of host" % address)
    if not remote_allowed:
        raise ConnectError("the server at %s is on another host and nothing proves who answers there; "
                           "refusing to send credentials; fix: set ssl-mode = verify-ca (or verify-identity) "
                           "and ssl-ca, or allow-unverified-host = true if the network path is trusted" % address)
