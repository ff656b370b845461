"""Restore logic (identity, verify's comparisons, restore plans), fed with what servers return.

MariaDB paths are also proven against real servers in tests/integration/test_restore.py;
the MySQL statement and row shapes here are those MySQL 8.0 and 8.4 produce.
"""

import pytest

from quiesce.base.config import Target
from quiesce.base.errors import ConfigError, RestoreError
from quiesce.commands import restore_plan as rp
from quiesce.records import positionfile
from quiesce.server import restored as vf
from quiesce.server import serverinfo as si
from tests.unit.fakedb import FakeServer
from tests.unit.fakedb import error as fakedb_error

MARIADB_1011 = si.identify("10.11.6-MariaDB-0+deb12u1-log", "Debian 12")
MYSQL_84 = si.identify("8.4.3", "MySQL Community Server - GPL")
MYSQL_8020 = si.identify("8.0.20", "MySQL Community Server - GPL")
UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
TARGET = Target(name="default", socket="/run/mysqld/mysqld.sock", host=None, port=3306, user="root",
                password=None, position_file="/var/lib/quiesce/position.json")


def _position(**changes):
    position = {"binlog_file": "binlog.000003", "binlog_position": 1422, "gtid": "0-1-7", "flavour": "mariadb",
                "server_version": "10.11.6-MariaDB-0+deb12u1-log", "server_id": 1, "server_uuid": None,
                "hostname": "db1", "datadir": "/var/lib/mysql/", "replica": None, "galera": None,
                "locked_at": "2026-11-30T12:00:00.000Z"}
    position.update(changes)
    return position


MYSQL_POSITION = _position(flavour="mysql", server_version="8.4.3", server_uuid=UUID, gtid=UUID + ":1-57",
                           binlog_file="mysql-bin.000012")


# -- identity in the position file ------------------------------------------------------

def test_identity_statement_asks_server_uuid_only_where_it_exists():
    assert "server_uuid" not in si.identity_statement(MARIADB_1011)
    assert "@@GLOBAL.server_uuid AS server_uuid" in si.identity_statement(MYSQL_84)
    assert si.identity({"server_id": 3, "hostname": "db1"}) == {"server_id": 3, "server_uuid": None,
                                                                "hostname": "db1"}
    assert si.identity({"server_id": "3", "hostname": "db1", "server_uuid": UUID})["server_uuid"] == UUID


def test_galera_state_only_for_a_node_in_a_cluster():
    galera = [{"Variable_name": "wsrep_cluster_status", "Value": "Primary"},
              {"Variable_name": "wsrep_last_committed", "Value": "1234"},
              {"Variable_name": "wsrep_local_state_uuid", "Value": "6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a"}]
    assert si.galera_state(galera) == {"uuid": "6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a", "seqno": 1234,
                                       "cluster_status": "Primary"}
    # MariaDB built with wsrep but not in a cluster (Debian's 10.11), and MySQL (no wsrep at all).
    assert si.galera_state([{"Variable_name": "wsrep_cluster_status", "Value": "Disconnected"}]) is None
    assert si.galera_state([]) is None


# -- verify ---------------------------------------------------------------------------

def test_identity_mismatch_fails_and_another_hostname_only_warns():
    current = {"server_id": 1, "server_uuid": UUID, "hostname": "db1-restored"}
    failures, warnings = vf.identity_findings(MYSQL_POSITION, current)
    assert failures == [] and "written on host db1, this is db1-restored" in warnings[0]
    failures, _ = vf.identity_findings(MYSQL_POSITION, dict(current, server_uuid=UUID.replace("3e", "4f")))
    assert "server_uuid %s recorded" % UUID in failures[0]
    failures, _ = vf.identity_findings(_position(), {"server_id": 7, "server_uuid": None, "hostname": "db1"})
    assert failures == ["the position file is from another server: server_id 1 recorded, this server has 7; fix: "
                        "run verify on the server restored from the snapshot that holds this file, or pass that "
                        "snapshot's file with --position-file"]
    failures, warnings = vf.identity_findings({"binlog_file": "b.1"}, {"server_id": 1})
    assert failures == [] and "older quiesce" in warnings[0]


