"""Helpers for the production-locking integration tests (lock methods, long queries,
replicas, durability, several instances).

Everything here is bounded in time and cleans up after itself; nothing touches the
machine beyond the test's own servers, files, loop devices and mounts.
"""

import os
import re
import shutil
import tempfile
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence

import pymysql

from . import loopfs
from .load import Writers
from .runner import wait_for

BACKUP_LOCK_WAIT = "Waiting for backup lock"
GLOBAL_READ_LOCK_WAIT = "Waiting for global read lock"     # MySQL's FTWRL
INTERRUPTED = (1317, 1927, 2013)


# --------------------------------------------------------------------------- statements
class Background:
    """SQL statements run one after the other on their own connection, in a thread.

    Records when the last statement began and ended and the error (if any), so a test
    can see whether a statement was held up and by how long.
    """

    def __init__(self, server, statements: Sequence[str], database: Optional[str] = None,
                 read_timeout: float = 120.0):
        self.server = server
        self.statements = list(statements)
        self.conn = server.connect(database=database, read_timeout=read_timeout)
        self.conn_id = self.conn.thread_id()
        self.began: Optional[float] = None
        self.ended: Optional[float] = None
        self.error: Optional[BaseException] = None
        self.results: List[object] = []
        self.current: Optional[str] = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bg-%d" % self.conn_id)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                for statement in self.statements:
                    self.current = statement
                    self.began = time.monotonic()
                    cur.execute(statement)
                    self.results.append(cur.fetchall())
        except BaseException as exc:  # recorded for the test to assert on
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self.done.set()

    @property
    def errno(self) -> Optional[int]:
        args = getattr(self.error, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def elapsed(self) -> float:
        """Seconds the current (or last) statement has been running."""
        if self.began is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.began

    def close(self) -> None:
        """Kill the connection if it still runs, then close it (idempotent)."""
        if not self.done.is_set() and getattr(self.server, "running", True):
            try:
                self.server.sql("KILL %d" % self.conn_id)
            except pymysql.MySQLError:
                pass
        self.done.wait(15)
        try:
            self.conn.close()
        except Exception:
            pass


def processlist_row(server, conn_id: int) -> Optional[Dict[str, object]]:
    rows = server.query("SELECT ID, COMMAND, %s AS TIME_MS, STATE, INFO FROM information_schema.PROCESSLIST "
                        "WHERE ID = %%s" % getattr(server, "TIME_MS", "TIME_MS"), (conn_id,), as_dict=True)
    return rows[0] if rows else None


def wait_running_for(server, conn_id: int, seconds: float, timeout: float = 30.0,
                     command: str = "Query") -> Dict[str, object]:
    """Until the server says connection conn_id has run its statement for `seconds`."""
    def ready():
        row = processlist_row(server, conn_id)
        if row and row["COMMAND"] == command and float(row["TIME_MS"] or 0) >= seconds * 1000.0:
            return row
        return None
    return wait_for(ready, timeout, interval=0.05,
                    what="connection %d to run for %.1f s" % (conn_id, seconds))


def wait_state(server, conn_id: int, state: str, timeout: float = 10.0) -> Dict[str, object]:
    """Until connection conn_id is in processlist STATE `state` (e.g. waiting for a lock)."""
    def ready():
        row = processlist_row(server, conn_id)
        return row if row and (row["STATE"] or "") == state else None
    return wait_for(ready, timeout, interval=0.02,
                    what="connection %d to reach state %r" % (conn_id, state))


def lock_waiters(server) -> List[Dict[str, object]]:
    """Connections waiting for the backup/FTWRL lock right now."""
    return server.query("SELECT ID, STATE, INFO FROM information_schema.PROCESSLIST WHERE STATE IN (%s, %s)",
                        (BACKUP_LOCK_WAIT, GLOBAL_READ_LOCK_WAIT), as_dict=True)


def no_lock_held(server, timeout: float = 1.0) -> bool:
    """Nothing is locked: an InnoDB and a MyISAM commit both go through within `timeout`."""
    return server.try_write(timeout) is not None


# --------------------------------------------------------------------------- writers
class ProbeWriters(Writers):
    """Writers whose tables are created once, before a GTID baseline is read.

    Writers.start() re-runs CREATE DATABASE IF NOT EXISTS, which MariaDB writes to the
    binlog again: create first, read the baseline, then start without DDL.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._created = False

    def create_tables(self) -> None:
        if not self._created:
            super().create_tables()
            self._created = True


def table_blocked_seconds(load: Writers, table: str, start: float, end: float) -> float:
    """Longest time one commit on `table` was in flight within [start, end]."""
    now = time.monotonic()
    commits, _failures, in_flight = load.snapshot()
    spans = [(c.sent, c.acked) for c in commits if c.table == table and c.acked >= start and c.sent <= end]
    spans += [(sent, now) for (t, _s, sent) in in_flight.values() if t == table and sent <= end]
    return max((min(b, end) - max(a, start) for a, b in spans), default=0.0)


# --------------------------------------------------------------------------- binlog / gtid
def gtid_seq(gtid: Optional[str], domain: int = 0) -> int:
    """Sequence number of `domain` in a MariaDB GTID position such as '0-1-42,1-2-7'; for a
    MySQL GTID set of one server ('uuid:1-42'), its last transaction number."""
    for part in (gtid or "").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            return int(part.rsplit(":", 1)[1].rsplit("-", 1)[-1])
        d, _server, seq = part.split("-")
        if int(d) == domain:
            return int(seq)
    return 0


def check_tables(server, names: Iterable[str]) -> Dict[str, List[tuple]]:
    """CHECK TABLE per table: {name: [(msg_type, msg_text), ...]} as the server reports."""
    out = {}
    for name in names:
        rows = server.query("CHECK TABLE %s" % name)
        out[name] = [(r[2], r[3]) for r in rows]
    return out


def unclean(check: Dict[str, List[tuple]]) -> Dict[str, List[tuple]]:
    """Tables whose CHECK TABLE said anything but a plain 'status OK'."""
    return {name: rows for name, rows in check.items() if rows != [("status", "OK")]}


def innodb_lsns(server) -> Dict[str, int]:
    text = server.query("SHOW ENGINE INNODB STATUS")[0][2]
    out = {}
    for key, pattern in (("lsn", r"Log sequence number\s+(\d+)"), ("flushed", r"Log flushed up to\s+(\d+)")):
        match = re.search(pattern, text)
        if match:
            out[key] = int(match.group(1))
    return out


# --------------------------------------------------------------------------- replicas
def sql_thread_running(replica) -> Optional[str]:
    status = replica.replica_status() or {}
    return status.get("Slave_SQL_Running")


def wait_sql_thread(replica, want: str, timeout: float = 10.0) -> None:
    wait_for(lambda: sql_thread_running(replica) == want, timeout, interval=0.05,
             what="replica SQL thread to be %s" % want)


# --------------------------------------------------------------------------- several instances
def instance_section(name: str, server, position_file: str, user: Optional[str] = None,
                     password: Optional[str] = None, socket: Optional[str] = None) -> str:
    lines = ["[instance:%s]" % name, "socket = %s" % (socket or server.socket),
             "position-file = %s" % position_file]
    if user:
        lines.append("user = %s" % user)
    if password is not None:
        lines.append("password = %s" % password)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- power cut
_sh = loopfs.sh


def why_no_power_cut() -> Optional[str]:
    return loopfs.unavailable_reason()


class PowerCutDisk:
    """An ext4 filesystem on a loop device whose writes can be cut off at an instant.

    The kernel here has no device-mapper (no dm-flakey, dm-snapshot or dm-log-writes), so
    the switch is the immutable flag on the loop device's backing file: from
    `cut_power()` on, every write the loop device passes down fails (ext4 refuses writes
    to an immutable file), exactly like dm-flakey's error_writes. What the filesystem had
    handed to the device before the cut is in the image; what was still only in the page
    cache (unsynced data) is lost when the server is killed and the filesystem unmounted.
    `remount()` attaches the image again: ext4 replays its journal, as after a power cut.
    """

    def __init__(self, size_mb: int = 512):
        self.base = tempfile.mkdtemp(prefix="qpc-", dir="/tmp")
        self.image = os.path.join(self.base, "disk.img")
        self.mnt = os.path.join(self.base, "mnt")
        os.makedirs(self.mnt)
        self.dev: Optional[str] = None
        self.mounted = False
        self.cut = False
        loopfs.make_image(self.image, size_mb, eager=True)
        self._attach()

    def _attach(self) -> None:
        self.dev = loopfs.attach(self.image)
        # A long journal commit interval: only an explicit sync puts data on the device.
        _sh("mount", "-t", "ext4", "-o", "commit=300", self.dev, self.mnt)
        self.mounted = True
        if not loopfs.is_mount_of(self.mnt, self.dev):
            raise AssertionError("%s is not mounted from %s" % (self.mnt, self.dev))

    def sync(self) -> None:
        """Make everything written so far durable (the test's own baseline)."""
        _sh("sync", "-f", self.mnt)

    def cut_power(self) -> float:
        """From now on the device accepts no write. Returns the monotonic time of the cut."""
        _sh("chattr", "+i", self.image)
        self.cut = True
        return time.monotonic()

    def _detach(self) -> None:
        if self.mounted:
            loopfs.unmount(self.mnt)
            self.mounted = False
        if self.dev:
            loopfs.detach(self.dev)
            self.dev = None
        if self.cut:
            _sh("chattr", "-i", self.image, check=False)
            self.cut = False

    def remount(self) -> None:
        """Power back on: the image as the device held it at the cut, journal replayed."""
        self._detach()
        self._attach()

    def close(self) -> None:
        try:
            self._detach()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
