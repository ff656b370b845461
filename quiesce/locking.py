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

from . import budget, changedglobals, db, durable, serverinfo, state
from .config import Settings, Target
from .errors import ConnectError, LockTimeout, PrivilegeError, QuiesceError, ServerNotRunning, StateError
from .serverinfo import BACKUP_STAGE, FTWRL, Server


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


def connect(target: Target, settings: Settings) -> db.Connection:
    try:
        return db.connect(target, settings.driver, settings.connect_timeout,
                          getattr(settings, "allow_cleartext_auth", False))
    except db.DbError as exc:
        error = _connect_error(target, exc)
        if target.name != "default":
            error = type(error)("instance %s: %s" % (target.name, error))
        raise error from None


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


def wait_for_long_statements(helper: db.Connection, own_ids: Sequence[int], settings: Settings,
                             server: Server, method: str, log: logging.Logger) -> None:
    """Before locking, wait (without blocking anyone) for long statements to finish."""
    kinds = settings.long_query_type
    # With auto, count only what this lock really waits for: BACKUP STAGE lets InnoDB DML run.
    only_blocking = kinds == "auto" and method == BACKUP_STAGE
    if kinds == "auto":
        kinds = serverinfo.default_long_query_kinds(server, method)
    deadline = time.monotonic() + settings.long_query_wait
    started = time.monotonic()
    logged = False
    while True:
        try:
            rows = helper.query("SELECT * FROM information_schema.PROCESSLIST")
        except db.DbError as exc:
            log.warning("cannot read the process list (%s): long statements go unnoticed", exc)
            return
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
            return
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


def _innodb_statement_threads(helper: db.Connection) -> Optional[set]:
    try:
        rows = helper.query("SELECT trx_mysql_thread_id AS id FROM information_schema.INNODB_TRX "
                            "WHERE trx_tables_in_use > 0")
    except db.DbError:
        return None
    return {int(r["id"]) for r in rows}


def _stop_replica(conn: db.Connection, server: Server, settings: Settings, log: logging.Logger,
                  on_stopping: Callable[[List[str]], None]) -> List[str]:
    if settings.stop_replica == "never":
        return []
    try:
        channels = serverinfo.replica_channels(conn.query(serverinfo.replica_status_statement(server)))
    except db.DbError as exc:
        if exc.errno in db.PRIVILEGE_ERRORS:
            # Without the privilege a replica looks like a primary: say what that costs.
            log.warning("cannot read the replica status (%s): if this server is a replica, its applier is "
                        "not stopped and its source coordinates are not recorded; fix: GRANT %s ON *.* TO "
                        "the account", exc.message,
                        "REPLICA MONITOR" if server.flavour == serverinfo.MARIADB else "REPLICATION CLIENT")
        else:
            log.info("no replica status (%s)", exc.message)
        return []
    running = [c["connection_name"] for c in channels if c["sql_running"]]
    if not running:
        return []
    if settings.stop_replica == "auto":
        row = conn.query(serverinfo.parallel_applier_statement(server))[0]
        if not serverinfo.parallel_applier_needs_stop(server, row):
            return []
    on_stopping(running)
    stopped = []
    try:
        for channel in running:
            conn.execute(serverinfo.stop_sql_thread_statement(server, channel))
            stopped.append(channel)
    except db.DbError as exc:
        start_replica(conn, server, stopped, log)
        if exc.errno in db.PRIVILEGE_ERRORS:
            raise PrivilegeError("cannot stop the replica SQL thread: %s; fix: GRANT %s ON *.* TO the account, "
                                 "or set stop-replica = never"
                                 % (exc.message, "REPLICATION SLAVE ADMIN" if server.flavour == serverinfo.MARIADB
                                    else "REPLICATION_SLAVE_ADMIN"))
        raise ConnectError("cannot stop the replica SQL thread: %s" % exc.message)
    log.info("stopped replica SQL thread(s): %s", ", ".join(repr(c) for c in stopped))
    return stopped


def start_replica(conn: db.Connection, server: Server, channels: Sequence[str], log: logging.Logger) -> None:
    for channel in channels:
        conn.execute(serverinfo.start_sql_thread_statement(server, channel))
    if channels:
        log.info("restarted replica SQL thread(s): %s", ", ".join(repr(c) for c in channels))


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