@pytest.mark.parametrize("size, problem", [(1422, None), (1500, "78 more than"), (1000, "422 short of")])
def test_binlog_must_end_exactly_at_the_recorded_position(size, problem):
    logs = [("binlog.000002", 900), ("binlog.000003", size), ("binlog.000004", 385)]
    found, later = vf.binlog_findings("binlog.000003", 1422, logs)
    assert later == ["binlog.000004"]
    assert (found is None) if problem is None else (problem in found)


def test_missing_binlog_file_is_named():
    found, _ = vf.binlog_findings("binlog.000003", 1422, [("binlog.000009", 385)])
    assert "binlog.000003 recorded in the position file is not on this server (it has binlog.000009)" in found


def test_index_entries_must_name_files_of_this_server():
    here = ["./binlog.000001", "/var/lib/mysql/binlog.000002", ""]
    assert vf.index_outsiders(here, "/var/lib/mysql/", ["/var/lib/mysql"]) == []
    # A copy at another path whose index still names the original's files.
    assert vf.index_outsiders(here, "/srv/restore/mysql/", ["/srv/restore/mysql"]) == [
        "/var/lib/mysql/binlog.000002"]
    # Binary logs kept out of the datadir by configuration, and a name that only starts alike.
    assert vf.index_outsiders(["/var/log/mysql/mariadb-bin.000007"], "/var/lib/mysql/", ["/var/log/mysql"]) == []
    assert vf.index_outsiders(["/var/lib/mysql-old/binlog.000001", "../binlog.000001"], "/var/lib/mysql/",
                              ["/var/lib/mysql"]) == ["/var/lib/mysql-old/binlog.000001", "../binlog.000001"]


def test_start_up_events_are_not_transactions():
    # A MySQL 8.4 binlog opened at start-up, then one transaction (SHOW BINLOG EVENTS rows).
    mysql = [{"Log_name": "mysql-bin.000013", "Pos": 4, "Event_type": "Format_desc", "End_log_pos": 127},
             {"Log_name": "mysql-bin.000013", "Pos": 127, "Event_type": "Previous_gtids", "End_log_pos": 198}]
    assert vf.transactions_in(mysql) == []
    mysql.append({"Log_name": "mysql-bin.000013", "Pos": 198, "Event_type": "Gtid", "End_log_pos": 277,
                  "Info": "SET @@SESSION.GTID_NEXT= '%s:58'" % UUID})
    assert [e["Event_type"] for e in vf.transactions_in(mysql)] == ["Gtid"]
    mariadb = [{"Event_type": "Format_desc"}, {"Event_type": "Gtid_list"}, {"Event_type": "Binlog_checkpoint"}]
    assert vf.transactions_in(mariadb) == []


def test_gtid_states_compare_as_sets():
    assert si.gtid_statement(MARIADB_1011) == "SELECT @@GLOBAL.gtid_binlog_pos AS gtid"
    assert si.gtid_statement(MYSQL_84) == "SELECT @@GLOBAL.gtid_executed AS gtid"
    other = "4f22fa47-71ca-11e1-9e33-c80aa9429562"
    # MySQL prints a multi-source set over several lines.
    assert vf.gtid_set("%s:1-57,\n%s:1-3" % (UUID, other)) == vf.gtid_set("%s:1-3,%s:1-57" % (other, UUID.upper()))
    assert vf.gtid_set("0-1-7,1-2-3") == vf.gtid_set("1-2-3,0-1-7")
    assert vf.gtid_set("0-1-7") != vf.gtid_set("0-1-8")
    assert vf.gtid_set(None) == vf.gtid_set("")


def test_error_log_source_by_flavour_and_version():
    assert not vf.uses_error_log_table(MARIADB_1011)
    assert vf.uses_error_log_table(MYSQL_84) and not vf.uses_error_log_table(si.identify("8.0.21"))
    assert vf.error_log_path({"log_error": "./db1.err", "datadir": "/var/lib/mysql/"}) == "/var/lib/mysql/./db1.err"
    assert vf.error_log_path({"log_error": "/var/log/mysql/error.log"}) == "/var/log/mysql/error.log"
    assert vf.error_log_path({"log_error": ""}) is None and vf.error_log_path({"log_error": "stderr"}) is None
    # SHOW GLOBAL STATUS LIKE 'Uptime' on MySQL 8.4.
    statement = vf.error_log_table_statement([{"Variable_name": "Uptime", "Value": "7"}])
    assert statement == ("SELECT LOGGED, ERROR_CODE, SUBSYSTEM, DATA FROM performance_schema.error_log WHERE "
                         "PRIO = 'Error' AND LOGGED >= NOW(6) - INTERVAL 8 SECOND ORDER BY LOGGED")


