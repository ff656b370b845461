"""The holder's control socket: one short request per connection from thaw or status.

Only root and the holder's own uid are answered. Every request, however slowly its client
sends it, gets an overall time limit that never reaches past the lock's deadline, so no
client can keep the holder from releasing on time.
"""

from __future__ import annotations

import os
import socket
import time

from quiesce.holder import protocol
from quiesce.records import state

# Seconds a client has to send its one request line.
REQUEST_LIMIT = 2.0


class ControlSocket:
    def __init__(self, path: str):
        self.path = path
        self.listener: socket.socket | None = None

    def listen(self) -> None:
        state.remove(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old_umask)
        listener.listen(8)
        self.listener = listener

    def fileno(self) -> int:
        assert self.listener is not None
        return self.listener.fileno()

    def close(self) -> None:
        """Stop answering: a thaw that comes now is refused at once and waits for our result."""
        if self.listener is not None:
            state.remove(self.path)
            self.listener.close()
            self.listener = None

    def accept(self, deadline: float) -> tuple[socket.socket, dict[str, object]] | None:
        """One pending client and its request, or None (ignored: wrong user, garbage, too slow).

        deadline is the lock's (time.monotonic()); the request must arrive before it.
        """
        assert self.listener is not None
        try:
            client, _ = self.listener.accept()
        except OSError:
            return None
        try:
            if protocol.peer_uid(client) not in (0, os.getuid()):
                reply(client, {"error": "permission denied"})
                client.close()
                return None
            limit = min(REQUEST_LIMIT, deadline - time.monotonic())
            line = protocol.recv_line(client, max(0.0, limit)) if limit > 0 else None
            request = protocol.decode(line) if line else None
        except (OSError, ValueError):
            request = None
        if request is None:
            client.close()
            return None
        return client, request


def reply(client: socket.socket, message: dict[str, object]) -> None:
    try:
        client.settimeout(REQUEST_LIMIT)
        client.sendall(protocol.encode(message))
    except OSError:
        pass
