"""Taking and releasing the snapshot lock on one server.

One strategy per lock method; acquisition is bounded by the session's lock_wait_timeout
and by a watchdog that KILLs the pending lock statement from a second connection, so no
writer waits behind it longer than acquire-timeout.
"""

import dataclasses
import logging
import math
import os
import select
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from quiesce.base import budget
from quiesce.base.config import Settings, Target
from quiesce.base.errors import ConnectError, LockTimeout, PrivilegeError, QuiesceError, ServerNotRunning, StateError
from quiesce.records import changedglobals, state
from quiesce.server import db, durable, serverinfo, serverview
from quiesce.server.serverinfo import BACKUP_STAGE, FTWRL, Server


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    prepare: Sequence[str]
    lock: Sequence[str]
    unlock: str
    privileges: str


STRATEGIES = {
    # Flushing first, without the lock, leaves the locked flush little to do.
    FTWRL: Strategy(FTWRL, ("FLUSH NO_WRITE_TO_BINLOG TABLES",), ("FLUSH TABLES WITH READ LOCK",),
                    "UNLOCK TABLES", "RELOAD"),
    # Reads and uncommitted DML go on under BLOCK_COMMIT; only commits and DDL wait.
    BACKUP_STAGE: Strategy(BACKUP_STAGE, (), ("BACKUP STAGE START", "BACKUP STAGE FLUSH",
                                               "BACKUP STAGE BLOCK_DDL", "BACKUP STAGE BLOCK_COMMIT"),
                           "BACKUP STAGE END", "RELOAD"),
}


@dataclasses.dataclass
class Locked:
    """A server whose lock this process holds, with what freeze recorded about it."""

    target: Target
    conn: db.Connection
    server: Server
    strategy: Strategy
    position: Dict[str, Any]
    stopped_channels: List[str]
    wait_ms: float
    locked_monotonic: float
    warnings: List[str] = dataclasses.field(default_factory=list)
    lost: Optional[str] = None
    # drain (before the lock), acquire, then under the lock: coordinates, flush, sync, under_lock.
    timings_ms: Dict[str, float] = dataclasses.field(default_factory=dict)
    # Set by release(): the SQL threads it started again over this session, or why it could not.
    restarted: List[str] = dataclasses.field(default_factory=list)
    restart_problem: Optional[str] = None


def connect(target: Target, settings: Settings) -> db.Connection:
    try:
        return db.connect(target, settings.driver, settings.connect_timeout,
                          getattr(settings, "allow_cleartext_auth", False))
    except db.DbError as exc:
        error = _connect_error(target, exc)
        if target.name != "default":
            error = type(error)("instance %s: %s" % (target.name, error))
        raise error from None


def escapes_on(conn: db.Connection) -> None:
    """Backslash escapes on in this session: the replica statements quote channel names with
    serverinfo.sql_string, which doubles a backslash; a server whose sql_mode has
    NO_BACKSLASH_ESCAPES would read that doubled. Only this session's mode changes."""
    rows = conn.query(serverinfo.SQL_MODE_STATEMENT)
    mode = rows[0]["sql_mode"] if rows else ""
    if not serverinfo.backslash_escapes(mode):
        kept = ",".join(m for m in str(mode).split(",") if m.strip().upper() != "NO_BACKSLASH_ESCAPES")
        conn.execute("SET SESSION sql_mode = %s" % serverinfo.sql_string(kept, backslash_escapes=False))


def identify_server(conn: db.Connection) -> Server:
    row = conn.query("SELECT VERSION() AS version, @@version_comment AS comment")[0]
    return serverinfo.identify(str(row["version"]), str(row["comment"] or ""))


def _connect_error(target: Target, exc: db.DbError) -> QuiesceError:
    if exc.errno in db.AUTH_ERRORS:
        return ConnectError("server at %s refused user %r: %s; fix: check user/password in the config file "
                            "or defaults-file" % (target.address, target.user, exc.message))
    if target.is_local and not target.host and not os.path.exists(str(target.socket)):
        if not db.server_process_running():
            return ServerNotRunning("no MySQL/MariaDB server is running (socket %s absent, no mysqld or "
                                    "mariadbd process)" % target.socket)
        return ConnectError("socket %s does not exist but a server process is running; fix: set socket "
                            "in the config file to the server's socket" % target.socket)
    if exc.errno in db.UNREACHABLE_ERRORS and target.is_local and not db.server_process_running():
        return ServerNotRunning("no MySQL/MariaDB server is running (nothing answers at %s)" % target.address)
    return ConnectError("cannot connect to %s: %s; fix: check that the server runs and socket/host/port "
                        "in the config file" % (target.address, exc.message))