def test_only_errors_since_the_last_start_count():
    mariadb = ("2026-11-30 12:00:00 0 [Note] Starting MariaDB 10.11.6-MariaDB source revision x as process 10\n"
               "2026-11-30 12:00:01 0 [ERROR] mariadbd: Table './db/t' is marked as crashed\n"
               "2026-11-30 12:05:00 0 [Note] Starting MariaDB 10.11.6-MariaDB source revision x as process 99\n"
               "2026-11-30 12:05:00 0 [Note] InnoDB: Starting crash recovery from checkpoint LSN=44546\n"
               "2026-11-30 12:05:01 0 [Warning] 'proxies_priv' entry '@% root@vm' ignored\n")
    assert vf.errors_since_last_start(mariadb) == []
    mysql = ("2026-11-30T12:05:00.000000Z 0 [System] [MY-010116] [Server] /usr/sbin/mysqld (mysqld 8.4.3) "
             "starting as process 1234\n"
             "2026-11-30T12:05:01.000000Z 1 [ERROR] [MY-012592] [InnoDB] Operating system error number 2\n")
    assert vf.errors_since_last_start(mysql) == [mysql.splitlines()[1]]


def test_a_server_started_before_the_lock_is_the_original():
    locked = "2026-11-30T12:00:00.500Z"
    at_lock = 1796040000        # 2026-11-30T12:00:00Z
    # Started two seconds before the lock (Uptime counts whole seconds): the original.
    assert vf.running_since_before(at_lock + 100, 102, locked) == "2026-11-30T11:59:58.000Z"
    # Started in the lock's own second or later (a copy booted right away): never the original.
    assert vf.running_since_before(at_lock + 100, 100, locked) is None
    assert vf.running_since_before(at_lock + 100, 99, locked) is None
    assert vf.running_since_before(at_lock + 100, 101, locked) == "2026-11-30T11:59:59.000Z"
    # A position file without a lock time cannot tell.
    assert vf.running_since_before(at_lock, 5000, None) is None
    assert vf.running_since_before(at_lock, 5000, "yesterday") is None


def test_check_table_output_other_than_status_ok_is_a_problem():
    assert vf.check_table_problems([{"Table": "db.t", "Op": "check", "Msg_type": "status", "Msg_text": "OK"}]) == []
    rows = [{"Msg_type": "warning", "Msg_text": "1 client is using or hasn't closed the table properly"},
            {"Msg_type": "status", "Msg_text": "OK"}]
    assert vf.check_table_problems(rows) == ["warning: 1 client is using or hasn't closed the table properly"]
    assert vf.quote_name("we`ird") == "`we``ird`"


def test_load_position_names_a_missing_or_wrong_file(tmp_path):
    with pytest.raises(RestoreError, match="does not exist"):
        positionfile.load(str(tmp_path / "nope.json"))
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(RestoreError, match="is not a quiesce position file"):
        positionfile.load(str(tmp_path / "other.json"))


# -- restore-plan: replica --------------------------------------------------------------

def test_host_and_port():
    assert rp.parse_host_port("db1") == ("db1", 3306)
    assert rp.parse_host_port("10.0.0.5:3307") == ("10.0.0.5", 3307)
    assert rp.parse_host_port("[fd00::5]:3310") == ("fd00::5", 3310)
    with pytest.raises(ConfigError):
        rp.parse_host_port("db1:99999")


def test_mariadb_replica_by_gtid_and_by_position():
    plan = rp.replica_plan(_position(), "db1", 3306, "auto", "repl", 2, None)
    assert plan.statements == [
        "SET GLOBAL server_id = 2", "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL gtid_slave_pos = '0-1-7'",
        "CHANGE MASTER TO MASTER_HOST='db1', MASTER_PORT=3306, MASTER_USER='repl', MASTER_PASSWORD=%s, "
        "MASTER_USE_GTID=slave_pos" % rp.PASSWORD_TOKEN, "START SLAVE"]
    plan = rp.replica_plan(_position(), "db1", 3306, "position", None, None, None)
    assert plan.statements[-2] == ("CHANGE MASTER TO MASTER_HOST='db1', MASTER_PORT=3306, "
                                   "MASTER_USER='<replication-user>', MASTER_PASSWORD=%s, "
                                   "MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=1422, MASTER_USE_GTID=no"
                                   % rp.PASSWORD_TOKEN)
    text = rp.render(plan, True, "'<password>'")
    assert "MASTER_PASSWORD='<password>', MASTER_LOG_FILE" in text and rp.PASSWORD_TOKEN not in text
    assert "server_id = N under [mariadbd]" in text and "auto.cnf" not in text


