"""Who answers on a TCP connection before quiesce sends it credentials (quiesce/server/trust.py).

The listener check before connecting can be raced: a user who listens on the server's port
only now and then may be absent when it runs and present a moment later. The connected
socket's peer is therefore looked up too, between connecting and reading the greeting.
"""

import os
import pwd
import select
import socket
import struct

import pytest

from quiesce.base.config import Target
from quiesce.base.errors import ConnectError
from quiesce.server import db, trust

from . import fakeserver

SECRET = "Tcp-Peer-Secret"
WAIT = 20.0       # seconds; bounds every wait for the forked listener


def _caching_sha2_greeting() -> bytes:
    """A MySQL 8 greeting whose default plugin is caching_sha2_password: PyMySQL then sends the
    password encrypted with whatever RSA key the peer offers."""
    salt = b"ABCDEFGHIJKLMNOPQRST"
    caps = fakeserver.CAPABILITIES
    payload = (b"\x0a" + b"8.0.99-fake\0" + struct.pack("<I", 9) + salt[:8] + b"\0"
               + struct.pack("<H", caps & 0xFFFF) + bytes([255]) + struct.pack("<H", 2)
               + struct.pack("<H", caps >> 16) + bytes([21]) + b"\0" * 10
               + salt[8:] + b"\0" + b"caching_sha2_password\0")
    return fakeserver.packet(0, payload)


def _listen_as_nobody():
    """Fork a listener on 127.0.0.1 owned by nobody: greets one client, records what it sends.
    Returns (pid, port, pipe the recording arrives on)."""
    nobody = pwd.getpwnam("nobody")
    port_read, port_write = os.pipe()
    data_read, data_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(port_read)
            os.close(data_read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            # The kernel records the socket's owner when it is created: after setuid.
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            os.write(port_write, struct.pack("<H", server.getsockname()[1]))
            server.settimeout(WAIT)
            conn, _ = server.accept()
            conn.settimeout(WAIT)
            received = b""
            try:
                conn.sendall(_caching_sha2_greeting())
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    received += chunk
            except ConnectionResetError:
                pass  # a client that closes with the greeting unread resets the connection
            os.write(data_write, b"ok" + received)
        except BaseException:
            os.write(data_write, b"error")
        finally:
            os._exit(0)
    os.close(port_write)
    os.close(data_write)
    ready, _, _ = select.select([port_read], [], [], WAIT)
    assert ready, "the listener did not start"
    port = struct.unpack("<H", os.read(port_read, 2))[0]
    os.close(port_read)
    return pid, port, data_read


def _recording(pid: int, pipe: int) -> bytes:
    ready, _, _ = select.select([pipe], [], [], WAIT)
    data = b""
    while ready:
        chunk = os.read(pipe, 65536)
        if not chunk:
            break
        data += chunk
    os.close(pipe)
    os.waitpid(pid, 0)
    return data


def test_tcp_peer_of_an_unprivileged_user_gets_nothing_after_the_greeting(driver, monkeypatch):
    # The listener check before connecting sees nothing: the race this check closes.
    monkeypatch.setattr(trust, "_listeners", lambda port: iter(()))
    pid, port, pipe = _listen_as_nobody()
    target = Target(name="default", socket=None, host="127.0.0.1", port=port, user="root", password=SECRET,
                    position_file=None)
    try:
        with pytest.raises(ConnectError) as caught:
            db.connect(target, driver, 10.0)
    finally:
        received = _recording(pid, pipe)
    message = str(caught.value)
    assert received == b"ok", received
    assert "127.0.0.1:%d" % port in message and "nobody" in message and "fix:" in message
    assert "\n" not in message


def test_tcp_peer_that_is_the_real_server_is_trusted(mariadb, driver):
    mariadb.create_user("qtcp", SECRET, grants=("PROCESS",), host="127.0.0.1")
    target = Target(name="default", socket=None, host="127.0.0.1", port=mariadb.port, user="qtcp",
                    password=SECRET, position_file=None)
    conn = db.connect(target, driver, 10.0)
    try:
        assert conn.query("SELECT CURRENT_USER() AS who")[0]["who"] == "qtcp@127.0.0.1"
    finally:
        conn.close()