def _privilege_error(target: Target, exc: db.DbError, privilege: str) -> PrivilegeError:
    return PrivilegeError("user %r lacks a privilege on %s: %s; fix: GRANT %s ON *.* TO the account"
                          % (target.user, target.address, exc.message, privilege))


class Watchdog:
    """KILL QUERY the pending lock statement once acquire-timeout has passed."""

    def __init__(self, killer: db.Connection, victim_id: int, timeout: float):
        self._killer = killer
        self._victim = victim_id
        self._timeout = timeout
        self._done = threading.Event()
        self._mutex = threading.Lock()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="quiesce-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def _run(self) -> None:
        if self._done.wait(self._timeout):
            return
        with self._mutex:
            if self._done.is_set():
                return
            self.fired = True
            try:
                self._killer.execute("KILL QUERY %d" % self._victim)
            except db.DbError:
                # The lock connection also has lock_wait_timeout; the freeze fails either way.
                pass

    def __exit__(self, *exc_info: Any) -> None:
        # Under the mutex: once we say done, a KILL can no longer hit a later statement.
        with self._mutex:
            self._done.set()
        self._thread.join(timeout=self._timeout + 5)


PARTIAL_PROCESS_LIST = ("the account lacks PROCESS, so the process list shows only its own sessions: long "
                        "statements of other accounts go unnoticed and the lock may wait for them up to "
                        "acquire-timeout; fix: GRANT PROCESS ON *.* TO the account")


def wait_for_long_statements(helper: db.Connection, own_ids: Sequence[int], settings: Settings,
                             server: Server, method: str, log: logging.Logger,
                             deadline: Optional[float] = None) -> List[str]:
    """Before locking, wait (without blocking anyone) for long statements to finish.

    Waits until deadline (default: long-query-wait from now). Returns warnings for the
    freeze to pass on (a process list that cannot show them all).
    """
    kinds = settings.long_query_type
    # With auto, count only what this lock really waits for: BACKUP STAGE lets InnoDB DML run.
    only_blocking = kinds == "auto" and method == BACKUP_STAGE
    if kinds == "auto":
        kinds = serverinfo.default_long_query_kinds(server, method)
    started = time.monotonic()
    deadline = started + settings.long_query_wait if deadline is None else deadline
    logged = False
    first = True
    warnings: List[str] = []
    while True:
        try:
            rows = helper.query("SELECT * FROM information_schema.PROCESSLIST")
        except db.DbError as exc:
            log.warning("cannot read the process list (%s): long statements go unnoticed", exc)
            return warnings
        if first:
            first = False
            if _sees_only_itself(helper, rows):
                warnings.append(PARTIAL_PROCESS_LIST)
        long_rows = serverinfo.long_statements(rows, own_ids, settings.long_query_time, kinds)
        if only_blocking and long_rows:
            innodb = _innodb_statement_threads(helper)
            long_rows = [r for r in long_rows if serverinfo.backup_stage_waits_for(r, innodb)]
        if settings.kill_long_selects > 0:
            for row in long_rows:
                if row["kind"] == "select" and row["elapsed"] >= settings.kill_long_selects:
                    log.warning("killing long SELECT %s", serverinfo.describe_statement(row))
                    try:
                        helper.execute("KILL QUERY %d" % int(row["ID"]))
                    except db.DbError as exc:
                        log.warning("cannot kill statement %s: %s", row["ID"], exc)
        if not long_rows:
            if logged:
                log.info("long statements finished after %.1f s", time.monotonic() - started)
            return warnings
        if time.monotonic() >= deadline:
            raise LockTimeout("statement %s would stall the server behind the lock and did not finish "
                              "within long-query-wait=%g s; fix: let it finish, raise long-query-wait, "
                              "or set kill-long-selects" % (serverinfo.describe_statement(long_rows[0]),
                                                            settings.long_query_wait))
        if not logged:
            log.info("waiting up to %g s for %d long statement(s) to finish: %s", settings.long_query_wait,
                     len(long_rows), serverinfo.describe_statement(long_rows[0]))
            logged = True
        # The process list has no change notification; writers are not blocked while we poll.
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _sees_only_itself(helper: db.Connection, rows: Sequence[Dict[str, Any]]) -> bool:
    """Is this process list limited to the account's own sessions (no PROCESS privilege)?"""
    me = {r.get("USER") for r in rows if int(r["ID"]) == helper.thread_id}
    if {r.get("USER") for r in rows} - me:
        return False  # someone else's session is in view
    try:
        grants = [str(list(r.values())[0]) for r in helper.query("SHOW GRANTS")]
    except db.DbError:
        return False
    return not serverinfo.global_privileges(grants) & {"PROCESS", "ALL"}