def test_mysql_84_replica_by_gtid_removes_auto_cnf_and_sets_gtid_purged():
    plan = rp.replica_plan(MYSQL_POSITION, "db1", 3306, "auto", "repl", 12, None)
    assert plan.statements == [
        "SET GLOBAL server_id = 12", "STOP REPLICA", "RESET REPLICA ALL", "RESET BINARY LOGS AND GTIDS",
        "SET GLOBAL gtid_purged = '%s:1-57'" % UUID,
        "CHANGE REPLICATION SOURCE TO SOURCE_HOST='db1', SOURCE_PORT=3306, SOURCE_USER='repl', "
        "SOURCE_PASSWORD=%s, SOURCE_SSL=1, SOURCE_AUTO_POSITION=1" % rp.PASSWORD_TOKEN, "START REPLICA"]
    text = rp.render(plan, True, "'***'")
    assert "delete auto.cnf in its data directory (/var/lib/mysql/)" in text and UUID in text
    assert "equal MySQL server UUIDs" in text and "SHOW REPLICA STATUS" in text


def test_mysql_80_before_new_names_uses_master_statements():
    position = dict(MYSQL_POSITION, server_version="8.0.20")
    plan = rp.replica_plan(position, "db1", 3306, "position", "repl", None, None)
    assert plan.statements == [
        "SET GLOBAL server_id = <new-server-id>", "STOP SLAVE", "RESET SLAVE ALL",
        "CHANGE MASTER TO MASTER_HOST='db1', MASTER_PORT=3306, MASTER_USER='repl', MASTER_PASSWORD=%s, "
        "MASTER_SSL=1, MASTER_LOG_FILE='mysql-bin.000012', MASTER_LOG_POS=1422" % rp.PASSWORD_TOKEN,
        "START SLAVE"]
    plan = rp.replica_plan(position, "db1", 3306, "gtid", "repl", None, None)
    assert "RESET MASTER" in plan.statements and plan.statements[-2].endswith("MASTER_AUTO_POSITION=1")


def test_snapshot_of_a_replica_starts_from_its_source_coordinates():
    channel = {"connection_name": "", "source_host": "10.0.0.1", "source_port": 3306,
               "source_log_file": "binlog.000090", "source_log_position": 777, "gtid": "0-5-1000"}
    position = _position(replica=[channel], server_id=6)
    plan = rp.replica_plan(position, "10.0.0.1", 3306, "position", "repl", 7, None)
    assert "MASTER_LOG_FILE='binlog.000090', MASTER_LOG_POS=777" in plan.statements[-2]
    assert "taken on a replica of it" in plan.steps[0]
    plan = rp.replica_plan(position, "10.0.0.1", 3306, "gtid", "repl", 7, None)
    assert "SET GLOBAL gtid_slave_pos = '0-5-1000'" in plan.statements
    # Replicating from the snapshot's own server (another host) uses its own coordinates.
    plan = rp.replica_plan(position, "10.0.0.6", 3306, "gtid", "repl", 7, None)
    assert "SET GLOBAL gtid_slave_pos = '0-1-7'" in plan.statements


