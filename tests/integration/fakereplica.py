"""A scripted fake MariaDB replica on a unix socket, for what a real one will not do on request.

It answers every statement quiesce sends during a freeze and a thaw, and keeps one piece
of state, whether the replica's SQL thread runs, which STOP and START SLAVE SQL_THREAD
change as the test tells it to:
  stop_delay   seconds STOP takes before it answers (the thread is stopped at the end of
               them, whether the client still waits or not)
  start_error  (errno, message) START answers with instead of starting the thread
  open_temp    what Slave_open_temp_tables reports while the SQL thread is stopped (it
               never drops them: a freeze must give up)
Like a real server, a START sent while a STOP is still running waits for that STOP.

Every statement received is appended to .statements, in order, as (connection id, text).
"""

import os
import socket
import struct
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .fakeserver import greeting, packet

VERSION = "10.11.99-MariaDB-fake"


def _lenenc(value: Optional[object]) -> bytes:
    if value is None:
        return b"\xfb"
    data = str(value).encode()
    if len(data) < 251:
        return bytes([len(data)]) + data
    return b"\xfc" + struct.pack("<H", len(data)) + data


def _ok(seq: int) -> bytes:
    return packet(seq, b"\x00\x00\x00" + struct.pack("<HH", 2, 0))


def _eof(seq: int) -> bytes:
    return packet(seq, b"\xfe" + struct.pack("<HH", 0, 2))


def _error(seq: int, errno: int, message: str) -> bytes:
    return packet(seq, b"\xff" + struct.pack("<H", errno) + b"#HY000" + message.encode())