def _innodb_statement_threads(helper: db.Connection) -> Optional[set]:
    try:
        rows = helper.query("SELECT trx_mysql_thread_id AS id FROM information_schema.INNODB_TRX "
                            "WHERE trx_tables_in_use > 0")
    except db.DbError:
        return None
    return {int(r["id"]) for r in rows}


def _stop_replica(conn: db.Connection, server: Server, settings: Settings, log: logging.Logger,
                  on_stopping: Callable[[List[str]], None], stopped: List[str], deadline: float) -> None:
    """Stop the SQL threads this freeze needs stopped; `stopped` gets each channel before its STOP.

    A STOP that fails or times out may still take effect on the server, so a channel counts
    as stopped from the moment its STOP is sent: whoever restarts goes by what on_stopping
    recorded, never by what was confirmed. With them stopped, the applier must hold no
    temporary table (see _drop_temp_tables); that wait ends at deadline.
    """
    if settings.stop_replica == "never":
        return
    try:
        channels = serverinfo.replica_channels(conn.query(serverinfo.replica_status_statement(server)))
    except db.DbError as exc:
        if exc.errno in db.PRIVILEGE_ERRORS:
            # Without the privilege a replica looks like a primary: say what that costs.
            log.warning("cannot read the replica status (%s): if this server is a replica, its applier is "
                        "not stopped and its source coordinates are not recorded; fix: GRANT %s ON *.* TO "
                        "the account", exc.message, serverinfo.replica_monitor_privilege(server))
        else:
            log.info("no replica status (%s)", exc.message)
        return
    running = [c["connection_name"] for c in channels if c["sql_running"]]
    if not running:
        return
    if settings.stop_replica == "auto":
        row = conn.query(serverinfo.parallel_applier_statement(server))[0]
        if not serverinfo.parallel_applier_needs_stop(server, row) and not _open_temp_tables(conn):
            return
    on_stopping(running)
    for channel in running:
        stopped.append(channel)
        _stop_sql_thread(conn, server, channel, settings)
    log.info("stopped replica SQL thread(s): %s", ", ".join(repr(c) for c in stopped))
    _drop_temp_tables(conn, server, settings, log, stopped, deadline)


def _stop_sql_thread(conn: db.Connection, server: Server, channel: str, settings: Settings) -> None:
    try:
        conn.execute(serverinfo.stop_sql_thread_statement(server, channel))
    except db.DbError as exc:
        raise _stop_failure(exc, server, channel, settings) from None


# What the applier is let run for between two looks at its temporary tables.
TEMP_TABLE_RUN = 1.0
OPEN_TEMP_TABLES_STATEMENT = ("SHOW GLOBAL STATUS WHERE Variable_name IN ('Slave_open_temp_tables', "
                              "'Replica_open_temp_tables')")


def _open_temp_tables(conn: db.Connection) -> int:
    return max([int(r.get("Value") or 0) for r in conn.query(OPEN_TEMP_TABLES_STATEMENT)] or [0])