def test_a_host_that_is_not_the_recorded_source_is_refused_by_position_and_named_by_gtid():
    channel = {"connection_name": "", "source_host": "db0", "source_port": 3306,
               "source_log_file": "binlog.000090", "source_log_position": 777, "gtid": "0-5-1000"}
    position = _position(replica=[channel], server_id=6, hostname="db1")
    # The source under another name (its address): the replica's own file and position would be
    # read on the source, where they mean nothing.
    with pytest.raises(RestoreError, match=r"10\.0\.0\.5:3306 is neither the source the snapshot recorded "
                                           r"\(db0:3306\) nor the snapshot's own server \(db1\).*fix: "
                                           r"--as-replica-of db0:3306"):
        rp.replica_plan(position, "10.0.0.5", 3306, "position", "repl", 7, None)
    # GTIDs name the same transactions on every server: the plan goes on, and says which source it recorded.
    plan = rp.replica_plan(position, "10.0.0.5", 3306, "gtid", "repl", 7, None)
    assert any("is neither the source the snapshot recorded (db0:3306)" in step for step in plan.steps)
    # Host names compare without case; the snapshot's own server by its recorded name is no surprise.
    assert "taken on a replica of it" in rp.replica_plan(position, "DB0", 3306, "position", "repl", 7,
                                                         None).steps[0]
    plan = rp.replica_plan(position, "db1", 3306, "position", "repl", 7, None)
    assert "MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=1422" in plan.statements[-2]


def test_no_coordinates_no_replica():
    with pytest.raises(RestoreError, match="no GTID"):
        rp.replica_plan(_position(gtid=None), "db1", 3306, "gtid", None, None, None)
    with pytest.raises(RestoreError, match="binary log off"):
        rp.replica_plan(_position(gtid=None, binlog_file=None), "db1", 3306, "auto", None, None, None)


# -- restore-plan: point in time and Galera ---------------------------------------------------

@pytest.mark.parametrize("text, parsed", [
    ("2026-11-30 12:34:56", ("datetime", "2026-11-30 12:34:56")),
    ("2026-11-30T12:34", ("datetime", "2026-11-30 12:34:00")),
    ("0-1-700", ("gtid", "0-1-700")), ("0-1-700,1-2-3", ("gtid", "0-1-700,1-2-3")),
    (UUID + ":1-90", ("gtid", UUID + ":1-90")),
    ("binlog.000004:1234", ("position", ("binlog.000004", 1234)))])
def test_pitr_targets(text, parsed):
    assert rp.parse_target(text) == parsed


def test_bad_pitr_target_is_a_config_error():
    with pytest.raises(ConfigError, match="not a DATETIME"):
        rp.parse_target("yesterday")


NAMES = ["binlog.000002", "binlog.000003", "binlog.000004", "binlog.000005", "binlog.index", "ibdata1",
         "mysql-bin.000012", "mysql-bin.000013", "mysql-bin.index"]


def test_mariadb_pitr_by_gtid_position_and_datetime():
    plan = rp.pitr_plan(_position(), "0-1-700", "/srv/binlogs", NAMES, TARGET)
    assert plan.statements == ["mariadb-binlog --start-position=0-1-7 --stop-position=0-1-700 "
                               "/srv/binlogs/binlog.000003 /srv/binlogs/binlog.000004 /srv/binlogs/binlog.000005 "
                               "| mariadb --socket=/run/mysqld/mysqld.sock --user=root"]
    assert plan.check == "SELECT @@GLOBAL.gtid_binlog_pos -- expect 0-1-700"
    plan = rp.pitr_plan(_position(), "binlog.000004:99", "/srv/binlogs", NAMES, TARGET)
    assert plan.statements[0].startswith("mariadb-binlog --start-position=1422 --stop-position=99 "
                                         "/srv/binlogs/binlog.000003 /srv/binlogs/binlog.000004 |")
    plan = rp.pitr_plan(_position(), "2026-11-30 13:00:00", "/srv/binlogs", NAMES,
                        TARGET._replace(password="x", host="10.0.0.2", port=3307))
    assert plan.statements[0] == (
        "mariadb-binlog --start-position=1422 '--stop-datetime=2026-11-30 13:00:00' /srv/binlogs/binlog.000003 "
        "/srv/binlogs/binlog.000004 /srv/binlogs/binlog.000005 | mariadb --host=10.0.0.2 --port=3307 --user=root "
        "--password")


def test_mysql_pitr_to_a_gtid_includes_everything_up_to_it():
    plan = rp.pitr_plan(MYSQL_POSITION, UUID + ":90", "/var/lib/mysql", NAMES, TARGET)
    assert plan.statements[0] == ("mysqlbinlog --start-position=1422 --include-gtids=%s:1-90 "
                                  "/var/lib/mysql/mysql-bin.000012 /var/lib/mysql/mysql-bin.000013 | mysql "
                                  "--socket=/run/mysqld/mysqld.sock --user=root" % UUID)


