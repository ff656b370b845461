"""What differs between server flavours and versions, as pure functions.

Fed by real query results (SELECT VERSION(), SHOW ... STATUS rows); unit-tested with the
version strings and rows real MySQL, Percona Server and MariaDB servers return.
"""

import dataclasses
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from quiesce.base.errors import ConfigError

MARIADB, MYSQL, PERCONA = "mariadb", "mysql", "percona"
FTWRL, BACKUP_STAGE = "ftwrl", "backup-stage"


@dataclasses.dataclass(frozen=True)
class Server:
    flavour: str
    version: Tuple[int, int, int]
    version_string: str

    @property
    def label(self) -> str:
        return "%s %s" % ({"mariadb": "MariaDB", "mysql": "MySQL", "percona": "Percona Server"}[self.flavour],
                          ".".join(map(str, self.version)))


def identify(version: str, version_comment: str = "") -> Server:
    """Flavour from the version text itself, never from the major number alone."""
    text = version.strip()
    # MariaDB 10+ clients once saw "5.5.5-10.x.y-MariaDB": the real version follows the prefix.
    if text.startswith("5.5.5-") and "mariadb" in text.lower():
        text = text[len("5.5.5-"):]
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise ValueError("unrecognised server version %r" % version)
    numbers = tuple(int(x) for x in match.groups())
    lowered = (version + " " + version_comment).lower()
    if "mariadb" in lowered:
        flavour = MARIADB
    elif "percona" in lowered:
        flavour = PERCONA
    else:
        flavour = MYSQL
    return Server(flavour, numbers, version)  # type: ignore[arg-type]


def supports_backup_stage(server: Server) -> bool:
    return server.flavour == MARIADB and server.version >= (10, 4, 0)


def choose_lock_method(server: Server, requested: str) -> str:
    if requested == "auto":
        return BACKUP_STAGE if supports_backup_stage(server) else FTWRL
    if requested == BACKUP_STAGE and not supports_backup_stage(server):
        raise ConfigError("lock-method backup-stage needs MariaDB 10.4 or later, but the server is %s; "
                          "fix: set lock-method = auto or ftwrl" % server.label)
    return requested


def binlog_status_statement(server: Server) -> str:
    if server.flavour == MARIADB:
        return "SHOW BINLOG STATUS" if server.version >= (10, 5, 2) else "SHOW MASTER STATUS"
    # MySQL 8.4 removed SHOW MASTER STATUS; 8.2 introduced the new name.
    return "SHOW BINARY LOG STATUS" if server.version >= (8, 2, 0) else "SHOW MASTER STATUS"


def replica_status_statement(server: Server) -> str:
    if server.flavour == MARIADB:
        return "SHOW ALL SLAVES STATUS"
    return "SHOW REPLICA STATUS" if server.version >= (8, 0, 22) else "SHOW SLAVE STATUS"


def gtid_statement(server: Server) -> str:
    # MySQL's binlog status row repeats gtid_executed, but has no row when binary logging
    # is off, while GTIDs are still kept (mysql.gtid_executed).
    if server.flavour == MARIADB:
        return "SELECT @@GLOBAL.gtid_binlog_pos AS gtid"
    return "SELECT @@GLOBAL.gtid_executed AS gtid"


