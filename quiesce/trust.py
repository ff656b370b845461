"""Who may stand behind a server socket before quiesce hands it credentials.

A unix socket anyone could have created (a world-writable directory, a server that is down
and its socket name free) would receive the configured password. quiesce talks only to a
socket owned by root or by the server's account, in a directory nobody else can write to,
and checks the process that listens on it once connected (SO_PEERCRED), which closes the
gap between looking at the file and connecting to it. A loopback TCP port gets the same
rule through the owner the kernel records for each listening socket (/proc/net/tcp*).
"""

import ipaddress
import os
import pwd
import socket
import stat
import struct
from typing import FrozenSet, Iterator, Tuple, Union

from . import paths
from .errors import ConnectError

SERVER_ACCOUNT = "mysql"


def _running_server_uids() -> FrozenSet[int]:
    """Owners of running mysqld/mariadbd processes whose program file only root can replace.

    Consulted only on hosts without a mysql account: anyone can name a process "mysqld",
    but not put a root-owned binary in its place.
    """
    uids = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return frozenset()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry) as handle:
                if handle.read().strip() not in paths.SERVER_PROCESS_NAMES:
                    continue
            program = os.stat("/proc/%s/exe" % entry)
            if program.st_uid != 0 or program.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                continue
            uids.add(os.stat("/proc/%s" % entry).st_uid)
        except OSError:
            continue
    return frozenset(uids)


def trusted_ids() -> Tuple[FrozenSet[int], FrozenSet[int]]:
    """(uids, gids) that may own the server's socket: root and the server's account."""
    try:
        account = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        uids = _running_server_uids()
        gids = frozenset()
    else:
        uids = frozenset((account.pw_uid,))
        gids = frozenset((account.pw_gid,))
    return frozenset((0,)) | uids, frozenset((0,)) | gids


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
    uids, gids = trusted_ids()
    if not stat.S_ISSOCK(info.st_mode):
        raise ConnectError("%s is not a socket; fix: set socket to the server's socket" % path)
    if info.st_uid not in uids:
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


def check_peer(sock: socket.socket, path: str) -> None:
    """Refuse a connected unix socket whose listening process runs as an untrusted user."""
    size = struct.calcsize("3i")
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size))
    if uid not in trusted_ids()[0]:
        raise ConnectError("the server on socket %s runs as %s, not as root or the server's account; refusing "
                           "to send credentials to it; fix: make sure the server runs and socket names its socket"
                           % (path, _user_name(uid)))


Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


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


def _listeners(port: int) -> Iterator[Tuple[Address, int]]:
    """(local address, owner uid) of every listening TCP socket on port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                yield _decode_address(address), int(fields[7])


def check_local_port(host: str, port: int) -> None:
    """Refuse a loopback port another user listens on: while the server is down, anyone can."""
    if not _is_loopback(host):
        return
    uids = trusted_ids()[0]
    for address, uid in _listeners(port):
        mapped = getattr(address, "ipv4_mapped", None)
        if (address.is_loopback or address.is_unspecified or (mapped and mapped.is_loopback)) \
                and uid not in uids:
            raise ConnectError("port %d on %s is served by a process running as %s, not as root or the server's "
                               "account; refusing to send credentials to it; fix: make sure the server runs, or "
                               "use its socket instead of host" % (port, host, _user_name(uid)))
