"""A fake MySQL server on a unix socket, for what a real server will not do on request.

Modes:
  silent     accept and never send a byte
  dribble    send a valid greeting one byte per second
  switch     greet (mysql_native_password), answer the client's login with an auth switch
             to --plugin (mysql_clear_password or dialog), then an access-denied error

Everything a client sends is appended to --record (- for standard output, after the
"ready" line), so a test can look for the password.
Run as a script (`python3 fakeserver.py --socket PATH|--port N --mode MODE --record FILE`)
to serve as another user under setpriv; prints "ready" once it listens (on 127.0.0.1 with
--port). Serves until killed.
"""

import argparse
import os
import pwd
import select
import socket
import struct
import subprocess
import sys
import threading
import time

# PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA, LONG_PASSWORD,
# TRANSACTIONS, MULTI_RESULTS: what every client since 5.x expects. No SSL.
CAPABILITIES = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x20000 | 0x80000 | 0x200000


def packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def greeting() -> bytes:
    salt = b"abcdefgh" + b"ijklmnopqrst"
    payload = (b"\x0a" + b"5.5.5-10.11.99-MariaDB-fake\0" + struct.pack("<I", 7) + salt[:8] + b"\0"
               + struct.pack("<H", CAPABILITIES & 0xFFFF) + bytes([45]) + struct.pack("<H", 2)
               + struct.pack("<H", CAPABILITIES >> 16) + bytes([21]) + b"\0" * 10
               + salt[8:] + b"\0" + b"mysql_native_password\0")
    return packet(0, payload)


def auth_switch(plugin: str) -> bytes:
    data = b"\x04Password: " if plugin == "dialog" else b""
    return packet(2, b"\xfe" + plugin.encode() + b"\0" + data)


def access_denied(seq: int) -> bytes:
    return packet(seq, b"\xff" + struct.pack("<H", 1045) + b"#28000" + b"Access denied (fake server)")


def _read_packet(conn: socket.socket, record) -> bytes:
    def exactly(count):
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise EOFError
            record.write(chunk)
            record.flush()
            data += chunk
        return data
    header = exactly(4)
    return exactly(struct.unpack("<I", header[:3] + b"\0")[0])


def _serve_one(conn: socket.socket, mode: str, plugin: str, record_path: str) -> None:
    record_file = os.fdopen(os.dup(1), "ab") if record_path == "-" else open(record_path, "ab")
    with conn, record_file as record:
        try:
            if mode == "silent":
                while conn.recv(4096):
                    pass
                return
            if mode == "dribble":
                for byte in greeting():
                    conn.sendall(bytes([byte]))
                    time.sleep(1.0)
                return
            conn.sendall(greeting())
            _read_packet(conn, record)          # the login, with the scrambled password
            conn.sendall(auth_switch(plugin))
            _read_packet(conn, record)          # what the client answers the switch with
            conn.sendall(access_denied(4))
            while conn.recv(4096):
                pass
        except (EOFError, OSError):
            pass


def listen(address) -> socket.socket:
    """address: a unix socket path, or a (host, port) pair."""
    server = socket.socket(socket.AF_UNIX if isinstance(address, str) else socket.AF_INET, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(16)
    return server


def serve(server: socket.socket, mode: str, record_path: str, plugin: str = "mysql_clear_password") -> None:
    """Serve each connection on its own thread until the listening socket is closed."""
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=_serve_one, args=(conn, mode, plugin, record_path), daemon=True).start()


def start_thread(path: str, mode: str, record_path: str, plugin: str = "mysql_clear_password") -> socket.socket:
    """Serve from a thread of this process; close the returned socket to stop."""
    server = listen(path)
    threading.Thread(target=serve, args=(server, mode, record_path, plugin), daemon=True).start()
    return server


def _readable_copy() -> str:
    """This file where any user can read it (the checkout may sit in root's 0700 home)."""
    copy = "/tmp/quiesce-fakeserver-%d.py" % os.getpid()
    with open(os.path.abspath(__file__), "rb") as source, open(copy + ".new", "wb") as target:
        target.write(source.read())
    os.chmod(copy + ".new", 0o644)
    os.replace(copy + ".new", copy)
    return copy


def start_as(user: str, *args: str) -> subprocess.Popen:
    """Run this file as `user` (setpriv) with args; returns once it listens. Kill it when done."""
    account = pwd.getpwnam(user)
    server = subprocess.Popen(
        ["setpriv", "--reuid=%d" % account.pw_uid, "--regid=%d" % account.pw_gid, "--clear-groups",
         sys.executable, _readable_copy(), *args], stdout=subprocess.PIPE, cwd="/")
    ready, _, _ = select.select([server.stdout], [], [], 10.0)
    if not ready or server.stdout.readline().strip() != b"ready":
        server.kill()
        server.wait()
        raise RuntimeError("the fake server did not start as %s" % user)
    return server


def main() -> int:
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket")
    where.add_argument("--port", type=int)
    parser.add_argument("--mode", choices=("silent", "dribble", "switch"), required=True)
    parser.add_argument("--plugin", default="mysql_clear_password")
    parser.add_argument("--record", default=os.devnull)
    args = parser.parse_args()
    if args.record != "-":
        open(args.record, "ab").close()
    server = listen(args.socket or ("127.0.0.1", args.port))
    print("ready", flush=True)
    serve(server, args.mode, args.record, args.plugin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