def _drop_temp_tables(conn: db.Connection, server: Server, settings: Settings, log: logging.Logger,
                      channels: Sequence[str], deadline: float) -> None:
    """Let the stopped applier run until it holds no temporary table, or give up at deadline.

    With statement-based (or mixed) replication the applier keeps the source sessions'
    temporary tables in memory, where no snapshot has them: a copy taken now would fail on
    the first replicated statement that uses one. Stopped, the applier never drops them, so
    it is started for a moment and stopped again until it has, as backup tools do.
    """
    count = _open_temp_tables(conn)
    if count:
        log.info("the replica's applier holds %d temporary table(s): letting it run until it drops them "
                 "(at most %.0f s)", count, max(0.0, deadline - time.monotonic()))
    while count:
        if time.monotonic() >= deadline:
            raise LockTimeout("the replica's applier holds %d temporary table(s) (statement-based replication) and "
                              "did not drop them within long-query-wait=%g s: a snapshot now could not replicate "
                              "on, as later statements use them; nothing was locked and the applier runs again; "
                              "fix: retry when the source's sessions have dropped their temporary tables, raise "
                              "long-query-wait, or replicate with binlog_format = ROW"
                              % (count, settings.long_query_wait))
        try:
            start_replica(conn, server, channels, [], log)
        except db.DbError as exc:
            raise ConnectError("cannot start the replica SQL thread to let it drop its temporary tables: %s; it "
                               "may stay stopped: quiesce keeps its record and the next command retries; fix: "
                               "START SLAVE SQL_THREAD by hand" % exc.message) from None
        time.sleep(max(0.0, min(TEMP_TABLE_RUN, deadline - time.monotonic())))
        for channel in channels:
            _stop_sql_thread(conn, server, channel, settings)
        count = _open_temp_tables(conn)


def _stop_failure(exc: db.DbError, server: Server, channel: str, settings: Settings) -> QuiesceError:
    what = "replica SQL thread %r" % channel if channel else "the replica SQL thread"
    if exc.errno in db.PRIVILEGE_ERRORS:
        return PrivilegeError("cannot stop %s: %s; fix: GRANT %s ON *.* TO the account, or set stop-replica = "
                              "never" % (what, exc.message, serverinfo.replica_admin_privilege(server)))
    return ConnectError("cannot stop %s: %s; it may be stopped now all the same (the server finishes a STOP "
                        "the client gave up on): quiesce starts it again and keeps its record until it runs; "
                        "fix: if SHOW SLAVE STATUS still says Slave_SQL_Running: No, START SLAVE SQL_THREAD; "
                        "raise connect-timeout (now %g s) if the applier needs longer to reach a safe point"
                        % (what, exc.message, settings.connect_timeout))


def start_replica(conn: db.Connection, server: Server, channels: Sequence[str], started: List[str],
                  log: logging.Logger) -> None:
    """START each channel's SQL thread; `started` gets each one that did (a failure raises DbError)."""
    try:
        for channel in channels:
            conn.execute(serverinfo.start_sql_thread_statement(server, channel))
            started.append(channel)
    finally:
        if started:
            log.info("restarted replica SQL thread(s): %s", ", ".join(repr(c) for c in started))


def _not_restarted(target: Target, channels: Sequence[str], why: str) -> str:
    return ("%s: replica SQL thread(s) %s stopped for the freeze could not be restarted: %s; the next quiesce "
            "command retries; fix: START SLAVE SQL_THREAD by hand"
            % (target.name, ", ".join(repr(c) for c in channels), why))


@dataclasses.dataclass
class Prepared:
    """A server made ready for locking: connected, checked, long statements gone, appliers stopped."""

    target: Target
    conn: db.Connection
    helper: db.Connection
    server: Server
    strategy: Strategy
    info: Dict[str, Any]
    warnings: List[str]
    stopped: List[str]
    drained: Optional[durable.Drained]
    identity: Dict[str, Any]
    # The server process and how its paths are reached from here (serverview.py).
    view: serverview.ServerView = serverview.UNKNOWN

    def server_path(self, path: Optional[str]) -> Optional[str]:
        """Where a path the server names (its datadir) is, from here; None where the
        server's process or files cannot be found here (nothing to probe then)."""
        files = self.drained.files if self.drained is not None else None
        if not path or files is None or not files.pids or not files.directories:
            return None
        return self.view.path(path)


