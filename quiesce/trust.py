"""Who may stand behind a server socket before quiesce hands it credentials.

A unix socket anyone could have created (a world-writable directory, a server that is down
and its socket name free) would receive the configured password. quiesce talks only to a
socket owned by root or by the server's account, in a directory nobody else can write to,
and checks the process that listens on it once connected (SO_PEERCRED), which closes the
gap between looking at the file and connecting to it.
"""

import os
import pwd
import socket
import stat
import struct
from typing import FrozenSet, Tuple

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
