"""quiesce restore-plan: ready-to-run steps for a server restored from a snapshot.

Three workflows, each built from the snapshot's position file alone (flavour, version,
coordinates, identity), so the plan can be printed anywhere:

- --as-replica-of HOST[:PORT]: make the restored server a replica (GTID or binlog
  file/position), with the identity fixes a clone needs; --apply runs it on this server.
- --pitr-until DATETIME|GTID|FILE:POS: the binlog replay from the snapshot's position.
- --galera: the grastate.dat that lets a restored Galera node rejoin by IST.

The source's password never appears on a command line nor in the printed plan: the plan
shows a placeholder, and --apply reads user and password from an option file of mode
0600 (--source-credentials, [client] user= password=) and puts them only into the
CHANGE MASTER statement it sends to this server.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from quiesce.base import optionfile
from quiesce.base.config import Settings, Target
from quiesce.base.errors import ConfigError, ConnectError, RestoreError
from quiesce.records import positionfile
from quiesce.server import db, locking, serverinfo
from quiesce.server import restored
from quiesce.server.serverinfo import MARIADB, Server, sql_string

PASSWORD_TOKEN = "\x00source-password\x00"
REPLICA_START_WAIT = 30.0

Plan = collections.namedtuple("Plan", "title steps statements check")


# -- pure logic -------------------------------------------------------------------------

def recorded_server(position: Dict[str, Any]) -> Server:
    server = serverinfo.identify(str(position.get("server_version") or "0.0.0"))
    if position.get("flavour") and server.flavour != position["flavour"]:
        server = Server(str(position["flavour"]), server.version, server.version_string)
    return server


def parse_host_port(text: str) -> Tuple[str, int]:
    match = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$", text) or re.match(r"^([^:\s]+)(?::(\d+))?$", text)
    if not match:
        raise ConfigError("--as-replica-of %r is not HOST or HOST:PORT" % text)
    port = int(match.group(2) or 3306)
    if not 0 < port < 65536:
        raise ConfigError("--as-replica-of %r: port must be 1-65535" % text)
    return match.group(1), port


def source_coordinates(position: Dict[str, Any], host: str, port: int) -> Tuple[Dict[str, Any], str]:
    """(coordinates, where they come from) to replicate from host:port.

    A snapshot of a replica holds its source's coordinates too: when host:port is that
    source, those are the ones to start from.
    """
    channels = position.get("replica") or []
    for channel in channels:
        if _same_host(channel.get("source_host"), host) and int(channel.get("source_port") or 3306) == port:
            return ({"binlog_file": channel.get("source_log_file"),
                     "binlog_position": channel.get("source_log_position"), "gtid": channel.get("gtid")},
                    "the snapshot's replication coordinates from %s:%d (it was taken on a replica of it)"
                    % (host, port))
    return ({"binlog_file": position.get("binlog_file"), "binlog_position": position.get("binlog_position"),
             "gtid": position.get("gtid")}, "the snapshot's own binlog coordinates")


def _same_host(recorded: Any, given: str) -> bool:
    # Text only: a name lookup here could wait on DNS, and two names of one host are for the
    # user to settle (the refusal below names what was recorded).
    return str(recorded or "").lower() == given.lower()


def unrecorded_source(position: Dict[str, Any], host: str, port: int) -> Optional[str]:
    """Why host:port may not be what the user means, for a snapshot of a replica, else None.

    The snapshot of a replica holds its source's coordinates and its own. A host that is
    neither that source, as recorded, nor the snapshot's own server may be the source under
    another name (an address), where the replica's own file and position mean nothing.
    """
    channels = position.get("replica") or []
    if not channels or _same_host(position.get("hostname"), host):
        return None
    if source_coordinates(position, host, port)[1] != "the snapshot's own binlog coordinates":
        return None
    recorded = ", ".join("%s:%s" % (c.get("source_host"), c.get("source_port") or 3306) for c in channels)
    return ("%s:%d is neither the source the snapshot recorded (%s) nor the snapshot's own server (%s)"
            % (host, port, recorded, position.get("hostname") or "?"))


def use_gtid(mode: str, coordinates: Dict[str, Any]) -> bool:
    if mode == "gtid" and not coordinates.get("gtid"):
        raise RestoreError("--replication gtid: the snapshot recorded no GTID state; fix: use --replication position")
    if mode == "position" and not coordinates.get("binlog_file"):
        raise RestoreError("--replication position: the snapshot recorded no binlog coordinates (binary log off)")
    if mode == "auto":
        if not coordinates.get("gtid") and not coordinates.get("binlog_file"):
            raise RestoreError("the snapshot recorded no binlog coordinates (binary log off on the original): "
                               "there is nowhere to start replicating from")
        return bool(coordinates.get("gtid"))
    return mode == "gtid"


def replica_statements(server: Server, host: str, port: int, user: Optional[str], coordinates: Dict[str, Any],
                       gtid: bool, new_server_id: Optional[int], escapes: bool = True) -> List[str]:
    """SQL, in order, for this server to replicate from host:port (password as PASSWORD_TOKEN).

    escapes: whether the session that runs them reads backslashes as escapes (sql_mode)."""
    def quoted(text: Any) -> str:
        return sql_string(text, escapes)

    # Without a chosen id the plan shows where it goes: a clone must not keep the original's.
    statements = ["SET GLOBAL server_id = %s" % (new_server_id if new_server_id is not None else "<new-server-id>")]
    user_sql = quoted(user) if user else "'<replication-user>'"
    password_sql = PASSWORD_TOKEN
    if server.flavour == MARIADB:
        statements += ["STOP SLAVE", "RESET SLAVE ALL"]
        if gtid:
            statements.append("SET GLOBAL gtid_slave_pos = %s" % quoted(coordinates["gtid"]))
            where = "MASTER_USE_GTID=slave_pos"
        else:
            where = "MASTER_LOG_FILE=%s, MASTER_LOG_POS=%d, MASTER_USE_GTID=no" % (
                quoted(coordinates["binlog_file"]), int(coordinates["binlog_position"]))
        statements.append("CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%d, MASTER_USER=%s, MASTER_PASSWORD=%s, %s"
                          % (quoted(host), port, user_sql, password_sql, where))
        statements.append("START SLAVE")
        return statements
    new_names = server.version >= (8, 0, 23)
    noun = "REPLICA" if server.version >= (8, 0, 22) else "SLAVE"
    statements += ["STOP %s" % noun, "RESET %s ALL" % noun]
    word = "SOURCE" if new_names else "MASTER"
    # MySQL 8's default caching_sha2_password authenticates a replica only over TLS (or with
    # the source's public key): ask for TLS, which the server sets up by itself.
    where = "%s_SSL=1, " % word
    if gtid:
        statements.append("RESET BINARY LOGS AND GTIDS" if server.version >= (8, 4, 0) else "RESET MASTER")
        statements.append("SET GLOBAL gtid_purged = %s" % quoted(re.sub(r"\s+", "", coordinates["gtid"])))
        where += "%s_AUTO_POSITION=1" % word
    else:
        where += "%s_LOG_FILE=%s, %s_LOG_POS=%d" % (word, quoted(coordinates["binlog_file"]), word,
                                                    int(coordinates["binlog_position"]))
    change = "CHANGE REPLICATION SOURCE TO" if new_names else "CHANGE MASTER TO"
    statements.append("%s %s_HOST=%s, %s_PORT=%d, %s_USER=%s, %s_PASSWORD=%s, %s"
                      % (change, word, quoted(host), word, port, word, user_sql, word, password_sql, where))
    statements.append("START %s" % noun)
    return statements


def replica_plan(position: Dict[str, Any], host: str, port: int, mode: str, user: Optional[str],
                 new_server_id: Optional[int], credentials_file: Optional[str]) -> Plan:
    server = recorded_server(position)
    coordinates, origin = source_coordinates(position, host, port)
    gtid = use_gtid(mode, coordinates)
    surprise = unrecorded_source(position, host, port)
    if surprise and not gtid:
        first = (position.get("replica") or [{}])[0]
        raise RestoreError("%s: the plan would start from the snapshot's own binlog file and position, which mean "
                           "nothing on another server; fix: --as-replica-of %s:%s to follow the recorded source, "
                           "--as-replica-of %s to replicate from the snapshot's own server, or --replication gtid"
                           % (surprise, first.get("source_host"), first.get("source_port") or 3306,
                              position.get("hostname")))
    at = ("GTID %s" % coordinates["gtid"] if gtid
          else "%s:%s" % (coordinates["binlog_file"], coordinates["binlog_position"]))
    steps = ["Start from %s: %s." % (origin, at)]
    if surprise:
        steps.append("Warning: %s; GTIDs name the same transactions on every server of the topology, so the "
                     "snapshot's GTID state is used." % surprise)
    old_id = position.get("server_id")
    group = "mariadbd" if server.flavour == MARIADB else "mysqld"
    steps.append("Identity: a clone keeps the original's server_id (%s), and a replica skips every event that "
                 "carries its own server_id; give it one no other server of the topology uses, now (SET GLOBAL "
                 "below) and for good (server_id = %s under [%s] in the server's configuration)."
                 % (old_id if old_id is not None else "?", new_server_id if new_server_id is not None else "N",
                    group))
    if server.flavour != MARIADB:
        steps.append("Identity: stop the server, delete auto.cnf in its data directory (%s) and start it again: the "
                     "clone has the original's server_uuid (%s) in that file, and a source refuses a replica with "
                     "its own UUID (\"master and slave have equal MySQL server UUIDs\"); the server writes a new "
                     "one at start-up." % (position.get("datadir") or "the datadir", position.get("server_uuid")))
    if credentials_file:
        steps.append("The source account's user and password come from %s (mode 0600); the password is shown "
                     "masked here." % credentials_file)
    else:
        steps.append("The source needs an account with REPLICATION SLAVE; put its name below, and type its "
                     "password only into the mariadb/mysql client (or use --apply --source-credentials FILE).")
    steps.append("Run on this server, as root in the %s client:" % ("mariadb" if server.flavour == MARIADB else "mysql"))
    statements = replica_statements(server, host, port, user, coordinates, gtid, new_server_id)
    check = ("SHOW %s STATUS: %s_IO_Running and %s_SQL_Running are Yes, Seconds_Behind_%s falls to 0."
             % (("SLAVE", "Slave", "Slave", "Master") if server.flavour == MARIADB or server.version < (8, 0, 22)
                else ("REPLICA", "Replica", "Replica", "Source")))
    return Plan("Make this server a replica of %s:%d" % (host, port), steps, statements, check)


TARGET_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d)?$")
TARGET_MYSQL_GTID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}:")
TARGET_MARIADB_GTID = re.compile(r"^\d+-\d+-\d+(,\d+-\d+-\d+)*$")
TARGET_FILE_POS = re.compile(r"^([^\s:/]+):(\d+)$")


def parse_target(text: str) -> Tuple[str, Any]:
    """("datetime", "YYYY-MM-DD hh:mm:ss") | ("gtid", text) | ("position", (file, pos))."""
    text = text.strip()
    if TARGET_DATETIME.match(text):
        return "datetime", text.replace("T", " ") + (":00" if text.count(":") == 1 else "")
    if TARGET_MYSQL_GTID.match(text) or TARGET_MARIADB_GTID.match(text):
        return "gtid", re.sub(r"\s+", "", text)
    match = TARGET_FILE_POS.match(text)
    if match:
        return "position", (match.group(1), int(match.group(2)))
    raise ConfigError("--pitr-until %r is not a DATETIME (YYYY-MM-DD hh:mm:ss), a GTID (0-1-100 or uuid:1-100) nor "
                      "FILE:POS (binlog.000042:1234)" % text)


def mysql_gtid_upto(gtid: str) -> str:
    """MySQL "uuid:N" (one transaction) means "up to N": uuid:1-N. A set is taken as it is."""
    match = re.match(r"^([0-9a-fA-F-]{36}):(\d+)$", gtid)
    return "%s:1-%s" % (match.group(1), match.group(2)) if match else gtid


def binlog_files_between(names: Sequence[str], first: str, last: Optional[str] = None) -> List[str]:
    """The binlog files from first (to last) among a directory's names, in order."""
    stem = first.rsplit(".", 1)[0]
    pattern = re.compile(r"^%s\.\d+$" % re.escape(stem))
    files = sorted(n for n in names if pattern.match(n) and n >= first and (last is None or n <= last))
    if not files or files[0] != first:
        raise RestoreError("binlog %s is not among the binary logs found; fix: point --binlog-dir at the "
                           "original's binary logs (from the snapshot's %s on)" % (first, first))
    if last is not None and files[-1] != last:
        raise RestoreError("binlog %s is not among the binary logs found; fix: point --binlog-dir at the "
                           "original's binary logs" % last)
    return files


