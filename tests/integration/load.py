"""Concurrent writers for the integration tests and the benchmark.

Each writer thread has its own PyMySQL connection (autocommit) and commits rows to one
table as fast as it can (or at a set rate), recording for every commit when the statement
was sent and when the server acknowledged it (time.monotonic()). The tests compare these
times with when freeze returned and when thaw was called, and compare the rows a copy holds
with the rows the writers were told were committed.

InnoDB writers commit `rows_per_txn` rows per transaction (all or nothing, so a snapshot
that cut a transaction in half shows up as an odd row count); MyISAM and Aria writers
insert one row per statement.

Every loop is bounded: a writer stops by itself after `max_seconds` or `max_commits`.
"""

import collections
import threading
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple


ENGINES = ("InnoDB", "MyISAM", "Aria")


class Commit(NamedTuple):
    table: str
    writer: int
    seq: int
    sent: float       # monotonic time the INSERT (or BEGIN) was sent
    acked: float      # monotonic time the server acknowledged the commit


class Failure(NamedTuple):
    table: str
    writer: int
    seq: int
    sent: float
    at: float
    error: str


def table_name(engine: str) -> str:
    return "t_" + engine.lower()


class Writers:
    """Threads that write to one table per engine while a test freezes and thaws.

    >>> with Writers(server, engines=("InnoDB", "MyISAM")) as load:
    ...     load.wait_for_progress(10)
    ...     ...                                 # freeze / thaw here
    >>> load.commits_acked_between(t0, t1)
    """

    def __init__(self, server, database: str = "load", engines: Sequence[str] = ("InnoDB", "MyISAM"),
                 threads_per_engine: int = 1, rows_per_txn: int = 2, interval: float = 0.0,
                 max_seconds: float = 120.0, max_commits: int = 1_000_000,
                 read_timeout: float = 60.0, stop_on_error: bool = True):
        self.server = server
        self.database = database
        self.engines = tuple(engines)
        self.threads_per_engine = threads_per_engine
        self.rows_per_txn = max(1, rows_per_txn)
        self.interval = interval
        self.max_seconds = max_seconds
        self.max_commits = max_commits
        self.read_timeout = read_timeout
        self.stop_on_error = stop_on_error
        self.commits: List[Commit] = []
        self.failures: List[Failure] = []
        self.in_flight: Dict[int, Tuple[str, int, float]] = {}   # writer -> (table, seq, sent)
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._conn_ids: Dict[int, int] = {}
        self._counts: Dict[int, int] = collections.Counter()
        self._writer_table: Dict[int, str] = {}
        self.started_at: Optional[float] = None

    # ------------------------------------------------------------------ setup
    def create_tables(self) -> None:
        """DDL: run before anything is locked."""
        self.server.sql("CREATE DATABASE IF NOT EXISTS `%s`" % self.database)
        for engine in self.engines:
            self.server.sql(
                "CREATE TABLE IF NOT EXISTS `%s`.`%s` (writer INT NOT NULL, seq INT NOT NULL, "
                "part TINYINT NOT NULL, payload VARCHAR(64) NOT NULL, at DATETIME(6) NOT NULL, "
                "PRIMARY KEY (writer, seq, part)) ENGINE=%s"
                % (self.database, table_name(engine), engine))

    @property
    def tables(self) -> List[str]:
        return [table_name(e) for e in self.engines]

    # ------------------------------------------------------------------ running
    def start(self) -> "Writers":
        self.create_tables()
        self.started_at = time.monotonic()
        # Writer numbers continue after those already in the tables, so that several loads
        # can write to one database one after the other.
        writer = max([int(self.server.value("SELECT COALESCE(MAX(writer), 0) FROM `%s`.`%s`"
                                            % (self.database, t)) or 0) for t in self.tables] + [0])
        for engine in self.engines:
            for _ in range(self.threads_per_engine):
                writer += 1
                conn = self.server.connect(database=self.database, read_timeout=self.read_timeout)
                self._conn_ids[writer] = conn.thread_id()
                self._writer_table[writer] = table_name(engine)
                thread = threading.Thread(target=self._run, args=(writer, engine, conn),
                                          name="writer-%d-%s" % (writer, engine), daemon=True)
                self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, writer: int, engine: str, conn) -> None:
        table = table_name(engine)
        transactional = engine.lower() == "innodb"
        rows = self.rows_per_txn if transactional else 1
        deadline = self.started_at + self.max_seconds
        seq = 0
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set() and time.monotonic() < deadline and seq < self.max_commits:
                    seq += 1
                    values = ", ".join("(%d, %d, %d, 'w%d-s%d', NOW(6))" % (writer, seq, part, writer, seq)
                                       for part in range(rows))
                    sent = time.monotonic()
                    with self._lock:
                        self.in_flight[writer] = (table, seq, sent)
                    try:
                        if transactional and rows > 1:
                            cur.execute("BEGIN")
                            cur.execute("INSERT INTO `%s` (writer, seq, part, payload, at) VALUES %s"
                                        % (table, values))
                            cur.execute("COMMIT")
                        else:
                            cur.execute("INSERT INTO `%s` (writer, seq, part, payload, at) VALUES %s"
                                        % (table, values))
                    except Exception as exc:  # connection lost, killed, server gone
                        now = time.monotonic()
                        with self._lock:
                            self.in_flight.pop(writer, None)
                            self.failures.append(Failure(table, writer, seq, sent, now, repr(exc)))
                            self._progress.notify_all()
                        if self.stop_on_error:
                            return
                        if self._stop.wait(0.1):
                            return
                        try:
                            conn.close()
                        except Exception:
                            pass
                        try:
                            conn = self.server.connect(database=self.database, read_timeout=self.read_timeout)
                            self._conn_ids[writer] = conn.thread_id()
                            cur = conn.cursor()
                        except Exception:
                            pass
                        continue
                    acked = time.monotonic()
                    with self._lock:
                        self.in_flight.pop(writer, None)
                        self.commits.append(Commit(table, writer, seq, sent, acked))
                        self._counts[writer] += 1
                        self._progress.notify_all()
                    if self.interval:
                        self._stop.wait(self.interval)
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def wait_for_progress(self, commits: int = 10, timeout: float = 30.0) -> None:
        """Block until every writer has committed `commits` more rows than when called."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = {w: self._counts[w] + commits for w in self._writer_table}
            while True:
                behind = [w for w, n in target.items() if self._counts[w] < n]
                if not behind:
                    return
                failed = {f.writer for f in self.failures} & set(behind)
                if failed and self.stop_on_error:
                    raise AssertionError("writer(s) %s failed: %s" % (sorted(failed), self.failures[-1].error))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("writers %s made no progress for %.0f s (tables %s)"
                                         % (behind, timeout, sorted({self._writer_table[w] for w in behind})))
                self._progress.wait(remaining)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads; a writer still blocked after `timeout` has its connection killed."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t for t in self._threads if t.is_alive()]
        if stuck and getattr(self.server, "running", True):
            for writer, conn_id in self._conn_ids.items():
                try:
                    self.server.sql("KILL %d" % conn_id)
                except Exception:
                    pass
            for thread in stuck:
                thread.join(10)

    def __enter__(self) -> "Writers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ analysis
    def snapshot(self) -> Tuple[List[Commit], List[Failure], Dict[int, Tuple[str, int, float]]]:
        with self._lock:
            return list(self.commits), list(self.failures), dict(self.in_flight)

    def commits_acked_between(self, start: float, end: float) -> List[Commit]:
        with self._lock:
            return [c for c in self.commits if start < c.acked < end]

    def commits_acked_before(self, when: float) -> List[Commit]:
        with self._lock:
            return [c for c in self.commits if c.acked < when]

    def commits_sent_after(self, when: float) -> List[Commit]:
        with self._lock:
            return [c for c in self.commits if c.sent > when]

    def longest_wait(self, start: float, end: float, now: Optional[float] = None) -> float:
        """Longest time any single commit took among those in flight at some point in
        [start, end] (still-blocked ones count up to `now`)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            spans = [(c.sent, c.acked) for c in self.commits if c.acked >= start and c.sent <= end]
            spans += [(sent, now) for (_t, _s, sent) in self.in_flight.values() if sent <= end]
        return max((b - a for a, b in spans), default=0.0)

    def blocked_through(self, start: float, end: float) -> Set[str]:
        """Tables that had a commit in flight during the whole of [start, end]."""
        with self._lock:
            spans = [(c.table, c.sent, c.acked) for c in self.commits]
            spans += [(t, sent, float("inf")) for (t, _s, sent) in self.in_flight.values()]
        return {table for table, sent, acked in spans if sent <= start and acked >= end}

    def acked_keys(self, before: Optional[float] = None) -> Dict[str, Set[Tuple[int, int]]]:
        """(writer, seq) of every commit acknowledged (before `before`), per table."""
        out: Dict[str, Set[Tuple[int, int]]] = {t: set() for t in self.tables}
        with self._lock:
            for c in self.commits:
                if before is None or c.acked < before:
                    out[c.table].add((c.writer, c.seq))
        return out

    def counts(self) -> Dict[str, int]:
        out = collections.Counter()
        with self._lock:
            for c in self.commits:
                out[c.table] += 1
        return dict(out)


def table_rows(server, database: str, tables: Iterable[str]) -> Dict[str, Dict[Tuple[int, int], int]]:
    """{table: {(writer, seq): number of parts}} as a server holds them now."""
    out: Dict[str, Dict[Tuple[int, int], int]] = {}
    for table in tables:
        rows = server.query("SELECT writer, seq, COUNT(*) FROM `%s`.`%s` GROUP BY writer, seq"
                            % (database, table))
        out[table] = {(int(w), int(s)): int(n) for w, s, n in rows}
    return out