def test_pitr_names_missing_binlogs():
    with pytest.raises(RestoreError, match="binlog.000003 is not among"):
        rp.pitr_plan(_position(), "0-1-700", "/srv", ["binlog.000004"], TARGET)
    with pytest.raises(RestoreError, match="binlog.000009 is not among"):
        rp.pitr_plan(_position(), "binlog.000009:4", "/srv", NAMES, TARGET)


def test_galera_grastate_for_ist():
    plan = rp.galera_plan(_position(galera={"uuid": "6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a", "seqno": 1234,
                                            "cluster_status": "Primary"}))
    assert plan.statements == ["cat > /var/lib/mysql/grastate.dat <<'EOF'\n# GALERA saved state\nversion: 2.1\n"
                               "uuid:    6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a\nseqno:   1234\n"
                               "safe_to_bootstrap: 0\nEOF",
                               "chown --reference=/var/lib/mysql/ /var/lib/mysql/grastate.dat"]
    with pytest.raises(RestoreError, match="no Galera state"):
        rp.galera_plan(_position())


@pytest.mark.parametrize("uuid", ["6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a\nEOF\nrm -rf /\n",
                                  "6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a; reboot", "not-a-uuid",
                                  " 6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a", "6a0a8d5b1c4e11ee8a5e2b0c1f4d7e9a"])
def test_galera_plan_refuses_a_uuid_that_is_not_one(uuid):
    """The uuid goes into a heredoc a root shell runs: anything but a UUID could end it."""
    with pytest.raises(RestoreError, match="not a UUID"):
        rp.galera_plan(_position(galera={"uuid": uuid, "seqno": 1234, "cluster_status": "Primary"}))
    with pytest.raises(RestoreError, match="seqno"):
        rp.galera_plan(_position(galera={"uuid": "6a0a8d5b-1c4e-11ee-8a5e-2b0c1f4d7e9a", "seqno": "12\nEOF"}))


def test_restore_options_count_only_on_the_command_line(tmp_path, monkeypatch):
    from quiesce.base import config
    conf = tmp_path / "quiesce.conf"
    conf.write_text("metrics-file = none\n")
    conf.chmod(0o600)
    # Never taken from the environment: QUIESCE_APPLY is refused, not obeyed or ignored.
    for name in ("QUIESCE_APPLY", "QUIESCE_YES"):
        monkeypatch.setenv(name, "true")
        with pytest.raises(ConfigError, match=name):
            config.parse(["--config", str(conf), "restore-plan", "--galera"])
        monkeypatch.delenv(name)
    settings = config.parse(["--config", str(conf), "restore-plan", "--galera"])
    assert settings.restore["apply"] is False and settings.restore["yes"] is False
    assert settings.restore["galera"] is True and settings.metrics_file == "none"
    settings = config.parse(["--config", str(conf), "restore-plan", "--as-replica-of", "db1", "--apply", "--yes",
                             "--server-id", "5"])
    assert settings.restore["apply"] and settings.restore["yes"] and settings.restore["server_id"] == 5
    assert settings.restore["as_replica_of"] == "db1"
    conf.write_text("apply = true\n")
    with pytest.raises(ConfigError):
        config.parse(["--config", str(conf), "restore-plan", "--galera"])


# -- --apply against a scripted server (what a real server cannot be made to do on request) --

def _scripted_server(version, comment, position, **overrides):
    """A restored copy that matches position: started after the lock, binlog and GTID as recorded."""
    rules = [
        (r"SELECT VERSION\(\)", [{"version": version, "comment": comment}]),
        (r"SHOW GLOBAL STATUS LIKE 'Uptime'", [{"Variable_name": "Uptime", "Value": "10"}]),
        (r"SELECT UNIX_TIMESTAMP\(\)", [{"now": str(2000000000)}]),
        (r"SHOW BINARY LOGS", [{"Log_name": position["binlog_file"], "File_size": position["binlog_position"]}]),
        (r"SELECT @@GLOBAL.gtid", [{"gtid": position["gtid"]}]),
        (r"SELECT @@GLOBAL.server_uuid", [{"uuid": "4f22fa47-71ca-11e1-9e33-c80aa9429562"}]),
        (r"SELECT @@GLOBAL.server_id", [{"id": 12}]),
        (r"SELECT @@SESSION.sql_mode", [{"sql_mode": "STRICT_TRANS_TABLES"}]),
        (r"SELECT @@GLOBAL.datadir AS datadir, @@GLOBAL.log_bin_basename",
         [{"datadir": "/nonexistent/quiesce-test/", "log_bin_basename": "/nonexistent/quiesce-test/binlog",
           "log_bin_index": "/nonexistent/quiesce-test/binlog.index", "relay_log_index": None}]),
        (r"SHOW (REPLICA|SLAVE) STATUS", [{"Replica_SQL_Running": "Yes", "Replica_IO_Running": "Yes",
                                           "Source_Host": "db1", "Source_Port": 3306}]),
    ]
    server = FakeServer(rules)
    for pattern, answer in overrides.items():
        server.on(pattern, answer)
    return server


