"""Which server sockets quiesce trusts with credentials (quiesce/server/trust.py, paths.DEFAULT_SOCKETS).

Real socket files in private directories; owners changed with chown (the suite runs as root).
"""

import os
import pwd
import socket

import pytest

from quiesce.base import paths
from quiesce.base.errors import ConnectError
from quiesce.server import trust
from .privileges import needs_root

NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def bound(tmp_path):
    """A socket file bound in a private 0755 directory; yields its path."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o755)
    path = str(directory / "mysqld.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    yield path
    sock.close()


def test_no_default_socket_in_a_directory_everyone_can_write():
    shared = ("/tmp/", "/var/tmp/", "/dev/shm/")
    assert not [p for p in paths.DEFAULT_SOCKETS if p.startswith(shared)]


@needs_root
def test_root_owned_socket_passes(bound):
    trust.check_socket_file(bound)


def test_absent_socket_is_left_to_the_connect_error(tmp_path):
    trust.check_socket_file(str(tmp_path / "absent.sock"))


def test_socket_owned_by_another_user_is_refused(bound):
    os.chown(bound, NOBODY, -1)
    with pytest.raises(ConnectError) as caught:
        trust.check_socket_file(bound)
    message = str(caught.value)
    assert bound in message and "nobody" in message and "fix:" in message
    assert "\n" not in message


@needs_root
def test_server_account_may_own_the_socket(bound):
    uids, _gids = trust.trusted_ids()
    for uid in uids:
        os.chown(bound, uid, -1)
        trust.check_socket_file(bound)


def test_regular_file_is_refused(tmp_path):
    path = tmp_path / "mysqld.sock"
    path.write_text("")
    with pytest.raises(ConnectError, match="not a socket"):
        trust.check_socket_file(str(path))


@needs_root
@pytest.mark.parametrize("mode", (0o777, 0o757))
def test_directory_others_can_write_is_refused(bound, mode):
    os.chmod(os.path.dirname(bound), mode)
    with pytest.raises(ConnectError, match="chmod go-w"):
        trust.check_socket_file(bound)


@needs_root
def test_group_writable_directory_of_another_group_is_refused(bound):
    directory = os.path.dirname(bound)
    os.chown(directory, 0, pwd.getpwnam("nobody").pw_gid)
    os.chmod(directory, 0o775)
    with pytest.raises(ConnectError, match="write to"):
        trust.check_socket_file(bound)


@needs_root
def test_sticky_directory_passes(bound):
    # Only the owner may remove or rename a file in a sticky directory: root's socket stays root's.
    os.chmod(os.path.dirname(bound), 0o1777)
    trust.check_socket_file(bound)


def test_symlink_is_judged_by_its_target(tmp_path, bound):
    os.chown(bound, NOBODY, -1)
    link = tmp_path / "link.sock"
    link.symlink_to(bound)
    with pytest.raises(ConnectError, match="nobody"):
        trust.check_socket_file(str(link))


@needs_root
@pytest.mark.parametrize("family, address", ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"),
                                             (socket.AF_INET6, "::")))
def test_listening_sockets_are_found_with_their_owner(family, address):
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        found = list(trust._listeners(port))
        trust.check_local_port("127.0.0.1", port)
    assert [(str(a), uid) for a, uid in found] == [(address, os.getuid())]


def test_only_loopback_hosts_are_checked():
    assert trust._is_loopback("localhost") and trust._is_loopback("127.0.0.2") and trust._is_loopback("::1")
    assert not trust._is_loopback("db.example.com") and not trust._is_loopback("10.0.0.5")


class _Connected:
    """Stands for a connected TCP socket: only its two ends are looked at."""

    def __init__(self, ours, theirs):
        self._ours, self._theirs = ours, theirs

    def getsockname(self):
        return self._ours

    def getpeername(self):
        return self._theirs


def test_a_server_on_another_host_needs_a_verified_identity_or_the_admins_consent(monkeypatch):
    monkeypatch.setattr(trust, "_tcp_sockets", lambda: iter(()))
    sock = _Connected(("10.0.0.5", 40000), ("192.0.2.10", 3306))
    with pytest.raises(ConnectError) as caught:
        trust.check_tcp_peer(sock, "db.example:3306", remote_allowed=False)
    message = str(caught.value)
    assert "db.example:3306" in message and "ssl-mode = verify-ca" in message and "allow-unverified-host" in message
    trust.check_tcp_peer(sock, "db.example:3306", remote_allowed=True)


def test_a_loopback_peer_that_cannot_be_found_is_refused(monkeypatch):
    monkeypatch.setattr(trust, "_tcp_sockets", lambda: iter(()))
    with pytest.raises(ConnectError, match="cannot tell who serves"):
        trust.check_tcp_peer(_Connected(("127.0.0.1", 40000), ("127.0.0.1", 3306)), "127.0.0.1:3306", True)


@needs_root
def test_the_servers_end_of_a_real_connection_is_found_with_its_owner():
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
        server.bind(("::", 0))      # dual stack: the IPv4 client shows as ::ffff:127.0.0.1 there
        server.listen(1)
        with socket.create_connection(("127.0.0.1", server.getsockname()[1]), timeout=5) as client:
            assert trust._peer_owner(client) == os.getuid()
            trust.check_tcp_peer(client, "127.0.0.1", remote_allowed=False)


def test_a_containers_socket_in_a_directory_anyone_can_write_is_refused(tmp_path, monkeypatch):
    """A server under another root in our user namespace is root's container, or a user's
    through a setuid helper (snap-confine, firejail): its account is trusted only for a
    socket in a directory nobody else can write to, sticky or not."""
    monkeypatch.setattr(trust, "_contained_server_uids", lambda: frozenset((NOBODY,)))
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o1777)
    own = tmp_path / "own"
    own.mkdir()
    os.chmod(str(own), 0o755)
    sockets = []
    for directory in (shared, own):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(directory / "mysqld.sock"))
        sockets.append(sock)
        os.chown(str(directory / "mysqld.sock"), NOBODY, -1)
    try:
        with pytest.raises(ConnectError, match="the account of a server in a container.*fix: give"):
            trust.check_socket_file(str(shared / "mysqld.sock"))
        trust.check_socket_file(str(own / "mysqld.sock"))
    finally:
        for sock in sockets:
            sock.close()
