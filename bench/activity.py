"""Load the benchmark needs and tests/integration/load.py does not give: readers, DML inside
long open transactions, and one long-running statement or idle table lock.

Every thread has its own PyMySQL connection and records the monotonic time each
statement completed; nothing here decides anything, the benchmark reads the stamps.
"""

import threading
import time
from typing import Dict, List, Optional

import pymysql

READ_ROWS = 1000


class Mix:
    """Readers and writers of several kinds running at once, each as fast as it can.

    kinds:
      read-innodb, read-myisam   point SELECTs by primary key
      txn-dml                    INSERTs inside an open InnoDB transaction; the transaction
                                 commits every `txn_size` statements, but only while
                                 `commits_allowed` is set -- so statements go on inside a
                                 transaction that stays open across a freeze
      commit-innodb              autocommit single-row INSERTs (each one a commit)
      write-myisam               autocommit single-row INSERTs into MyISAM
    """

    KINDS = ("read-innodb", "read-myisam", "txn-dml", "commit-innodb", "write-myisam")

    def __init__(self, server, database: str = "mix", threads: Optional[Dict[str, int]] = None,
                 txn_size: int = 200, read_timeout: float = 120.0, max_seconds: float = 600.0):
        self.server = server
        self.database = database
        self.threads_per_kind = threads or {k: 1 for k in self.KINDS}
        self.txn_size = txn_size
        self.read_timeout = read_timeout
        self.max_seconds = max_seconds
        self.done: Dict[str, List[float]] = {k: [] for k in self.KINDS}
        self.errors: List[str] = []
        self.commits_allowed = threading.Event()
        self.commits_allowed.set()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._conn_ids: List[int] = []

    def create_tables(self) -> None:
        db = self.database
        self.server.sql("CREATE DATABASE IF NOT EXISTS `%s`" % db)
        for engine in ("InnoDB", "MyISAM"):
            table = "r_" + engine.lower()
            self.server.sql("CREATE TABLE IF NOT EXISTS `%s`.`%s` (id INT PRIMARY KEY, v VARCHAR(32)) ENGINE=%s"
                            % (db, table, engine))
            if not self.server.value("SELECT COUNT(*) FROM `%s`.`%s`" % (db, table)):
                values = ", ".join("(%d, 'row %d')" % (i, i) for i in range(1, READ_ROWS + 1))
                self.server.sql("INSERT INTO `%s`.`%s` VALUES %s" % (db, table, values))
            w = "w_" + engine.lower()
            self.server.sql("CREATE TABLE IF NOT EXISTS `%s`.`%s` (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                            "v VARCHAR(32)) ENGINE=%s" % (db, w, engine))

    def start(self) -> "Mix":
        self.create_tables()
        for kind in self.KINDS:
            for n in range(self.threads_per_kind.get(kind, 0)):
                conn = self.server.connect(database=self.database, read_timeout=self.read_timeout)
                self._conn_ids.append(conn.thread_id())
                thread = threading.Thread(target=self._run, args=(kind, conn), daemon=True,
                                          name="mix-%s-%d" % (kind, n))
                self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, kind: str, conn) -> None:
        deadline = time.monotonic() + self.max_seconds
        stamps = self.done[kind]
        i = 0
        in_txn = 0
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    i += 1
                    if kind.startswith("read-"):
                        cur.execute("SELECT v FROM r_%s WHERE id = %d" % (kind[5:], i % READ_ROWS + 1))
                        cur.fetchall()
                    elif kind == "txn-dml":
                        if in_txn == 0:
                            cur.execute("BEGIN")
                        cur.execute("INSERT INTO w_innodb (v) VALUES ('txn')")
                        in_txn += 1
                        if in_txn >= self.txn_size and self.commits_allowed.is_set():
                            cur.execute("COMMIT")
                            in_txn = 0
                    elif kind == "commit-innodb":
                        cur.execute("INSERT INTO w_innodb (v) VALUES ('autocommit')")
                    else:
                        cur.execute("INSERT INTO w_myisam (v) VALUES ('autocommit')")
                    stamps.append(time.monotonic())
                if in_txn:
                    cur.execute("COMMIT")
        except Exception as exc:  # killed at stop, or the server went away
            if not self._stop.is_set():
                self.errors.append("%s: %r" % (kind, exc))
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def count(self, kind: str, start: float, end: float) -> int:
        return sum(1 for t in self.done[kind] if start < t <= end)

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self.commits_allowed.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads) and self.server.running:
            for conn_id in self._conn_ids:
                try:
                    self.server.sql("KILL %d" % conn_id)
                except Exception:
                    pass
            for thread in self._threads:
                thread.join(5)


class LongStatement:
    """One session busy with a long statement (or holding LOCK TABLES while idle).

    ls = LongStatement(server, ["UPDATE ..."]); ls.start(); ...; ls.end()
    `idle_after` statements are run first and the session then sits idle (Command
    'Sleep' in the process list) until end(): that is how an application holding
    LOCK TABLES looks to the server.
    """

    def __init__(self, server, statements, idle: bool = False, database: Optional[str] = None,
                 release: Optional[str] = None):
        self.server = server
        self.statements = list(statements)
        self.idle = idle
        self.release = release
        self.database = database
        self.error: Optional[str] = None
        self.finished_at: Optional[float] = None
        self._conn = None
        self._ended = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "LongStatement":
        self._conn = self.server.connect(database=self.database, read_timeout=300)
        self._thread = threading.Thread(target=self._run, daemon=True, name="long-statement")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with self._conn.cursor() as cur:
                for statement in self.statements:
                    cur.execute(statement)
                    cur.fetchall()
                if self.idle:
                    self._ended.wait(300)
                    if self.release:
                        cur.execute(self.release)
        except pymysql.MySQLError as exc:
            if not self._ended.is_set():
                self.error = repr(exc)
        finally:
            self.finished_at = time.monotonic()

    def end(self) -> None:
        """Interrupt the statement if it still runs (KILL QUERY), release an idle lock, wait."""
        self._ended.set()
        if self._thread is None:
            return
        if not self.idle and self._thread.is_alive():
            try:
                self.server.sql("KILL QUERY %d" % self._conn.thread_id())
            except Exception:
                pass
        self._thread.join(30)
        try:
            self._conn.close()
        except Exception:
            pass
