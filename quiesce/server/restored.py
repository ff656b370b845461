"""What a server booted from a snapshot shows against the position file the snapshot holds.

The checks behind quiesce verify, and behind restore-plan's refusal to plan on data that is
not the snapshot's. Each writes one line per finding to a Report.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from quiesce.base.config import Settings, Target
from quiesce.base.errors import RestoreError
from quiesce.base.report import Report
from quiesce.records import state
from quiesce.server import db, locking, serverinfo

# Events a server writes by itself into a binlog it opens; any other event is a transaction.
HOUSEKEEPING_EVENTS = frozenset({"Format_desc", "Gtid_list", "Binlog_checkpoint", "Previous_gtids", "Rotate",
                                 "Stop", "Start_encryption"})
LATER_EVENTS_LIMIT = 30
ERROR_LOG_TAIL = 4 * 1024 * 1024
_STARTED = re.compile(r"\bas process \d+")
_ERROR_LINE = re.compile(r"\[ERROR\]", re.I)


# -- pure logic (unit-tested with what MariaDB and MySQL return) ------------------------

def identity_findings(recorded: Dict[str, Any], current: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(failures, warnings) comparing the identity in the position file with the server's."""
    failures, warnings = [], []
    if recorded.get("server_id") is None and recorded.get("hostname") is None:
        warnings.append("the position file records no server identity (written by an older quiesce): cannot "
                        "tell whether it belongs to this server")
        return failures, warnings
    for key in ("server_uuid", "server_id"):
        if recorded.get(key) is not None and current.get(key) is not None and recorded[key] != current[key]:
            failures.append("the position file is from another server: %s %s recorded, this server has %s; fix: "
                            "run verify on the server restored from the snapshot that holds this file, or pass "
                            "that snapshot's file with --position-file" % (key, recorded[key], current[key]))
    if recorded.get("hostname") and current.get("hostname") and recorded["hostname"] != current["hostname"]:
        warnings.append("the position file was written on host %s, this is %s (fine for a clone restored under "
                        "another name)" % (recorded["hostname"], current["hostname"]))
    return failures, warnings


def binlog_findings(recorded_file: str, recorded_position: int,
                    logs: Sequence[Tuple[str, int]]) -> Tuple[Optional[str], List[str]]:
    """(problem or None, files written after the recorded one) from SHOW BINARY LOGS."""
    names = [name for name, _size in logs]
    if recorded_file not in names:
        return ("binlog %s recorded in the position file is not on this server (it has %s); fix: restore the "
                "whole data directory, binlogs included" % (recorded_file, ", ".join(names[-3:]) or "none")), []
    size = dict(logs)[recorded_file]
    later = names[names.index(recorded_file) + 1:]
    if size > recorded_position:
        return ("binlog %s is %d bytes, %d more than the recorded position %d: the copy holds commits made after "
                "the snapshot's coordinates (taken without the lock, or written to since)"
                % (recorded_file, size, size - recorded_position, recorded_position)), later
    if size < recorded_position:
        return ("binlog %s is %d bytes, %d short of the recorded position %d: commits the snapshot recorded are "
                "missing (truncated binlog)" % (recorded_file, size, recorded_position - size,
                                                recorded_position)), later
    return None, later


INDEX_STATEMENT = ("SELECT @@GLOBAL.datadir AS datadir, @@GLOBAL.log_bin_basename AS log_bin_basename, "
                   "@@GLOBAL.log_bin_index AS log_bin_index, @@GLOBAL.relay_log_index AS relay_log_index")


def index_outsiders(lines: Sequence[str], datadir: str, log_dirs: Sequence[str]) -> List[str]:
    """Files an index (binlog.index, relay-log.index) names outside this server's directories.

    A relative name is read from the datadir, as the server reads it; an absolute one must
    lie in the datadir or in the directory the server writes these logs to (log_bin =
    /var/log/mysql/... is a setup of its own, not a copy).
    """
    homes = [os.path.realpath(d) for d in [datadir, *log_dirs] if d]
    outside = []
    for line in lines:
        name = line.strip()
        if not name:
            continue
        path = os.path.realpath(os.path.join(datadir, name))
        if not any(path == home or path.startswith(home.rstrip("/") + "/") for home in homes):
            outside.append(name)
    return outside