def prepare(target: Target, settings: Settings, log: logging.Logger,
            on_stopping: Optional[Callable[[Target, List[str]], None]] = None) -> Prepared:
    """Everything before the lock statements, none of which blocks a writer.

    Several instances are all prepared first and then locked back to back, so no server
    stays locked while another one waits for its long statements. on_stopping(target,
    channels) runs before replica SQL threads are stopped, so that whoever must restart
    them finds them on disk: the caller, after any failure here (prepare restarts nothing),
    or whoever cleans up after a crash or a kill.
    """
    conn = connect(target, settings)
    helper: Optional[db.Connection] = None
    stopped: List[str] = []
    server: Optional[Server] = None
    try:
        row = conn.query("SELECT VERSION() AS version, @@version_comment AS comment")[0]
        server = serverinfo.identify(str(row["version"]), str(row["comment"] or ""))
        strategy = STRATEGIES[serverinfo.choose_lock_method(server, settings.lock_method)]
        # The holder idles for the whole snapshot: the server must not drop it meanwhile.
        conn.execute("SET SESSION wait_timeout = %d" % (math.ceil(settings.lock_timeout) + 600))
        conn.execute("SET SESSION lock_wait_timeout = %d" % max(1, math.ceil(settings.acquire_timeout)))
        escapes_on(conn)
        info = conn.query(serverinfo.DURABILITY_STATEMENT)[0]
        _refuse_unsynced_galera(conn, target)
        warnings = serverinfo.durability_warnings(info)
        identity = _identity(conn, server)
        for warning in warnings:
            log.warning("%s: %s", target.name, warning)
        helper = connect(target, settings)
        # One long-query-wait for everything the lock must not meet: long statements, then
        # the applier's temporary tables.
        waits_until = time.monotonic() + settings.long_query_wait
        for warning in wait_for_long_statements(helper, (conn.thread_id, helper.thread_id), settings, server,
                                                strategy.name, log, waits_until):
            log.warning("%s: %s", target.name, warning)
            warnings.append(warning)
        _stop_replica(conn, server, settings, log,
                      lambda channels: on_stopping(target, channels) if on_stopping else None, stopped,
                      waits_until)
        # Last: what is written meanwhile goes to disk now, not under the lock.
        view = serverview.view_of(conn.peer_pid()) if target.is_local else serverview.UNKNOWN
        drained = durable.prepare(info, view) if target.is_local else None
        if drained is not None:
            where = unseen_server(target, view, drained.files)
            if where:
                log.warning("%s: %s", target.name, where)
                warnings.append(where)
            elif view.foreign and any(d.startswith(view.root + "/") for d in drained.files.directories):
                log.info("%s: the server (pid %d) runs in another mount namespace; its files are reached "
                         "through %s", target.name, view.pid, view.root)
        return Prepared(target, conn, helper, server, strategy, info, warnings, stopped, drained, identity, view)
    except BaseException:
        if helper is not None:
            helper.close()
        conn.close()
        raise


