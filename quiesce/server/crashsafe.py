"""Whether an atomic image of this server is consistent with DDL blocked alone, commits
running: what a lock that never blocks commits would need.

Such an image equals a mysqld crash (FIFREEZE writes out the page cache first; an agent
that does not freeze makes it a power cut), and crash recovery brings it back consistent
with its binary log only if every table written is crash-safe and two-phase committed
with the binlog (InnoDB), redo logging is on, and the durability settings survive that
kind of crash. Galera pauses the node already at BACKUP STAGE BLOCK_DDL, so there is
nothing to gain there. check reports the verdict; the facts and their sources are in
docs/servers.md, "Snapshots without a commit block".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from quiesce.server import db, serverinfo
from quiesce.server.serverinfo import MARIADB, Server

# The server's own schemas. MariaDB's non-transactional Aria tables there (help_*,
# column_stats, index_stats, table_stats) are written only by installs, upgrades and
# ANALYZE ... PERSISTENT FOR, whose write locks BACKUP STAGE FLUSH blocks; the CSV log
# tables count only where the server logs to them (see table_logging).
SYSTEM_SCHEMAS = ("mysql", "sys", "information_schema", "performance_schema")
# information_schema.TABLES lists only the tables the account holds a privilege on; any of
# these ON *.* shows them all (SHOW VIEW reads no data).
SEES_EVERY_TABLE = frozenset({"SHOW VIEW", "SELECT", "ALL"})
# How many of the tables that disqualify a server are named.
NAMED = 5
# The engine scan opens every table's definition on MariaDB: bounded, a server with very
# many tables then simply does not qualify this time.
SCAN_LIMIT_S = 10.0

UNSAFE_TABLES = ("SELECT TABLE_SCHEMA AS db, TABLE_NAME AS name, ENGINE AS engine "
                 "FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND ENGINE IS NOT NULL "
                 "AND ENGINE <> 'InnoDB' AND TABLE_SCHEMA NOT IN (%s) ORDER BY 1, 2 LIMIT %d"
                 % (", ".join("'%s'" % s for s in SYSTEM_SCHEMAS), NAMED + 1))
SETTINGS = ("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit AS flush, @@GLOBAL.sync_binlog AS sync_binlog, "
            "@@GLOBAL.log_bin AS log_bin, @@GLOBAL.log_output AS log_output, @@GLOBAL.general_log AS general_log, "
            "@@GLOBAL.slow_query_log AS slow_query_log")


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the verdict rests on, read from the server."""

    server: Server
    galera: bool
    log_bin: bool
    flush: Optional[int]
    sync_binlog: Optional[int]
    redo_enabled: Optional[bool]     # MySQL's ALTER INSTANCE DISABLE INNODB REDO_LOG; None: not MySQL
    table_logging: bool              # general or slow log written to the CSV log tables
    unsafe_tables: Tuple[str, ...]   # schema.table (engine), at most NAMED + 1
    scan_problem: Optional[str] = None
    sees_every_table: bool = True


def _on(value: Any) -> bool:
    return str(value).upper() in ("1", "ON")


def _bounded(server: Server, statement: str) -> str:
    if server.flavour == MARIADB:
        return "SET STATEMENT max_statement_time = %g FOR %s" % (SCAN_LIMIT_S, statement)
    return statement.replace("SELECT ", "SELECT /*+ MAX_EXECUTION_TIME(%d) */ " % (SCAN_LIMIT_S * 1000), 1)