def prepare(target: Target, settings: Settings, log: logging.Logger,
            on_stopping: Optional[Callable[[Target, List[str]], None]] = None) -> Prepared:
    """Everything before the lock statements, none of which blocks a writer.

    Several instances are all prepared first and then locked back to back, so no server
    stays locked while another one waits for its long statements. on_stopping(target,
    channels) runs before replica SQL threads are stopped, so that whoever must restart
    them after a crash or a kill finds them on disk.
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
        info = conn.query(serverinfo.DURABILITY_STATEMENT)[0]
        _refuse_unsynced_galera(conn, target)
        warnings = serverinfo.durability_warnings(info)
        identity = _identity(conn, server)
        for warning in warnings:
            log.warning("%s: %s", target.name, warning)
        helper = connect(target, settings)
        wait_for_long_statements(helper, (conn.thread_id, helper.thread_id), settings, server, strategy.name, log)
        stopped = _stop_replica(conn, server, settings, log,
                                lambda channels: on_stopping(target, channels) if on_stopping else None)
        # Last: what is written meanwhile goes to disk now, not under the lock.
        drained = durable.prepare(info) if target.is_local else None
        return Prepared(target, conn, helper, server, strategy, info, warnings, stopped, drained, identity)
    except BaseException:
        if helper is not None:
            helper.close()
        _abandon(conn, target, settings, server, stopped, log)
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
            raise LockTimeout("%s could not lock %s within acquire-timeout=%g s (%s was waiting for "
                              "running statements); nothing stays locked; fix: retry when the server is "
                              "less busy or raise acquire-timeout" % (target.name, server.label,
                                                                      settings.acquire_timeout, statement))
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
            "durability": {"innodb_flush_log_at_trx_commit": _int(info.get("innodb_flush_log_at_trx_commit")),
                           "sync_binlog": _int(info.get("sync_binlog"))},
            "datadir": info.get("datadir"),
        })
        position.update(identity)
        return Locked(target, conn, server, strategy, position, prepared.stopped, (locked - started) * 1000.0,
                      locked, warnings, timings_ms=timings)
    except BaseException:
        _abandon(conn, target, settings, server, prepared.stopped, log)
        raise
    finally:
        prepared.helper.close()


def abandon(prepared: Prepared, settings: Settings, log: logging.Logger) -> None:
    """Give up a prepared server that will not be locked (another instance failed)."""
    prepared.helper.close()
    _abandon(prepared.conn, prepared.target, settings, prepared.server, prepared.stopped, log)


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
    process dies before it does.
    """
    name = changedglobals.FLUSH_LOG
    mode = _int(info.get(name))
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
        conn.execute("FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS")
        warning = ("cannot make the InnoDB log durable with %s=%d (%s): commits of the last second may be "
                   "missing from the snapshot; fix: GRANT SUPER (or SET GLOBAL rights) or set %s=1"
                   % (name, mode, exc.message, name))
        warnings.append(warning)
        log.warning("%s", warning)
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


def _int(value: Any) -> Optional[int]:
    return int(value) if value not in (None, "") else None


def _coordinates(conn: db.Connection, server: Server) -> Dict[str, Any]:
    try:
        rows = conn.query(serverinfo.binlog_status_statement(server))
    except db.DbError as exc:
        if exc.errno in db.PRIVILEGE_ERRORS:
            raise PrivilegeError("cannot read binlog coordinates: %s; fix: GRANT %s ON *.* TO the account"
                                 % (exc.message, "BINLOG MONITOR" if server.flavour == "mariadb"
                                    else "REPLICATION CLIENT"))
        raise
    statement = serverinfo.gtid_statement(server)
    gtid_rows = conn.query(statement) if statement else []
    return serverinfo.binlog_coordinates(rows, gtid_rows)


def _identity(conn: db.Connection, server: Server) -> Dict[str, Any]:
    found = serverinfo.identity(conn.query(serverinfo.identity_statement(server))[0])
    found["galera"] = serverinfo.galera_state(conn.query(serverinfo.GALERA_STATEMENT))
    return found


def _abandon(conn: db.Connection, target: Target, settings: Settings, server: Optional[Server],
             stopped: List[str], log: logging.Logger) -> None:
    """Undo a half-done acquisition: closing the session drops any lock it took."""
    conn.close()
    if stopped and server is not None:
        restart_replica_fresh(target, settings, server, stopped, log)


def restart_replica_fresh(target: Target, settings: Settings, server: Optional[Server], channels: Sequence[str],
                          log: logging.Logger) -> None:
    """Restart SQL threads over a new connection (the locking one may be gone, or its holder)."""
    try:
        conn = connect(target, settings)
    except QuiesceError as exc:
        log.error("%s: replica SQL thread(s) %s are STOPPED and cannot be restarted: %s; fix: START SLAVE "
                  "by hand", target.name, ", ".join(repr(c) for c in channels), exc)
        return
    try:
        if server is None:
            row = conn.query("SELECT VERSION() AS version, @@version_comment AS comment")[0]
            server = serverinfo.identify(str(row["version"]), str(row["comment"] or ""))
        start_replica(conn, server, channels, log)
    except db.DbError as exc:
        log.error("%s: cannot restart replica SQL thread(s): %s; fix: START SLAVE by hand", target.name, exc)
    finally:
        conn.close()


def session_closed(locked: Locked) -> bool:
    """Has the server closed this idle lock session? (Nothing is ever sent to it unasked.)"""
    try:
        return bool(select.select([locked.conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def release(locked: Locked, settings: Settings, log: logging.Logger) -> Optional[str]:
    """Unlock and close (restarting replicas is the caller's next step). Returns a problem, or None.

    A session found gone while unlocking means the lock did not last: locked.lost says so.
    The unlock is bounded by connect-timeout: a server frozen solid gets its session
    abandoned rather than a holder that never answers thaw.
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
        locked.conn.close()
    else:
        # Saying goodbye to a server that may be frozen solid could block: just drop the socket.
        locked.conn.abandon()
    return problem