def client_command(server: Server, target: Target) -> List[str]:
    modern = server.flavour == MARIADB and server.version >= (10, 5, 0)
    command = ["mariadb" if modern else "mysql"]
    if target.host:
        command += ["--host=%s" % target.host, "--port=%d" % target.port]
    elif target.socket:
        command.append("--socket=%s" % target.socket)
    command.append("--user=%s" % target.user)
    if target.password:
        command.append("--password")  # prompts: never the password itself
    return command


def pitr_plan(position: Dict[str, Any], until: str, binlog_dir: str, names: Sequence[str], target: Target) -> Plan:
    server = recorded_server(position)
    if not position.get("binlog_file"):
        raise RestoreError("the snapshot recorded no binlog coordinates (binary log off): nothing to replay from")
    kind, value = parse_target(until)
    mariadb = server.flavour == MARIADB
    tool = "mariadb-binlog" if mariadb and server.version >= (10, 5, 0) else "mysqlbinlog"
    args = [tool]
    last = None
    if kind == "gtid":
        if mariadb:
            if not position.get("gtid") or server.version < (10, 8, 0):
                raise RestoreError("replaying to a GTID needs the snapshot's GTID and mariadb-binlog 10.8 or later; "
                                   "fix: give --pitr-until as FILE:POS or a DATETIME")
            args += ["--start-position=%s" % position["gtid"], "--stop-position=%s" % value]
        else:
            args += ["--start-position=%d" % int(position["binlog_position"]),
                     "--include-gtids=%s" % mysql_gtid_upto(value)]
    else:
        args.append("--start-position=%d" % int(position["binlog_position"]))
        if kind == "datetime":
            args.append("--stop-datetime=%s" % value)
        else:
            last, stop = value
            args.append("--stop-position=%d" % stop)
    files = binlog_files_between(names, position["binlog_file"], last)
    args += [os.path.join(binlog_dir, name) for name in files]
    command = " ".join(shlex.quote(a) for a in args) + " | " + " ".join(
        shlex.quote(a) for a in client_command(server, target))
    steps = ["Restore the snapshot (taken %s at %s:%s, GTID %s), start the server and check it: quiesce verify."
             % (position.get("locked_at"), position["binlog_file"], position["binlog_position"],
                position.get("gtid") or "none"),
             "Keep applications away from it until the replay is done.",
             "The original's binary logs must be readable here, in %s (copy them over and use --binlog-dir); "
             "they are read from the snapshot's position on." % binlog_dir]
    if kind == "datetime":
        steps.append("%s reads the DATETIME in this machine's time zone (TZ=%s)."
                     % (tool, os.environ.get("TZ") or "system default"))
    steps.append("Replay, up to and including %s:" % until)
    variable = "gtid_binlog_pos" if mariadb else "gtid_executed"
    if kind == "gtid":
        check = "SELECT @@GLOBAL.%s -- expect %s" % (variable, value if mariadb else mysql_gtid_upto(value))
    elif kind == "position" and mariadb:
        check = ("SELECT @@GLOBAL.gtid_binlog_pos -- expect what SELECT BINLOG_GTID_POS(%s, %d) says on the "
                 "original" % (sql_string(value[0]), value[1]))
    else:
        check = "SELECT @@GLOBAL.%s -- the GTID state reached" % variable
    return Plan("Point-in-time recovery up to %s" % until, steps, [command], check)