def lock(prepared: Prepared, settings: Settings, log: logging.Logger) -> Locked:
    """Take the lock, record coordinates and make them durable. All or nothing."""
    target, conn, server, strategy = prepared.target, prepared.conn, prepared.server, prepared.strategy
    try:
        conn.set_timeout(settings.acquire_timeout + settings.connect_timeout + 5)
        started = time.monotonic()
        statement = ""
        with Watchdog(prepared.helper, conn.thread_id, settings.acquire_timeout) as watchdog:
            try:
                for statement in list(strategy.prepare) + list(strategy.lock):
                    conn.execute(statement)
            except db.DbError as exc:
                failure = exc
            else:
                failure = None
        locked = time.monotonic()
        locked_wall = time.time()
        if watchdog.fired or (failure and failure.errno in db.INTERRUPTED_ERRORS):
            unseen = PARTIAL_PROCESS_LIST in prepared.warnings
            raise LockTimeout("%s could not lock %s within acquire-timeout=%g s (%s was waiting for "
                              "running statements%s); nothing stays locked; fix: %sretry when the server is "
                              "less busy or raise acquire-timeout"
                              % (target.name, server.label, settings.acquire_timeout, statement,
                                 ", which the account cannot see without PROCESS" if unseen else "",
                                 "GRANT PROCESS ON *.* TO the account, " if unseen else ""))
        if failure is not None:
            if failure.errno in db.PRIVILEGE_ERRORS:
                raise _privilege_error(target, failure, strategy.privileges)
            raise ConnectError("%s: %s failed: %s" % (target.name, statement, failure.message))

        # The lock is held from here; the statements below prove the session still stands.
        conn.set_timeout(settings.connect_timeout + budget.AFTER_LOCK_GRACE)
        coordinates = _coordinates(conn, server)
        identity = prepared.identity
        if identity["galera"]:
            _check_desynced(conn, target, strategy)
            identity = _identity(conn, server)  # the seqno as of the lock: the node is paused now
        try:
            replica = serverinfo.replica_channels(conn.query(serverinfo.replica_status_statement(server))) or None
        except db.DbError:
            replica = None
        info, warnings, drained = prepared.info, prepared.warnings, prepared.drained
        coordinated = time.monotonic()
        _flush_innodb_log(conn, server, info, warnings, log, target.name, settings.runtime_dir)
        flushed = time.monotonic()
        synced = durable.sync(drained, settings.acquire_timeout) if drained is not None else None
        if synced is not None and (not synced.complete or synced.problems):
            warnings.append(_sync_warning(synced, settings))
            log.warning("%s: %s", target.name, warnings[-1])
        done = time.monotonic()
        timings = {"drain": drained.ms if drained is not None else 0.0, "acquire": (locked - started) * 1000.0,
                   "coordinates": (coordinated - locked) * 1000.0, "flush": (flushed - coordinated) * 1000.0,
                   "sync": (done - flushed) * 1000.0, "under_lock": (done - locked) * 1000.0}
        timings = {k: round(v, 1) for k, v in timings.items()}
        position = dict(coordinates)
        position.update({
            "instance": target.name,
            "server_version": server.version_string,
            "flavour": server.flavour,
            "lock": strategy.name,
            "locked_at": state.utc_at(locked_wall),
            "timings_ms": timings,
            "replica": replica,
            "replica_stopped": bool(prepared.stopped),
            "durability": {
                "innodb_flush_log_at_trx_commit": serverinfo.setting_int(info.get("innodb_flush_log_at_trx_commit")),
                "sync_binlog": serverinfo.setting_int(info.get("sync_binlog"))},
            "datadir": info.get("datadir"),
            # As this host sees them (none for a server elsewhere): what run --freeze-fs freezes.
            "directories": list(drained.files.directories) if drained is not None else [],
        })
        position.update(identity)
        return Locked(target, conn, server, strategy, position, prepared.stopped, (locked - started) * 1000.0,
                      locked, warnings, timings_ms=timings)
    except BaseException:
        conn.close()  # drops any lock the session took; the caller restarts the appliers
        raise
    finally:
        prepared.helper.close()


def unseen_server(target: Target, view: serverview.ServerView, files: durable.ServerFiles) -> Optional[str]:
    """What is not guaranteed when the local server's process or files cannot be found here."""
    if files.pids and files.directories:
        return None
    what = "its process" if not files.pids else "its data directory"
    return ("the server behind %s is local, but %s cannot be found here (a TCP proxy, or a container this host "
            "cannot look into): its files are not synced under the lock, so a snapshot by an agent that does "
            "not freeze the filesystems may miss the last commits, and the lock is not released at the "
            "filesystem thaw" % (target.address, what))


def abandon(prepared: Prepared, settings: Settings, log: logging.Logger) -> None:
    """Give up a prepared server that will not be locked (another instance failed).

    Its stopped appliers are the caller's to restart, as after a failed prepare or lock.
    """
    prepared.helper.close()
    prepared.conn.close()


def _sync_warning(synced: durable.Synced, settings: Settings) -> str:
    if not synced.complete and not synced.problems:
        return ("the server's files were not all durable within %g s under the lock (slow storage); a snapshot "
                "taken without a filesystem freeze may miss the last commits; fix: raise acquire-timeout or "
                "use an agent that freezes the filesystems" % settings.acquire_timeout)
    return ("could not sync some of the server's files (%s); a snapshot taken without a filesystem freeze may "
            "miss the last commits written to them" % "; ".join(synced.problems))