def _apply(monkeypatch, server, position, host="db1", mode="auto"):
    monkeypatch.setattr(rp.locking, "connect", lambda target, settings: server.connect())
    rp.apply(TARGET, None, position, host, 3306, mode, "repl", "pw", 12, True)
    return server.statements()


def test_apply_builds_the_statements_for_the_server_it_changes(monkeypatch, capsys):
    """An 8.0 snapshot restored on 8.4: RESET MASTER is gone there, so the 8.4 names are used."""
    position = dict(MYSQL_POSITION, server_version="8.0.35")
    sent = _apply(monkeypatch, _scripted_server("8.4.3", "MySQL Community Server - GPL", position), position)
    assert "RESET BINARY LOGS AND GTIDS" in sent and "RESET MASTER" not in sent
    assert any(s.startswith("CHANGE REPLICATION SOURCE TO") for s in sent)
    assert "the snapshot was taken on MySQL 8.0.35, this server is MySQL 8.4.3" in capsys.readouterr().out


def test_apply_refuses_another_flavour_before_changing_anything(monkeypatch):
    server = _scripted_server("10.11.6-MariaDB", "", MYSQL_POSITION)
    with pytest.raises(RestoreError, match="the snapshot is from MySQL 8.4.3, this server is MariaDB 10.11.6"):
        _apply(monkeypatch, server, MYSQL_POSITION)
    assert not [s for s in server.statements() if s.startswith(("STOP", "RESET", "CHANGE", "SET"))]


def test_a_database_error_outside_the_statements_is_a_restore_error(monkeypatch):
    position = _position()
    server = _scripted_server("10.11.6-MariaDB", "", position,
                              **{r"SHOW ALL SLAVES STATUS": fakedb_error(1227, "Access denied; you need the "
                                                                               "REPLICA MONITOR privilege")})
    with pytest.raises(RestoreError, match=r"REPLICA MONITOR.*fix:") as caught:
        _apply(monkeypatch, server, position)
    assert caught.value.exit_code == 9


def test_sql_strings_double_quotes_and_backslashes_only_where_they_escape():
    assert si.sql_string("a'b\\c") == "'a''b\\\\c'"
    assert si.sql_string("a'b\\c", backslash_escapes=False) == "'a''b\\c'"
    assert si.backslash_escapes("STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO")
    assert not si.backslash_escapes("STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES")
    assert not si.backslash_escapes("no_backslash_escapes")


def test_a_refused_statement_with_the_password_shows_none_of_the_server_message(monkeypatch, capsys):
    """A syntax error quotes the statement from where the parser stopped: a cut or escaped part of
    the password, which an exact replace would miss."""
    position = _position()
    password = "a'b\\c"
    server = _scripted_server("10.11.6-MariaDB", "", position, **{
        r"CHANGE MASTER": fakedb_error(1064, "You have an error in your SQL syntax; check the manual that "
                                             "corresponds to your MariaDB server version for the right syntax "
                                             "to use near 'b\\\\c', MASTER_USE_GTID=slave_pos' at line 1")})
    monkeypatch.setattr(rp.locking, "connect", lambda target, settings: server.connect())
    with pytest.raises(RestoreError) as caught:
        rp.apply(TARGET, None, position, "db1", 3306, "auto", "repl", password, 12, True)
    said = str(caught.value) + capsys.readouterr().out
    for fragment in ("a'b", "b\\c", "\\c", "near"):
        assert fragment not in said, said
    assert "error 1064" in said and "fix:" in said
    change = [s for s in server.statements() if s.startswith("CHANGE MASTER")]
    assert "MASTER_PASSWORD='a''b\\\\c'" in change[0]