def _result(names: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    out = [packet(1, bytes([len(names)]))]
    seq = 2
    for name in names:
        # catalog, schema, table, org_table, name, org_name; then the fixed part (utf8mb4, VAR_STRING).
        column = b"".join(_lenenc(part) for part in ("def", "", "", "", name, name))
        column += b"\x0c" + struct.pack("<HIBHB", 45, 1024, 0xFD, 0, 0) + b"\0\0"
        out.append(packet(seq, column))
        seq += 1
    out.append(_eof(seq))
    seq += 1
    for row in rows:
        out.append(packet(seq, b"".join(_lenenc(v) for v in row)))
        seq += 1
    out.append(_eof(seq))
    return b"".join(out)


class FakeReplica:
    """Serve on `path` from threads of this process until close()."""

    def __init__(self, path: str, datadir: str):
        self.path = path
        self.datadir = datadir
        self.sql_running = True
        self.stop_delay = 0.0
        self.start_error: Optional[Tuple[int, str]] = None
        self.open_temp = 0
        self.statements: List[Tuple[int, str]] = []
        self.stop_done = threading.Event()
        self._applier = threading.Lock()     # what STOP holds while it runs, and START waits for
        self._ids = iter(range(100, 100000))
        self._sessions: Dict[int, str] = {}
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(32)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def seen(self, prefix: str) -> List[str]:
        return [text for _, text in list(self.statements) if text.upper().startswith(prefix.upper())]

    # ------------------------------------------------------------------ protocol
    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, next(self._ids)), daemon=True).start()

    def _serve(self, conn: socket.socket, conn_id: int) -> None:
        with conn:
            try:
                conn.sendall(greeting())
                self._read(conn)                     # the login: any password will do
                conn.sendall(_ok(2))
                self._sessions[conn_id] = "Sleep"
                while True:
                    payload = self._read(conn)
                    if not payload or payload[0] == 0x01:   # COM_QUIT
                        return
                    if payload[0] != 0x03:                  # COM_PING and the like
                        conn.sendall(_ok(1))
                        continue
                    text = payload[1:].decode("utf-8", "replace").strip()
                    self.statements.append((conn_id, text))
                    self._sessions[conn_id] = text
                    answer = self._answer(conn_id, text)
                    self._sessions[conn_id] = "Sleep"
                    conn.sendall(answer)
            except (EOFError, OSError):
                pass
            finally:
                self._sessions.pop(conn_id, None)

    @staticmethod
    def _read(conn: socket.socket) -> bytes:
        def exactly(count: int) -> bytes:
            data = b""
            while len(data) < count:
                chunk = conn.recv(count - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data
        header = exactly(4)
        return exactly(struct.unpack("<I", header[:3] + b"\0")[0])

    # ------------------------------------------------------------------ statements
    def _answer(self, conn_id: int, text: str) -> bytes:
        upper = " ".join(text.upper().split())
        if upper.startswith("SELECT CONNECTION_ID()"):
            return _result(["id"], [[conn_id]])
        if upper.startswith("SELECT VERSION()"):
            return _result(["version", "comment"], [[VERSION, "fake"]])
        if "INNODB_FLUSH_LOG_AT_TRX_COMMIT AS" in upper:
            d = self.datadir
            return _result(["innodb_flush_log_at_trx_commit", "sync_binlog", "log_bin", "datadir",
                            "log_bin_basename", "log_bin_index", "relay_log_index", "innodb_data_home_dir",
                            "innodb_log_group_home_dir", "innodb_undo_directory", "tmpdir"],
                           [[1, 1, 1, d + "/", d + "/bin", d + "/bin.index", d + "/relay.index", "", "", "",
                             "/tmp"]])
        if "OPEN_TEMP_TABLES" in upper:
            return _result(["Variable_name", "Value"], [["Slave_open_temp_tables", self._temp_tables()]])
        if upper.startswith("SHOW GLOBAL VARIABLES") or upper.startswith("SHOW GLOBAL STATUS"):
            return _result(["Variable_name", "Value"], [])
        if upper.startswith("SELECT @@GLOBAL.SERVER_ID"):
            return _result(["server_id", "hostname"], [[7, "fake-replica"]])
        if "INFORMATION_SCHEMA.PROCESSLIST" in upper:
            return _result(["ID", "USER", "HOST", "DB", "COMMAND", "TIME", "STATE", "INFO", "TIME_MS"],
                           [[i, "root", "localhost", None, "Sleep" if s == "Sleep" else "Query", 0, "",
                             None if s == "Sleep" else s, 0] for i, s in list(self._sessions.items())])
        if upper.startswith("SHOW GRANTS"):
            return _result(["Grants"], [["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`"]])
        if upper.startswith("SHOW ALL SLAVES STATUS"):
            return _result(["Connection_name", "Master_Host", "Master_Port", "Relay_Master_Log_File",
                            "Exec_Master_Log_Pos", "Gtid_Slave_Pos", "Using_Gtid", "Slave_IO_Running",
                            "Slave_SQL_Running"],
                           [["", "127.0.0.1", 3306, "source-bin.000001", 1234, "0-1-42", "Slave_Pos", "Yes",
                             "Yes" if self.sql_running else "No"]])
        if upper.startswith("SELECT @@GLOBAL.SLAVE_PARALLEL_THREADS"):
            return _result(["workers", "preserve_order"], [[4, 1]])
        if upper.startswith("SHOW BINLOG STATUS"):
            return _result(["File", "Position"], [["fake-bin.000001", 4242]])
        if upper.startswith("SELECT @@GLOBAL.GTID_BINLOG_POS"):
            return _result(["gtid"], [["0-7-9"]])
        if upper.startswith("STOP SLAVE") and upper.endswith("SQL_THREAD"):
            with self._applier:
                time.sleep(self.stop_delay)
                self.sql_running = False
            self.stop_done.set()
            return _ok(1)
        if upper.startswith("START SLAVE") and upper.endswith("SQL_THREAD"):
            with self._applier:
                if self.start_error is not None:
                    return _error(1, *self.start_error)
                self.sql_running = True
            return _ok(1)
        return _ok(1)     # SET, BACKUP STAGE, FLUSH, KILL, UNLOCK: nothing to do

    def _temp_tables(self) -> int:
        return 0 if self.sql_running else self.open_temp