def _refuse_unsynced_galera(conn: db.Connection, target: Target) -> None:
    """A Galera node that is not Synced is refused before anything is locked."""
    if not serverinfo.is_galera_node(conn.query(serverinfo.WSREP_ON_STATEMENT)):
        return
    refusal = serverinfo.galera_refusal(serverinfo.galera_status(conn.query(serverinfo.WSREP_STATUS_STATEMENT)))
    if refusal:
        raise LockTimeout("%s: %s; nothing was locked; fix: retry when the node is Synced (SHOW STATUS LIKE "
                          "'wsrep_local_state_comment')" % (target.name, refusal))


def _check_desynced(conn: db.Connection, target: Target, strategy: Strategy) -> None:
    """The lock must have desynced the Galera node.

    A lock the server does not desync for stalls the whole cluster through flow control;
    MariaDB desyncs and pauses the node for BACKUP STAGE and FTWRL, and this proves it did.
    """
    status = serverinfo.galera_status(conn.query(serverinfo.WSREP_STATUS_STATEMENT))
    state = status.get("wsrep_local_state_comment")
    if state != serverinfo.GALERA_DESYNCED:
        raise LockTimeout("%s: the server did not desync this Galera node for %s (state %s), so the lock would "
                          "stall the whole cluster; nothing stays locked; fix: use a server that desyncs for it "
                          "(MariaDB 10.4 or later)" % (target.name, strategy.name, state))


def _flush_innodb_log(conn: db.Connection, server: Server, info: Dict[str, Any], warnings: List[str],
                      log: logging.Logger, instance: str, runtime_dir: str) -> None:
    """Make every commit durable in InnoDB's redo log.

    MariaDB's FLUSH ENGINE LOGS follows innodb_flush_log_at_trx_commit: at 0 it writes
    nothing and at 2 it does not sync. Nothing can commit while we hold the lock, so
    raising the setting to 1 for the flush alone changes nothing else. The old value is
    on disk (runtime-dir) before the change, so that recovery puts it back if this
    process dies before it does. An account that may not raise it (no SUPER): at 2
    every commit is in the log file already and the sync under the lock makes it
    durable; at 0 the last commits are only in the server's memory, so the freeze fails
    rather than promise a snapshot that may miss them.
    """
    name = changedglobals.FLUSH_LOG
    mode = serverinfo.setting_int(info.get(name))
    if server.flavour != serverinfo.MARIADB or mode in (None, 1):
        conn.execute("FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS")
        return
    try:
        changedglobals.record(runtime_dir, instance, name, mode)
    except OSError as exc:
        raise StateError("cannot write %s: %s; %s was not changed; fix: check runtime-dir"
                         % (exc.filename, exc.strerror, name))
    try:
        conn.execute("SET GLOBAL %s = 1" % name)
    except db.DbError as exc:
        _forget_flush_log(runtime_dir, instance, log)
        if mode == 0:
            raise PrivilegeError(trx_commit_0_problem(exc.message)) from None
        conn.execute("FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS")
        return
    try:
        conn.execute("FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS")
    finally:
        # Also after a failed flush, whose error (not this one) is what the freeze reports.
        _restore_flush_log(conn, mode, warnings, log, instance, runtime_dir)


def _restore_flush_log(conn: db.Connection, mode: int, warnings: List[str], log: logging.Logger,
                       instance: str, runtime_dir: str) -> None:
    name = changedglobals.FLUSH_LOG
    statement = "SET GLOBAL %s = %d" % (name, mode)
    try:
        conn.execute(statement)
    except db.DbError as exc:
        warning = ("%s is left at 1 on the server (it was %d): putting it back failed (%s); the next quiesce "
                   "command retries; fix: %s" % (name, mode, exc.message, statement))
        warnings.append(warning)
        log.warning("%s: %s", instance, warning)
        return
    _forget_flush_log(runtime_dir, instance, log)


def _forget_flush_log(runtime_dir: str, instance: str, log: logging.Logger) -> None:
    try:
        changedglobals.forget(runtime_dir, instance, changedglobals.FLUSH_LOG)
    except (OSError, StateError) as exc:  # harmless: recovery would set the value it has anyway
        log.warning("%s: cannot update the record of changed settings: %s", instance, exc)