def transactions_in(events: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Events of SHOW BINLOG EVENTS that the server did not write by itself at start-up."""
    return [e for e in events if e.get("Event_type") not in HOUSEKEEPING_EVENTS]


def gtid_set(text: Optional[str]) -> frozenset:
    """A GTID state as a set: MariaDB "0-1-7,1-2-3", MySQL "uuid:1-5:7-9,\\nuuid2:1-3"."""
    return frozenset(part.lower() for part in re.sub(r"\s+", "", str(text or "")).split(",") if part)


def epoch_of(utc_text: Any) -> Optional[float]:
    """Seconds since the epoch of a time the position file records ("2026-11-30T12:00:00.000Z")."""
    try:
        moment = datetime.datetime.strptime(str(utc_text), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


def running_since_before(now: int, uptime: int, locked_at: Any) -> Optional[str]:
    """The server's start time when it was already running when the snapshot was locked, else None.

    A server restored from a snapshot started after the lock was taken; the original has
    been running since before it. now - Uptime is the start in whole seconds (both count
    whole seconds), so a server counts as running before the lock only when it started at
    least a second before it: a copy is never taken for the original.
    """
    locked = epoch_of(locked_at)
    started = now - uptime
    if locked is None or started + 1 > locked:
        return None
    return state.utc_at(started)


def uses_error_log_table(server: serverinfo.Server) -> bool:
    return server.flavour != serverinfo.MARIADB and server.version >= (8, 0, 22)


UPTIME_STATEMENT = "SHOW GLOBAL STATUS LIKE 'Uptime'"


def error_log_table_statement(uptime_rows: Sequence[Dict[str, Any]]) -> str:
    """Errors the server logged since it last started (Uptime seconds ago, and a second more)."""
    uptime = int(uptime_rows[0]["Value"]) if uptime_rows else 0
    return ("SELECT LOGGED, ERROR_CODE, SUBSYSTEM, DATA FROM performance_schema.error_log "
            "WHERE PRIO = 'Error' AND LOGGED >= NOW(6) - INTERVAL %d SECOND ORDER BY LOGGED" % (uptime + 1))
ERROR_LOG_FILE_STATEMENT = "SELECT @@GLOBAL.log_error AS log_error, @@GLOBAL.datadir AS datadir"


def error_log_path(row: Dict[str, Any]) -> Optional[str]:
    """Where the server writes its error log, or None when it goes to stderr."""
    name = str(row.get("log_error") or "").strip()
    if not name or name == "stderr":
        return None
    if not os.path.isabs(name):
        name = os.path.join(str(row.get("datadir") or ""), name)
    return name


def errors_since_last_start(text: str) -> List[str]:
    """[ERROR] lines of an error log, from the last start-up on."""
    lines = text.splitlines()
    start = 0
    for index, line in enumerate(lines):
        if _STARTED.search(line):
            start = index
    return [line.strip() for line in lines[start:] if _ERROR_LINE.search(line)]


NON_TRANSACTIONAL_TABLES_STATEMENT = (
    "SELECT TABLE_SCHEMA AS db, TABLE_NAME AS name, ENGINE AS engine FROM information_schema.TABLES "
    "WHERE ENGINE IN ('MyISAM', 'Aria') AND TABLE_TYPE = 'BASE TABLE' "
    "AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema') ORDER BY TABLE_SCHEMA, TABLE_NAME")


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def check_table_problems(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """What CHECK TABLE said other than "status OK" (a warning such as "hasn't closed the table
    properly" is the mark of a copy made while the table was open for writing)."""
    problems = []
    for row in rows:
        kind = str(row.get("Msg_type") or "").lower()
        text = str(row.get("Msg_text") or "")
        if (kind, text) != ("status", "OK"):
            problems.append("%s: %s" % (kind, text))
    return problems


# -- the checks against the server ------------------------------------------------------

def server_identity(conn: db.Connection, server: serverinfo.Server) -> Dict[str, Any]:
    return serverinfo.identity(conn.query(serverinfo.identity_statement(server))[0])


def check_identity(report: Report, name: str, path: str, position: Dict[str, Any],
                    server: serverinfo.Server, current: Dict[str, Any]) -> None:
    if position.get("flavour") and position["flavour"] != server.flavour:
        report.fail(RestoreError("%sthe position file is from a %s server, this one is %s; fix: pass the file "
                                 "of this server's snapshot with --position-file"
                                 % (name, position["flavour"], server.label)))
        return
    failures, warnings = identity_findings(position, current)
    for failure in failures:
        report.fail(RestoreError(name + failure))
    for warning in warnings:
        report.warn(name + warning)
    if not failures:
        report.ok("%sposition file %s (locked %s with %s) belongs to this server (server_id %s%s)"
                  % (name, path, position.get("locked_at"), position.get("lock"), current.get("server_id"),
                     ", server_uuid %s" % current["server_uuid"] if current.get("server_uuid") else ""))


def check_indexes(report: Report, name: str, conn: db.Connection, local: bool) -> None:
    row = conn.query(INDEX_STATEMENT)[0]
    datadir = str(row.get("datadir") or "")
    indexes = ((row.get("log_bin_index"), os.path.dirname(str(row.get("log_bin_basename") or ""))),
               (row.get("relay_log_index"), os.path.dirname(str(row.get("relay_log_index") or ""))))
    read = []
    for index, log_dir in indexes:
        if not index:
            continue
        index = os.path.join(datadir, str(index))
        if not local:
            report.warn("%s%s is a file on the server's own host: the log names in it were not checked; run verify "
                        "there" % (name, index))
            continue
        try:
            with open(index, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            continue            # no relay log yet: nothing to follow
        except OSError as exc:
            report.warn("%scannot read %s (%s): the log names in it were not checked; run verify as root on the "
                        "server's host" % (name, index, exc.strerror))
            continue
        read.append(os.path.basename(index))
        outside = index_outsiders(lines, datadir, [log_dir])
        if outside:
            report.fail(RestoreError(
                "%s%s names %s, outside this server's data directory %s: a copy booted at another path reads the "
                "original's logs through it and reports their state as its own; fix: stop the server, rewrite the "
                "paths in %s to name files in %s (e.g. relative ./%s), and start it again"
                % (name, os.path.basename(index), outside[0], datadir, index, datadir.rstrip("/") or "/",
                   os.path.basename(outside[0]))))
            return
    if read:
        report.ok("%s%s name(s) files of this server only" % (name, " and ".join(read)))


def check_binlog(report: Report, name: str, conn: db.Connection, position: Dict[str, Any]) -> None:
    if not position.get("binlog_file"):
        report.warn("%sbinary logging was off at the snapshot: no coordinates to compare" % name)
        return
    try:
        logs = [(str(r["Log_name"]), int(r["File_size"])) for r in conn.query("SHOW BINARY LOGS")]
    except db.DbError as exc:
        report.fail(RestoreError("%scannot list the binary logs: %s; fix: enable log_bin as on the original, "
                                 "or GRANT BINLOG MONITOR (MySQL: REPLICATION CLIENT)" % (name, exc.message)))
        return
    problem, later = binlog_findings(position["binlog_file"], int(position["binlog_position"]), logs)
    if problem:
        report.fail(RestoreError(name + problem))
        return
    for log_name in later:
        events = conn.query("SHOW BINLOG EVENTS IN '%s' LIMIT %d" % (log_name.replace("'", "''"),
                                                                     LATER_EVENTS_LIMIT))
        written = transactions_in(events)
        if written:
            report.fail(RestoreError("%sbinlog %s, opened after the snapshot, holds transactions (%s at %s): this "
                                     "server took writes since it was restored, so it no longer matches the "
                                     "snapshot" % (name, log_name, written[0].get("Event_type"),
                                                   written[0].get("Pos"))))
            return
    report.ok("%sbinlog ends exactly at the recorded %s:%s%s" % (
        name, position["binlog_file"], position["binlog_position"],
        " (then %s, opened at start-up, holds no transactions)" % ", ".join(later) if later else ""))


def check_gtid(report: Report, name: str, conn: db.Connection, server: serverinfo.Server,
                position: Dict[str, Any]) -> None:
    current = conn.query(serverinfo.gtid_statement(server))[0].get("gtid")
    recorded = position.get("gtid")
    variable = "gtid_binlog_pos" if server.flavour == serverinfo.MARIADB else "gtid_executed"
    if gtid_set(current) == gtid_set(recorded):
        report.ok("%sGTID state %s = %r, as recorded" % (name, variable, current or ""))
    else:
        report.fail(RestoreError("%sGTID state %s is %r, the snapshot recorded %r" % (name, variable, current or "",
                                                                                     recorded or "")))


def check_recovery(report: Report, name: str, conn: db.Connection, server: serverinfo.Server,
                    local: bool) -> None:
    if uses_error_log_table(server):
        try:
            rows = conn.query(error_log_table_statement(conn.query(UPTIME_STATEMENT)))
        except db.DbError as exc:
            report.warn("%scannot read performance_schema.error_log (%s): start-up errors not checked"
                        % (name, exc.message))
            return
        errors = ["%s [%s] %s" % (r.get("LOGGED"), r.get("ERROR_CODE"), r.get("DATA")) for r in rows]
        where = "performance_schema.error_log"
    else:
        path = error_log_path(conn.query(ERROR_LOG_FILE_STATEMENT)[0])
        if not local:
            report.warn("%sthe server's error log is a file on its own host: start-up errors not checked; run "
                        "verify there" % name)
            return
        if path is None:
            report.warn("%sthe server logs to stderr (the journal): start-up errors not checked; look with "
                        "journalctl" % name)
            return
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - ERROR_LOG_TAIL))
                text = handle.read().decode("utf-8", "replace")
        except OSError as exc:
            report.warn("%scannot read the error log %s (%s): start-up errors not checked; run verify as root on "
                        "the server's host" % (name, path, exc.strerror))
            return
        errors = errors_since_last_start(text)
        where = path
    if errors:
        report.fail(RestoreError("%sthe server logged %d error(s) since it started (%s), first: %s"
                                 % (name, len(errors), where, errors[0][:300])))
    else:
        report.ok("%sno errors logged since the server started (%s)" % (name, where))


def check_tables(report: Report, name: str, conn: db.Connection, target: Target, settings: Settings,
                  timeout: float) -> None:
    tables = conn.query(NON_TRANSACTIONAL_TABLES_STATEMENT)
    if not tables:
        report.ok("%sno MyISAM or Aria tables to check" % name)
        return
    deadline = time.monotonic() + timeout
    killer = locking.connect(target, settings)
    bad = []
    checked = 0
    try:
        for table in tables:
            remaining = deadline - time.monotonic()
            full_name = "%s.%s" % (quote_name(table["db"]), quote_name(table["name"]))
            failure = None
            fired = remaining <= 0
            if not fired:
                # KILL QUERY from a second connection bounds the statement; the driver's own read
                # timeout (connect-timeout until now) must outlast it, or a slow but healthy
                # check would end the connection first.
                conn.set_timeout(remaining + settings.connect_timeout)
                with locking.Watchdog(killer, conn.thread_id, remaining) as watchdog:
                    try:
                        rows = conn.query("CHECK TABLE %s QUICK" % full_name)
                    except db.DbError as exc:
                        failure = exc
                conn.set_timeout(settings.connect_timeout)
                fired = watchdog.fired or bool(failure and failure.errno in db.INTERRUPTED_ERRORS)
            if fired:
                report.fail(RestoreError("%sCHECK TABLE did not finish within --check-timeout=%g s (%d of %d "
                                         "tables checked); fix: raise --check-timeout, or --skip-table-check"
                                         % (name, timeout, checked, len(tables))))
                return
            if failure is not None and db.is_lost(failure):
                report.fail(RestoreError("%sthe connection was lost during CHECK TABLE %s (%s), %d of %d tables "
                                         "checked; fix: look in the server's error log whether checking that table "
                                         "crashed it, then REPAIR TABLE or restore it" % (name, full_name,
                                                                                          failure.message, checked,
                                                                                          len(tables))))
                return
            if failure is not None:
                bad.append("%s: %s" % (full_name, failure.message))
            else:
                bad.extend("%s: %s" % (full_name, p) for p in check_table_problems(rows))
            checked += 1
    finally:
        killer.close()
    if bad:
        report.fail(RestoreError("%sCHECK TABLE ... QUICK found %d problem(s) in MyISAM/Aria tables, first: %s; fix: "
                                 "restore from a snapshot taken under the lock, or REPAIR TABLE"
                                 % (name, len(bad), bad[0])))
    else:
        report.ok("%s%d MyISAM/Aria table(s) check clean (CHECK TABLE ... QUICK)" % (name, checked))


def report_galera(report: Report, name: str, conn: db.Connection, position: Dict[str, Any]) -> None:
    recorded = position.get("galera")
    current = serverinfo.galera_state(conn.query(serverinfo.GALERA_STATEMENT))
    if not recorded and not current:
        return
    where = "%s:%s" % (recorded["uuid"], recorded["seqno"]) if recorded else "none recorded"
    if current:
        report.ok("%sGalera: snapshot at %s; this node now at %s:%s (%s)" % (
            name, where, current["uuid"], current["seqno"], current.get("cluster_status")))
    else:
        report.warn("%sGalera: snapshot at %s; this node is not in a cluster now (see restore-plan --galera to "
                    "rejoin by IST)" % (name, where))


START_STATEMENT = "SELECT UNIX_TIMESTAMP() AS now"


def original_server(conn: db.Connection, position: Dict[str, Any]) -> Optional[str]:
    """When this server has been running since before the snapshot: when it started, else None."""
    uptime = int(conn.query(UPTIME_STATEMENT)[0]["Value"])
    now = int(conn.query(START_STATEMENT)[0]["now"])
    return running_since_before(now, uptime, position.get("locked_at"))


def snapshot_mismatches(conn: db.Connection, server: serverinfo.Server, position: Dict[str, Any],
                        local: bool) -> List[str]:
    """What verify's index, binlog and GTID checks find wrong, each named by its check ([] when
    the data is the snapshot's): run before anything is changed on the strength of the file."""
    checks = (("binlog index", lambda r: check_indexes(r, "", conn, local)),
              ("binlog", lambda r: check_binlog(r, "", conn, position)),
              ("GTID", lambda r: check_gtid(r, "", conn, server, position)))
    found = []
    for label, check in checks:
        quiet = Report(echo=False)
        check(quiet)
        found += ["%s check: %s" % (label, failure) for failure in quiet.failures]
    return found
