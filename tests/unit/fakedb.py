"""A scripted stand-in for db.Connection, for the state machines of locking and holder.

Only for logic that a real server cannot be made to stage on request (a START that fails
after a partial STOP, a SET GLOBAL refused, a watchdog racing its victim); anything about
how MySQL or MariaDB behave is tested against real servers in tests/integration.

A FakeConnection answers each statement from its rules: the first rule whose pattern
(a regular expression, case-insensitive, matched at the start) fits the statement gives
rows to return, an exception to raise, or a callable that returns either. Every
statement is recorded in .statements, in order, and in the shared .log of its FakeServer.
"""

from __future__ import annotations

import re
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from quiesce.server import db

Answer = Union[List[Dict[str, Any]], BaseException, Callable[[str], Any], None]


class FakeServer:
    """Rules shared by every connection it hands out, and one log of what they were sent."""

    def __init__(self, rules: Sequence[Tuple[str, Answer]] = ()):
        self.rules: List[Tuple[str, Answer]] = list(rules)
        self.log: List[Tuple[int, str]] = []
        self.connections: List["FakeConnection"] = []
        self._next_id = 100
        self._mutex = threading.Lock()

    def on(self, pattern: str, answer: Answer) -> "FakeServer":
        """Add a rule in front of the others (later calls win)."""
        self.rules.insert(0, (pattern, answer))
        return self

    def connect(self, *_args: Any, **_kwargs: Any) -> "FakeConnection":
        with self._mutex:
            self._next_id += 1
            conn = FakeConnection(self, self._next_id)
            self.connections.append(conn)
        return conn

    def statements(self) -> List[str]:
        return [sql for _id, sql in self.log]

    def answer(self, conn: "FakeConnection", sql: str) -> List[Dict[str, Any]]:
        with self._mutex:
            self.log.append((conn.thread_id, sql))
        for pattern, answer in self.rules:
            if re.match(pattern, sql, re.IGNORECASE):
                if callable(answer) and not isinstance(answer, BaseException):
                    answer = answer(sql)
                if isinstance(answer, BaseException):
                    raise answer
                return [dict(row) for row in (answer or [])]
        return []


def error(errno: Optional[int], message: str = "scripted error") -> db.DbError:
    return db.DbError(errno, message)


class FakeConnection:
    driver = "fake"

    def __init__(self, server: FakeServer, thread_id: int):
        self.server = server
        self.thread_id = thread_id
        self.statements: List[str] = []
        self.timeouts: List[Optional[float]] = []
        self.closed = False
        self.abandoned = False
        # A real descriptor, so select() and the holder's selector work on it: the far end
        # plays the server, and closing it is the server dropping the session.
        self.server_end, self._client_end = socket.socketpair()

    def fileno(self) -> int:
        return self._client_end.fileno()

    def drop(self) -> None:
        """The server closes the session (KILL, restart, wait_timeout)."""
        self.server_end.close()

    def set_timeout(self, seconds: Optional[float]) -> None:
        self.timeouts.append(seconds)

    def query(self, sql: str) -> List[Dict[str, Any]]:
        if self.closed:
            raise db.DbError(db.CR_SERVER_GONE, "the connection to the server is closed")
        self.statements.append(sql)
        return self.server.answer(self, sql)

    def execute(self, sql: str) -> None:
        self.query(sql)

    def abandon(self) -> None:
        self.abandoned = True
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._client_end.close()
            try:
                self.server_end.close()
            except OSError:
                pass