def read_facts(conn: db.Connection, server: Server) -> Facts:
    """Every fact the verdict needs, in a few bounded statements."""
    row = conn.query(SETTINGS)[0]
    galera = serverinfo.is_galera_node(conn.query(serverinfo.WSREP_ON_STATEMENT))
    redo: Optional[bool] = None
    if server.flavour != MARIADB and server.version >= (8, 0, 21):
        rows = conn.query("SHOW GLOBAL STATUS LIKE 'Innodb_redo_log_enabled'")
        redo = _on(list(rows[0].values())[1]) if rows else None
    logging_to_tables = "TABLE" in str(row["log_output"]).upper().split(",")
    grants = [str(list(r.values())[0]) for r in conn.query("SHOW GRANTS FOR CURRENT_USER()")]
    sees = bool(SEES_EVERY_TABLE & serverinfo.global_privileges(grants))
    unsafe: Tuple[str, ...] = ()
    problem = None
    try:
        unsafe = tuple("%s.%s (%s)" % (r["db"], r["name"], r["engine"])
                       for r in conn.query(_bounded(server, UNSAFE_TABLES)))
    except db.DbError as exc:
        problem = "the tables' engines could not be listed within %g s (%s)" % (SCAN_LIMIT_S, exc.message)
    return Facts(server=server, galera=galera, log_bin=_on(row["log_bin"]),
                 flush=serverinfo.setting_int(row["flush"]), sync_binlog=serverinfo.setting_int(row["sync_binlog"]),
                 redo_enabled=redo,
                 table_logging=logging_to_tables and (_on(row["general_log"]) or _on(row["slow_query_log"])),
                 unsafe_tables=unsafe, scan_problem=problem, sees_every_table=sees)


def _supported(server: Server) -> bool:
    if server.flavour == MARIADB:
        return server.version >= (10, 6, 0)
    return server.version >= (8, 0, 0)


def reasons_against(facts: Facts, freezes_filesystems: bool) -> List[str]:
    """Why an image taken with commits running would not be consistent; [] when it would.

    freezes_filesystems: the agent freezes them (VMware Tools, qemu-ga, Azure), so the image
    is that of a mysqld crash, which a flush at commit to the OS (flush = 2) survives; else
    a power cut, which only flush 1 or 3, and sync_binlog = 1 with a binlog, survive.
    """
    server = facts.server
    reasons = []
    if not _supported(server):
        reasons.append("%s is older than MariaDB 10.6 or MySQL 8.0 (no crash-safe DDL)" % server.label)
    if facts.galera:
        reasons.append("a Galera node pauses at BACKUP STAGE BLOCK_DDL already")
    if facts.redo_enabled is False:
        reasons.append("InnoDB redo logging is disabled (ALTER INSTANCE DISABLE INNODB REDO_LOG)")
    if facts.scan_problem:
        reasons.append(facts.scan_problem)
    if not facts.sees_every_table:
        reasons.append("the account sees only the tables it holds privileges on, so tables in other engines may "
                       "be missed (fix: GRANT SHOW VIEW ON *.* TO the account)")
    if facts.unsafe_tables:
        named = ", ".join(facts.unsafe_tables[:NAMED]) + (", ..." if len(facts.unsafe_tables) > NAMED else "")
        reasons.append("tables in engines that are not crash-safe with the binary log: %s" % named)
    if facts.table_logging:
        reasons.append("the general or slow query log is written to tables (log_output = TABLE)")
    safe_flush = (1, 2, 3) if freezes_filesystems else (1, 3)
    if facts.flush not in safe_flush:
        reasons.append("innodb_flush_log_at_trx_commit = %s (needs %s%s)" % (
            facts.flush, " or ".join(str(f) for f in safe_flush),
            "" if freezes_filesystems else " where the agent does not freeze the filesystems"))
    if facts.log_bin and not freezes_filesystems and facts.sync_binlog != 1:
        reasons.append("sync_binlog = %s (needs 1 where the agent does not freeze the filesystems)"
                       % facts.sync_binlog)
    return reasons


def saved_ms(entries: Sequence[Dict[str, Any]]) -> Optional[Tuple[float, int]]:
    """(median held_ms, count) of the recorded snapshots that blocked commits: what a lock
    that blocks only DDL would not have blocked (the filesystem freeze still holds writers)."""
    held = sorted(float(e["held_ms"]) for e in entries
                  if e.get("ok") and isinstance(e.get("held_ms"), (int, float)) and
                  set(e.get("lock") or ()) & {serverinfo.FTWRL, serverinfo.BACKUP_STAGE})
    if not held:
        return None
    middle = len(held) // 2
    median = held[middle] if len(held) % 2 else (held[middle - 1] + held[middle]) / 2
    return median, len(held)