GALERA_UUID = re.compile(r"\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def galera_plan(position: Dict[str, Any]) -> Plan:
    galera = position.get("galera")
    if not galera or not galera.get("uuid") or galera.get("seqno") is None:
        raise RestoreError("the position file holds no Galera state: the snapshot was not taken on a Galera node")
    # Both go into a heredoc that a root shell runs: nothing else may end it.
    if not isinstance(galera["uuid"], str) or not GALERA_UUID.match(galera["uuid"]):
        raise RestoreError("the position file's Galera uuid %r is not a UUID; fix: pass the position file the "
                           "snapshot holds with --position-file" % (galera["uuid"],))
    if isinstance(galera["seqno"], bool) or not isinstance(galera["seqno"], int):
        raise RestoreError("the position file's Galera seqno %r is not a number; fix: pass the position file the "
                           "snapshot holds with --position-file" % (galera["seqno"],))
    datadir = str(position.get("datadir") or "/var/lib/mysql")
    path = os.path.join(datadir, "grastate.dat")
    content = ("# GALERA saved state\nversion: 2.1\nuuid:    %s\nseqno:   %d\nsafe_to_bootstrap: 0\n"
               % (galera["uuid"], int(galera["seqno"])))
    steps = ["Stop the restored server (systemctl stop mariadb).",
             "Write its saved Galera state: the snapshot was taken with the node paused at seqno %d of cluster %s."
             % (int(galera["seqno"]), galera["uuid"]),
             "Start it (systemctl start mariadb): it joins and receives only the writesets after seqno %d by IST "
             "when a donor's gcache still holds them, else a full state transfer (SST)." % int(galera["seqno"])]
    commands = ["cat > %s <<'EOF'\n%sEOF" % (shlex.quote(path), content),
                # The server rewrites the file: it must belong to the server's account, as its datadir does.
                "chown --reference=%s %s" % (shlex.quote(datadir), shlex.quote(path))]
    return Plan("Rejoin the Galera cluster %s by IST" % galera["uuid"], steps, commands,
                "SHOW STATUS LIKE 'wsrep_local_state_comment' -- Synced")


def render(plan: Plan, sql: bool, password_shown: str) -> str:
    lines = ["# %s" % plan.title]
    for number, step in enumerate(plan.steps, 1):
        lines.append("# %d. %s" % (number, step))
    for statement in plan.statements:
        text = statement.replace(PASSWORD_TOKEN, password_shown)
        lines.append(text + (";" if sql else ""))
    lines.append("# Check: %s" % plan.check)
    return "\n".join(lines) + "\n"


# -- running it -----------------------------------------------------------------------

def _credentials(path: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    if not path:
        return None, None
    values = optionfile.read_credentials(path)  # refuses a file with a password others can read
    if not values.get("user") or not values.get("password"):
        raise ConfigError("source-credentials file %s needs user and password under [client]" % path)
    return values["user"], values["password"]


def _new_server_id(conn: db.Connection, position: Dict[str, Any], requested: Optional[int]) -> Optional[int]:
    current = int(conn.query("SELECT @@GLOBAL.server_id AS id")[0]["id"])
    if requested is not None:
        return None if requested == current else requested
    if position.get("server_id") is not None and current == int(position["server_id"]):
        raise RestoreError("this server still has the original's server_id %d, so as its replica it would skip "
                           "every event; fix: pass --server-id N (unused in the topology)" % current)
    return None


def _check_uuid(conn: db.Connection, server: Server, position: Dict[str, Any]) -> None:
    if server.flavour == MARIADB or not position.get("server_uuid"):
        return
    current = conn.query("SELECT @@GLOBAL.server_uuid AS uuid")[0]["uuid"]
    if current == position["server_uuid"]:
        raise RestoreError("this server still has the original's server_uuid %s; fix: stop it, delete auto.cnf in "
                           "its data directory, start it, then apply again" % current)


def check_restored_copy(conn: db.Connection, server: Server, position: Dict[str, Any], target: Target) -> None:
    """Refuse unless this server is a copy restored from the snapshot the position file belongs to.

    The plan starts replication from the file's coordinates: from any other data it would
    apply again (or skip) transactions, and on the original it would reconfigure a live server.
    """
    started = restored.original_server(conn, position)
    if started:
        raise RestoreError("refused: this server has been running since %s, before the snapshot was taken (%s): "
                           "it is not a copy restored from it; fix: run restore-plan on the server restored from "
                           "the snapshot" % (started, position.get("locked_at")))
    mismatches = restored.snapshot_mismatches(conn, server, position, target.is_local)
    if mismatches:
        # The index check names its own fix; the others share one.
        data = [m for m in mismatches if not m.startswith("binlog index check:")]
        raise RestoreError("refused: this server's data does not match the position file %s: %s%s"
                           % (target.position_file, "; ".join(mismatches),
                              "; fix: restore from a snapshot taken while quiesce held the lock (freeze exit 0) and "
                              "pass the position file that snapshot holds with --position-file; quiesce verify "
                              "shows every check" if data else ""))


def check_galera_target(target: Target, settings: Settings, position: Dict[str, Any]) -> None:
    """--galera: refuse when the server answers and is not the snapshot's copy.

    The restored node normally stays stopped until its grastate.dat is written (started
    first, it would ask for a full state transfer), so a server that does not answer only
    earns a warning.
    """
    try:
        conn = locking.connect(target, settings)
    except ConnectError as exc:
        sys.stderr.write("WARN  the server at %s does not answer (%s): the data was not compared with the position "
                         "file; to compare it first, start the restored server once with wsrep_provider=none, run "
                         "quiesce verify, and stop it\n" % (target.address, exc))
        return
    try:
        check_restored_copy(conn, locking.identify_server(conn), position, target)
    except db.DbError as exc:
        raise RestoreError("cannot compare the server with the position file: %s; fix: check the account's "
                           "privileges (BINLOG MONITOR, or REPLICATION CLIENT on MySQL)" % exc)
    finally:
        conn.close()


def _confirm(address: str, count: int) -> None:
    if not sys.stdin.isatty():
        raise ConfigError("--apply asks before changing the server, but there is no terminal; fix: add --yes")
    sys.stdout.write("Apply these %d statements to the server at %s? [y/N] " % (count, address))
    sys.stdout.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise RestoreError("not applied: the answer was not yes")


def _wait_replica(conn: db.Connection, server: Server, password: str) -> Dict[str, Any]:
    deadline = time.monotonic() + REPLICA_START_WAIT
    while True:
        rows = conn.query(serverinfo.replica_status_statement(server))
        channels = serverinfo.replica_channels(rows)
        if channels and channels[0]["sql_running"] and channels[0]["io_running"] == "Yes":
            return channels[0]
        row = rows[0] if rows else {}
        error = row.get("Last_IO_Error") or row.get("Last_SQL_Error")
        if time.monotonic() >= deadline or (error and channels and not channels[0]["sql_running"]):
            raise RestoreError("replication did not start within %.0f s: %s; fix: see SHOW SLAVE STATUS"
                               % (REPLICA_START_WAIT, str(error or "threads not running").replace(password, "***")))
        time.sleep(0.2)


def _same_family(recorded: Server, current: Server) -> bool:
    """MySQL and Percona Server take the same replication statements; MariaDB its own."""
    return (recorded.flavour == MARIADB) == (current.flavour == MARIADB)


def statements_for(server: Server, position: Dict[str, Any], host: str, port: int, mode: str, user: str,
                   new_id: Optional[int], escapes: bool) -> List[str]:
    """The replica statements for the server being changed, which may run a newer version than
    the snapshot's (an 8.0 snapshot restored on 8.4 has no RESET MASTER any more)."""
    recorded = recorded_server(position)
    if not _same_family(recorded, server):
        raise RestoreError("the snapshot is from %s, this server is %s: its statements do not apply here; fix: "
                           "restore the snapshot onto the same kind of server" % (recorded.label, server.label))
    if recorded.version != server.version:
        print("WARN  the snapshot was taken on %s, this server is %s: the statements are built for this server"
              % (recorded.label, server.label))
    coordinates, _origin = source_coordinates(position, host, port)
    statements = replica_statements(server, host, port, user, coordinates, use_gtid(mode, coordinates), new_id,
                                    escapes)
    return [s for s in statements if not (new_id is None and s.startswith("SET GLOBAL server_id"))]


def _statement_error(exc: db.DbError, had_password: bool) -> str:
    """The server's message, or, for a statement that carried the password, a stand-in for it:
    a syntax error quotes the statement from the point it stopped understanding, so any
    part of the password (cut, escaped, after a quote) can be in it."""
    if not had_password:
        return exc.message
    return ("the server refused it with error %s (its message is not shown: it may quote part of the password); "
            "fix: check the source host, user and password in --source-credentials" % (exc.errno or "?"))


def apply(target: Target, settings: Settings, position: Dict[str, Any], host: str, port: int, mode: str,
          user: str, password: str, requested_server_id: Optional[int], confirmed: bool) -> None:
    conn = locking.connect(target, settings)
    try:
        _apply(conn, target, position, host, port, mode, user, password, requested_server_id, confirmed)
    except db.DbError as exc:
        # The statements that carry the password report their own errors, masked, in _apply.
        raise RestoreError("restore-plan --apply stopped: %s; fix: connect as an account that may read and "
                           "change replication (root, or one with SUPER) to a running server, then apply again" % str(exc).replace(password, "***"))
    finally:
        conn.close()


def _apply(conn: db.Connection, target: Target, position: Dict[str, Any], host: str, port: int, mode: str,
           user: str, password: str, requested_server_id: Optional[int], confirmed: bool) -> None:
    server = locking.identify_server(conn)
    check_restored_copy(conn, server, position, target)
    _check_uuid(conn, server, position)
    new_id = _new_server_id(conn, position, requested_server_id)
    escapes = serverinfo.backslash_escapes(conn.query(serverinfo.SQL_MODE_STATEMENT)[0]["sql_mode"])
    statements = statements_for(server, position, host, port, mode, user, new_id, escapes)
    if not confirmed:
        _confirm(target.address, len(statements))
    for statement in statements:
        shown = statement.replace(PASSWORD_TOKEN, "'***'")
        try:
            conn.execute(statement.replace(PASSWORD_TOKEN, serverinfo.sql_string(password, escapes)))
        except db.DbError as exc:
            raise RestoreError("%s failed: %s" % (shown, _statement_error(exc, PASSWORD_TOKEN in statement)))
        print("ok    %s" % shown)
    channel = _wait_replica(conn, server, password)
    print("ok    replicating from %s:%s (IO and SQL threads running)" % (channel["source_host"],
                                                                     channel["source_port"]))
    if new_id is not None:
        print("WARN  server_id %d lasts until the server restarts: set server_id = %d in its configuration"
              % (new_id, new_id))


def run(settings: Settings) -> int:
    options = settings.restore
    chosen = [name for name in ("as_replica_of", "pitr_until", "galera") if options[name]]
    if len(chosen) != 1:
        raise ConfigError("restore-plan needs exactly one of --as-replica-of HOST[:PORT], --pitr-until "
                          "DATETIME|GTID|FILE:POS or --galera")
    if options["apply"] and not options["as_replica_of"]:
        raise ConfigError("--apply runs only the replica plan (--as-replica-of); the others are printed only")
    if len(settings.targets) != 1:
        raise ConfigError("restore-plan works on one server: pass --socket/--host and --position-file for it")
    target = settings.targets[0]
    position = positionfile.load(target.position_file)
    if options["as_replica_of"]:
        host, port = parse_host_port(options["as_replica_of"])
        user, password = _credentials(options["source_credentials"])
        if options["apply"] and password is None:
            raise ConfigError("--apply needs the source account: --source-credentials FILE (mode 0600, [client] "
                              "user = ..., password = ...)")
        plan = replica_plan(position, host, port, options["replication"], user, options["server_id"],
                            options["source_credentials"])
        sys.stdout.write(render(plan, True, "'***'" if password else "'<password>'"))
        sys.stdout.flush()
        if options["apply"]:
            apply(target, settings, position, host, port, options["replication"], str(user), str(password),
                  options["server_id"], options["yes"])
        return 0
    if options["pitr_until"]:
        directory = options["binlog_dir"] or str(position.get("datadir") or "")
        try:
            names = os.listdir(directory)
        except OSError as exc:
            raise RestoreError("cannot read the binary logs in %s (%s); fix: point --binlog-dir at the original's "
                               "binary logs" % (directory, exc.strerror))
        plan = pitr_plan(position, options["pitr_until"], directory, names, target)
    else:
        plan = galera_plan(position)
        check_galera_target(target, settings, position)
    sys.stdout.write(render(plan, False, ""))
    return 0