def binlog_coordinates(rows: Sequence[Dict[str, Any]], gtid_rows: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """Binlog file, position and GTID from SHOW {MASTER|BINLOG|BINARY LOG} STATUS."""
    coordinates: Dict[str, Any] = {"binlog_file": None, "binlog_position": None, "gtid": None}
    if rows:
        row = rows[0]
        coordinates["binlog_file"] = row.get("File") or None
        position = row.get("Position")
        coordinates["binlog_position"] = int(position) if position not in (None, "") else None
        executed = row.get("Executed_Gtid_Set")
        if executed:
            coordinates["gtid"] = re.sub(r"\s+", "", str(executed))
    if gtid_rows and gtid_rows[0].get("gtid"):
        coordinates["gtid"] = _gtid_text(gtid_rows[0]["gtid"])
    return coordinates


def _first(row: Dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] not in (None, ""):
            return row[name]
    return None


def replica_channels(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Source coordinates of each replication channel, in one shape for every flavour."""
    channels = []
    for row in rows:
        position = _first(row, "Exec_Source_Log_Pos", "Exec_Master_Log_Pos")
        channels.append({
            "connection_name": _first(row, "Connection_name", "Channel_Name") or "",
            "source_host": _first(row, "Source_Host", "Master_Host"),
            "source_port": _int_or_none(_first(row, "Source_Port", "Master_Port")),
            "source_log_file": _first(row, "Relay_Source_Log_File", "Relay_Master_Log_File"),
            "source_log_position": _int_or_none(position),
            "gtid": _gtid_text(_first(row, "Gtid_Slave_Pos", "Executed_Gtid_Set")),
            "using_gtid": _first(row, "Using_Gtid", "Auto_Position"),
            "sql_running": _first(row, "Replica_SQL_Running", "Slave_SQL_Running") == "Yes",
            "io_running": _first(row, "Replica_IO_Running", "Slave_IO_Running"),
        })
    return channels


def _gtid_text(value: Any) -> Optional[str]:
    """MySQL breaks a GTID set of several servers over lines ("uuid:1-5,\nuuid:1-3")."""
    return re.sub(r"\s+", "", str(value)) if value not in (None, "") else None


def _int_or_none(value: Any) -> Optional[int]:
    return int(value) if value not in (None, "") else None


def stop_sql_thread_statement(server: Server, channel: str) -> str:
    return _sql_thread_statement(server, channel, "STOP")


def start_sql_thread_statement(server: Server, channel: str) -> str:
    return _sql_thread_statement(server, channel, "START")


def sql_string(text: object, backslash_escapes: bool = True) -> str:
    """A string literal. A quote is doubled, which every sql_mode reads alike; a backslash is
    doubled only where it is an escape: under NO_BACKSLASH_ESCAPES it is an ordinary
    character, and a doubled one would change the text. Callers that cannot read the
    session's sql_mode get the default (escapes on)."""
    value = str(text).replace("'", "''")
    if backslash_escapes:
        value = value.replace("\\", "\\\\")
    return "'" + value + "'"


def backslash_escapes(sql_mode: object) -> bool:
    """From @@SESSION.sql_mode: does a backslash start an escape in this session's strings?"""
    return "NO_BACKSLASH_ESCAPES" not in str(sql_mode or "").upper().split(",")


SQL_MODE_STATEMENT = "SELECT @@SESSION.sql_mode AS sql_mode"


def _sql_thread_statement(server: Server, channel: str, verb: str) -> str:
    if server.flavour == MARIADB:
        name = (" " + sql_string(channel)) if channel else ""
        return "%s SLAVE%s SQL_THREAD" % (verb, name)
    noun = "REPLICA" if server.version >= (8, 0, 22) else "SLAVE"
    suffix = " FOR CHANNEL %s" % sql_string(channel) if channel else ""
    return "%s %s SQL_THREAD%s" % (verb, noun, suffix)


def parallel_applier_statement(server: Server) -> str:
    if server.flavour == MARIADB:
        return "SELECT @@GLOBAL.slave_parallel_threads AS workers, 1 AS preserve_order"
    if server.version >= (8, 0, 26):
        return ("SELECT @@GLOBAL.replica_parallel_workers AS workers, "
                "@@GLOBAL.replica_preserve_commit_order = 1 AS preserve_order")
    return ("SELECT @@GLOBAL.slave_parallel_workers AS workers, "
            "@@GLOBAL.slave_preserve_commit_order = 1 AS preserve_order")


def parallel_applier_needs_stop(server: Server, row: Dict[str, Any]) -> bool:
    """Does the replica's applier keep commit order across workers (and so can deadlock a lock)?"""
    workers = int(row.get("workers") or 0)
    preserve = bool(int(row.get("preserve_order") or 0))
    # MariaDB's parallel replication always commits in order; MySQL counts the
    # coordinator, so one worker is not parallel.
    threshold = 0 if server.flavour == MARIADB else 1
    return workers > threshold and preserve


WSREP_ON_STATEMENT = "SHOW GLOBAL VARIABLES LIKE 'wsrep_on'"     # no row on MySQL
WSREP_STATUS_STATEMENT = "SHOW GLOBAL STATUS LIKE 'wsrep_%'"
GALERA_SYNCED, GALERA_DESYNCED = "Synced", "Donor/Desynced"


def setting_int(value: Any) -> Optional[int]:
    """A numeric server variable as read, or None where it is unset or not a number."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def is_galera_node(variable_rows: Sequence[Dict[str, Any]]) -> bool:
    return any(str(r.get("Value", "")).upper() == "ON" for r in variable_rows)


def galera_status(status_rows: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    return {str(r["Variable_name"]).lower(): str(r["Value"]) for r in status_rows}


def galera_refusal(status: Dict[str, str]) -> Optional[str]:
    """Why this Galera node must not be frozen now, or None.

    A joiner's data is incomplete and a donor is busy serving a state transfer; a node
    outside the primary component may be stale. Only a Synced node in the primary
    component gives a snapshot of the cluster's state.
    """
    state = status.get("wsrep_local_state_comment", "?")
    component = status.get("wsrep_cluster_status", "?")
    if state != GALERA_SYNCED:
        return "this Galera node is %s, not %s (a joiner, or a donor serving a state transfer)" % (
            state, GALERA_SYNCED)
    if component != "Primary":
        return "this Galera node is in a %s component, not the primary one" % component
    return None


# Also where the server keeps its files (durable.server_files); only variables that both
# MySQL 5.7+ and MariaDB 10.2+ have: an unknown one fails the whole statement (hence
# relay_log_index, not relay_log_basename; the relay logs themselves are open files).
DURABILITY_STATEMENT = ("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit AS innodb_flush_log_at_trx_commit, "
                        "@@GLOBAL.sync_binlog AS sync_binlog, @@GLOBAL.log_bin AS log_bin, "
                        "@@GLOBAL.datadir AS datadir, @@GLOBAL.log_bin_basename AS log_bin_basename, "
                        "@@GLOBAL.log_bin_index AS log_bin_index, "
                        "@@GLOBAL.relay_log_index AS relay_log_index, "
                        "@@GLOBAL.innodb_data_home_dir AS innodb_data_home_dir, "
                        "@@GLOBAL.innodb_log_group_home_dir AS innodb_log_group_home_dir, "
                        "@@GLOBAL.innodb_undo_directory AS innodb_undo_directory, @@GLOBAL.tmpdir AS tmpdir")


def durability_warnings(row: Dict[str, Any]) -> List[str]:
    warnings = []
    flush = int(row.get("innodb_flush_log_at_trx_commit") or 1)
    if flush != 1:
        warnings.append("innodb_flush_log_at_trx_commit=%d: commits are not durable on their own; "
                        "quiesce flushes the InnoDB log and syncs the server's files while locked" % flush)
    log_bin = str(row.get("log_bin") or "0") in ("1", "ON")
    sync_binlog = int(row.get("sync_binlog") or 0)
    if log_bin and sync_binlog != 1:
        warnings.append("sync_binlog=%d: the binary log is not synced at commit; quiesce syncs it "
                        "while locked" % sync_binlog)
    return warnings


# Process-list entries that are never user statements.
_SYSTEM_COMMANDS = {"Sleep", "Daemon", "Binlog Dump", "Binlog Dump GTID", "Connect", "Killed",
                    "Slave_IO", "Slave_SQL", "Slave_worker", "Register Slave"}
_SYSTEM_USERS = {"system user", "event_scheduler", "DELAYED"}


def statement_kind(info: Optional[str]) -> str:
    """'select' for read-only statements, 'update' for everything else."""
    if not info:
        return "update"
    text = re.sub(r"^(\s|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n)+", "", info, flags=re.S)
    word = re.match(r"\(*\s*(\w+)", text)
    first = word.group(1).upper() if word else ""
    if first in ("SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "HELP", "WITH", "VALUES", "TABLE"):
        # A locking read blocks FTWRL like an UPDATE; INTO OUTFILE and WITH ... UPDATE write.
        if re.search(r"\b(INTO\s+(OUTFILE|DUMPFILE)|FOR\s+UPDATE|LOCK\s+IN\s+SHARE\s+MODE)\b", text, flags=re.I):
            return "update"
        if first == "WITH" and re.search(r"\b(UPDATE|INSERT|DELETE|REPLACE)\b", text, flags=re.I):
            return "update"
        return "select"
    return "update"


_DDL_WORDS = {"ALTER", "CREATE", "DROP", "RENAME", "TRUNCATE", "OPTIMIZE", "REPAIR", "ANALYZE"}


def is_ddl(info: Optional[str]) -> bool:
    """DDL and table maintenance: BACKUP STAGE BLOCK_DDL waits for these whatever the engine."""
    if not info:
        return False
    text = re.sub(r"^(\s|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n)+", "", info, flags=re.S)
    word = re.match(r"(\w+)", text)
    return bool(word) and word.group(1).upper() in _DDL_WORDS


def backup_stage_waits_for(row: Dict[str, Any], innodb_threads: Optional[set]) -> bool:
    """Would BACKUP STAGE wait for this data-changing statement?

    It waits for DDL and for writes to non-transactional tables (MyISAM at BLOCK_DDL), not
    for InnoDB DML. innodb_threads are the connections running an InnoDB statement now
    (INNODB_TRX.trx_tables_in_use > 0); None means unknown, and then everything counts.
    """
    if innodb_threads is None or is_ddl(row.get("INFO")):
        return True
    return int(row["ID"]) not in innodb_threads


def default_long_query_kinds(server: Server, method: str) -> str:
    """Which running statements would make this lock wait (long-query-type = auto).

    BACKUP STAGE never waits for reads, nor does FTWRL on MariaDB 10.4 and later (measured
    on 10.11: only data-changing statements and LOCK TABLES hold it up); elsewhere FTWRL
    waits for every statement that has a table open.
    """
    if method == BACKUP_STAGE or (server.flavour == MARIADB and server.version >= (10, 4, 0)):
        return "update"
    return "all"


def long_statements(rows: Sequence[Dict[str, Any]], own_ids: Sequence[int], threshold: float,
                    kinds: str) -> List[Dict[str, Any]]:
    """Process-list rows of user statements running at least threshold seconds.

    kinds is 'all', 'select' or 'update' (as in long-query-type).
    """
    found = []
    for row in rows:
        if int(row["ID"]) in own_ids:
            continue
        if row.get("COMMAND") in _SYSTEM_COMMANDS or row.get("USER") in _SYSTEM_USERS:
            continue
        if row.get("COMMAND") not in ("Query", "Execute"):
            continue
        elapsed = float(row.get("TIME_MS") or 0) / 1000.0 if row.get("TIME_MS") is not None else float(row.get("TIME") or 0)
        if elapsed < threshold:
            continue
        kind = statement_kind(row.get("INFO"))
        if kinds != "all" and kind != kinds:
            continue
        found.append(dict(row, kind=kind, elapsed=elapsed))
    return found


def describe_statement(row: Dict[str, Any]) -> str:
    info = re.sub(r"\s+", " ", str(row.get("INFO") or ""))[:80]
    return "id %s (%s, running %.0f s: %s)" % (row["ID"], row.get("USER"), row.get("elapsed", 0), info)


def global_privileges(grant_lines: Sequence[str]) -> set:
    """Privileges granted ON *.* from SHOW GRANTS output ("ALL" stands for all of them)."""
    privileges = set()
    for line in grant_lines:
        match = re.match(r"\s*GRANT\s+(.*?)\s+ON\s+\*\.\*\s+TO\s", line, flags=re.I | re.S)
        if not match:
            continue
        for item in match.group(1).split(","):
            name = re.sub(r"\s+", " ", item.strip().upper())
            privileges.add("ALL" if name in ("ALL", "ALL PRIVILEGES") else name)
    return privileges


def binlog_monitor_privilege(server: Server) -> str:
    """What reads the binary-log coordinates (BINLOG MONITOR exists from MariaDB 10.5.2)."""
    if server.flavour == MARIADB and server.version >= (10, 5, 2):
        return "BINLOG MONITOR"
    return "REPLICATION CLIENT"


def replica_monitor_privilege(server: Server) -> str:
    """What reads the replica status: MariaDB moved it twice within 10.5."""
    if server.flavour == MARIADB:
        if server.version >= (10, 5, 9):
            return "REPLICA MONITOR"
        if server.version >= (10, 5, 2):
            return "REPLICATION SLAVE ADMIN"
    return "REPLICATION CLIENT"


def replica_admin_privilege(server: Server) -> str:
    """What stops and starts the applier. MySQL's REPLICATION_APPLIER is for the applier's
    own account, not this; before the split privileges it was SUPER on both."""
    if server.flavour == MARIADB:
        return "REPLICATION SLAVE ADMIN" if server.version >= (10, 5, 2) else "SUPER"
    return "REPLICATION_SLAVE_ADMIN" if server.version >= (8, 0, 0) else "SUPER"


def connection_admin_privilege(server: Server) -> str:
    """What kills other accounts' statements."""
    if server.flavour == MARIADB:
        return "CONNECTION ADMIN" if server.version >= (10, 5, 2) else "SUPER"
    return "CONNECTION_ADMIN" if server.version >= (8, 0, 0) else "SUPER"


def missing_privileges(server: Server, granted: set, method: str, binlog_on: bool, replica: bool,
                       kill_selects: bool, stop_replica: bool) -> Tuple[List[str], List[str]]:
    """(required, recommended) privileges the account lacks for this configuration.

    Each is named as this server's version knows it: a GRANT of a name it lacks fails.
    """
    if "ALL" in granted:
        return [], []
    required = ["RELOAD"]
    if method == FTWRL and server.flavour != MARIADB:
        required.append("LOCK TABLES")
    recommended = ["PROCESS"]
    if binlog_on:
        required.append(binlog_monitor_privilege(server))
    if replica:
        recommended.append(replica_monitor_privilege(server))
        if stop_replica:
            recommended.append(replica_admin_privilege(server))
    if kill_selects:
        recommended.append(connection_admin_privilege(server))
    aliases = {"REPLICATION CLIENT": {"BINLOG MONITOR", "SUPER"}, "BINLOG MONITOR": {"REPLICATION CLIENT", "SUPER"},
               "CONNECTION ADMIN": {"SUPER"}, "CONNECTION_ADMIN": {"SUPER"},
               # MariaDB's SHOW GRANTS names REPLICA MONITOR by its older name.
               "REPLICA MONITOR": {"SLAVE MONITOR", "SUPER"},
               "REPLICATION SLAVE ADMIN": {"SUPER"}, "REPLICATION_SLAVE_ADMIN": {"SUPER"}}

    def lacks(privilege: str) -> bool:
        return privilege not in granted and not (aliases.get(privilege, set()) & granted)

    missing = _unique(p for p in required if lacks(p))
    return missing, [p for p in _unique(recommended) if lacks(p) and p not in missing]


def _unique(names: Iterable[str]) -> List[str]:
    return list(dict.fromkeys(names))


def identity_statement(server: Server) -> str:
    """Which server this is: recorded with the coordinates, compared again by verify.

    Only MySQL and Percona Server have server_uuid (in auto.cnf, copied with the data
    directory); MariaDB has none.
    """
    columns = "@@GLOBAL.server_id AS server_id, @@hostname AS hostname"
    if server.flavour != MARIADB:
        columns += ", @@GLOBAL.server_uuid AS server_uuid"
    return "SELECT " + columns


def identity(row: Dict[str, Any]) -> Dict[str, Any]:
    return {"server_id": _int_or_none(row.get("server_id")), "server_uuid": row.get("server_uuid") or None,
            "hostname": row.get("hostname") or None}


# Works on every flavour: a server without Galera returns no wsrep_local_state_uuid row
# (MariaDB built with wsrep but not in a cluster shows only wsrep_cluster_status).
GALERA_STATEMENT = ("SHOW GLOBAL STATUS WHERE Variable_name IN "
                    "('wsrep_local_state_uuid', 'wsrep_last_committed', 'wsrep_cluster_status')")


def galera_state(rows: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """{"uuid", "seqno", "cluster_status"} of a Galera node, or None when it is not one."""
    values = {str(r.get("Variable_name", "")).lower(): r.get("Value") for r in rows}
    uuid = values.get("wsrep_local_state_uuid")
    if not uuid or uuid == "00000000-0000-0000-0000-000000000000":
        return None
    return {"uuid": uuid, "seqno": _int_or_none(values.get("wsrep_last_committed")),
            "cluster_status": values.get("wsrep_cluster_status")}