def trx_commit_0_problem(why: str) -> str:
    """Why a freeze at innodb_flush_log_at_trx_commit = 0 cannot make the last commits durable."""
    return ("innodb_flush_log_at_trx_commit = 0 keeps the last commits in the server's memory, and the account "
            "cannot raise it for the flush (%s): a snapshot could miss commits the server acknowledged; fix: "
            "GRANT SUPER ON *.* TO the account, or set innodb_flush_log_at_trx_commit to 1 or 2" % why)


def _coordinates(conn: db.Connection, server: Server) -> Dict[str, Any]:
    try:
        rows = conn.query(serverinfo.binlog_status_statement(server))
    except db.DbError as exc:
        if exc.errno in db.PRIVILEGE_ERRORS:
            raise PrivilegeError("cannot read binlog coordinates: %s; fix: GRANT %s ON *.* TO the account"
                                 % (exc.message, serverinfo.binlog_monitor_privilege(server)))
        raise
    statement = serverinfo.gtid_statement(server)
    gtid_rows = conn.query(statement) if statement else []
    return serverinfo.binlog_coordinates(rows, gtid_rows)


def _identity(conn: db.Connection, server: Server) -> Dict[str, Any]:
    found = serverinfo.identity(conn.query(serverinfo.identity_statement(server))[0])
    found["galera"] = serverinfo.galera_state(conn.query(serverinfo.GALERA_STATEMENT))
    return found


def restart_replica_fresh(target: Target, settings: Settings, server: Optional[Server], channels: Sequence[str],
                          log: logging.Logger) -> Optional[str]:
    """Restart SQL threads over a new connection (the locking one is gone, or its holder).

    Returns None once every one was started, else the problem (also logged).
    """
    try:
        conn = connect(target, settings)
    except QuiesceError as exc:
        problem = _not_restarted(target, channels, str(exc))
        log.error("%s", problem)
        return problem
    started: List[str] = []
    try:
        if server is None:
            server = identify_server(conn)
        escapes_on(conn)
        start_replica(conn, server, channels, started, log)
    except db.DbError as exc:
        problem = _not_restarted(target, [c for c in channels if c not in started], "START SLAVE failed: %s" % exc)
        log.error("%s", problem)
        return problem
    finally:
        conn.close()
    return None


def session_closed(locked: Locked) -> bool:
    """Has the server closed this idle lock session? (Nothing is ever sent to it unasked.)"""
    try:
        return bool(select.select([locked.conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def release(locked: Locked, settings: Settings, log: logging.Logger, restart: Sequence[str] = ()) -> Optional[str]:
    """Unlock, restart the SQL threads `restart` on the same session, and close. Returns a problem, or None.

    A session found gone while unlocking means the lock did not last: locked.lost says so.
    The unlock and each START are bounded by connect-timeout: a server frozen solid gets its
    session abandoned rather than a holder that never answers thaw. The START goes over
    this session, after the unlock: right after a lock, the clients that waited behind it
    may fill max_connections, and a new connection would be refused. locked.restarted
    lists what was started; a failed START is locked.restart_problem.
    """
    problem = None
    if locked.lost is None:
        try:
            locked.conn.set_timeout(settings.connect_timeout)
            locked.conn.execute(locked.strategy.unlock)
        except db.DbError as exc:
            if not db.is_lost(exc):
                problem = "unlock failed (%s); closing the session released the lock" % exc.message
            else:
                locked.lost = ("the session was gone or did not answer when unlocking (%s), so the lock may "
                               "have ended before thaw" % exc.message)
                log.error("%s: lock LOST: %s", locked.target.name, locked.lost)
    if locked.lost is None:
        _restart_on_session(locked, restart, log)
        locked.conn.close()
    else:
        # Saying goodbye to a server that may be frozen solid could block: just drop the socket.
        locked.conn.abandon()
    return problem


def _restart_on_session(locked: Locked, channels: Sequence[str], log: logging.Logger) -> None:
    try:
        start_replica(locked.conn, locked.server, channels, locked.restarted, log)
    except db.DbError as exc:
        locked.restart_problem = _not_restarted(
            locked.target, [c for c in channels if c not in locked.restarted], "START SLAVE failed: %s" % exc)
        log.error("%s", locked.restart_problem)
