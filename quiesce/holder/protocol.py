"""The few messages between the hook commands and the holder.

Everything is one JSON object per line. The freeze command hands the settings to the
holder over a private pipe (never argv or environment: they hold the password) and
reads one readiness line back; thaw and status talk over the holder's unix socket,
which answers only root or the holder's own uid.
"""

from __future__ import annotations

from collections.abc import Callable

import json
import os
import select
import socket
import struct
import time

from quiesce.base.errors import StateError

MAX_MESSAGE = 1 << 20

THAW = "thaw"
STATUS = "status"
# A second freeze while the lock is held (two agents in one backup): the holder extends
# its deadline and the freeze succeeds without a second lock.
JOIN = "join"


def encode(message: dict[str, object]) -> bytes:
    return (json.dumps(message, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")


def decode(line: bytes) -> dict[str, object]:
    value = json.loads(line.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("message is not a JSON object")
    return value


def _read_line(read_chunk: Callable[[], bytes]) -> bytes | None:
    """Bytes up to the first newline; None if the peer closed before sending one."""
    data = b""
    while b"\n" not in data:
        chunk = read_chunk()
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("message too long")
    return data.split(b"\n", 1)[0]


def read_line_fd(fd: int, timeout: float) -> bytes | None:
    """One line from a pipe within timeout (TimeoutError otherwise)."""
    deadline = time.monotonic() + timeout

    def chunk() -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        return os.read(fd, 65536)

    return _read_line(chunk)


def write_all_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def recv_line(conn: socket.socket, timeout: float) -> bytes | None:
    """One line within timeout overall: a peer that sends a byte at a time cannot stretch it."""
    deadline = time.monotonic() + timeout

    def chunk() -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        conn.settimeout(remaining)
        return conn.recv(65536)

    return _read_line(chunk)


def request(socket_path: str, message: dict[str, object], timeout: float) -> dict[str, object]:
    """Send one request to the holder and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(encode(message))
        line = recv_line(conn, timeout)
    if line is None:
        raise StateError("the holder closed the connection without answering")
    return decode(line)


def describe_timings(timings: dict[str, object]) -> str:
    """The holder's timings_ms for a log line: where the time before and under the lock went."""
    def ms(key: str) -> str:
        value = timings.get(key)
        return "%.1f" % value if isinstance(value, (int, float)) else "?"
    return ("drain %s ms before the lock; lock taken in %s ms; %s ms under the lock before freeze returned "
            "(coordinates %s, flush %s, sync %s)" % (ms("drain"), ms("acquire"), ms("under_lock"),
                                                      ms("coordinates"), ms("flush"), ms("sync")))
