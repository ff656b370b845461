"""Flavour/version logic, fed with what real servers return.

No MySQL server can run on this machine, so the MySQL and Percona paths are covered here
with the version strings, statement names and status rows those servers produce.
"""

import pytest

from quiesce.base.errors import ConfigError
from quiesce.server import serverinfo as si

MARIADB_1011 = si.identify("10.11.6-MariaDB-0+deb12u1-log", "Debian 12")
MARIADB_103 = si.identify("10.3.39-MariaDB-0ubuntu0.20.04.2", "Ubuntu 20.04")
MARIADB_105_1 = si.identify("10.5.1-MariaDB", "MariaDB Server")
MYSQL_80 = si.identify("8.0.36-0ubuntu0.22.04.1", "(Ubuntu)")
MYSQL_8021 = si.identify("8.0.21", "MySQL Community Server - GPL")
MYSQL_84 = si.identify("8.4.0", "MySQL Community Server - GPL")
MYSQL_57 = si.identify("5.7.44-log", "MySQL Community Server (GPL)")
PERCONA_80 = si.identify("8.0.35-27", "Percona Server (GPL), Release 27, Revision 2f8eeab2")


def test_flavour_comes_from_the_text_not_the_major_number():
    assert MARIADB_1011.flavour == "mariadb" and MARIADB_1011.version == (10, 11, 6)
    assert MYSQL_80.flavour == "mysql" and MYSQL_80.version == (8, 0, 36)
    assert PERCONA_80.flavour == "percona"
    # MariaDB 10 behind the old replication-compatible prefix.
    legacy = si.identify("5.5.5-10.6.12-MariaDB-log")
    assert legacy.flavour == "mariadb" and legacy.version == (10, 6, 12)
    # A MariaDB whose version string lost its suffix is still known by its comment.
    assert si.identify("11.4.2", "mariadb.org binary distribution").flavour == "mariadb"


def test_unparseable_version_is_refused():
    with pytest.raises(ValueError):
        si.identify("garbage")


@pytest.mark.parametrize("server,expected", [
    (MARIADB_1011, "backup-stage"), (MARIADB_103, "ftwrl"), (MYSQL_80, "ftwrl"),
    (PERCONA_80, "ftwrl"), (MYSQL_84, "ftwrl")])
def test_auto_lock_method(server, expected):
    assert si.choose_lock_method(server, "auto") == expected


def test_backup_stage_refused_where_it_does_not_exist():
    with pytest.raises(ConfigError, match="MariaDB 10.4"):
        si.choose_lock_method(MYSQL_80, "backup-stage")
    with pytest.raises(ConfigError):
        si.choose_lock_method(MARIADB_103, "backup-stage")
    assert si.choose_lock_method(MARIADB_1011, "ftwrl") == "ftwrl"


@pytest.mark.parametrize("server,statement", [
    (MYSQL_84, "SHOW BINARY LOG STATUS"), (si.identify("8.2.0"), "SHOW BINARY LOG STATUS"),
    (MYSQL_80, "SHOW MASTER STATUS"), (MYSQL_57, "SHOW MASTER STATUS"), (PERCONA_80, "SHOW MASTER STATUS"),
    (MARIADB_1011, "SHOW BINLOG STATUS"), (MARIADB_105_1, "SHOW MASTER STATUS"),
    (MARIADB_103, "SHOW MASTER STATUS")])
def test_binlog_status_statement(server, statement):
    assert si.binlog_status_statement(server) == statement


@pytest.mark.parametrize("server,statement", [
    (MYSQL_84, "SHOW REPLICA STATUS"), (MYSQL_80, "SHOW REPLICA STATUS"), (MYSQL_8021, "SHOW SLAVE STATUS"),
    (MYSQL_57, "SHOW SLAVE STATUS"), (MARIADB_1011, "SHOW ALL SLAVES STATUS")])
def test_replica_status_statement(server, statement):
    assert si.replica_status_statement(server) == statement


def test_mysql_coordinates_with_gtid_set_split_over_lines():
    # MySQL prints long GTID sets with embedded newlines.
    rows = [{"File": "binlog.000042", "Position": 157, "Binlog_Do_DB": "", "Binlog_Ignore_DB": "",
             "Executed_Gtid_Set": "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\n"
                                  "4D22FB58-82DB-22F2-AF44-D91BB0530673:1-9"}]
    coordinates = si.binlog_coordinates(rows)
    assert coordinates == {"binlog_file": "binlog.000042", "binlog_position": 157,
                           "gtid": "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,"
                                   "4D22FB58-82DB-22F2-AF44-D91BB0530673:1-9"}


def test_mariadb_coordinates_take_gtid_from_gtid_binlog_pos():
    rows = [{"File": "mysql-bin.000003", "Position": "1234", "Binlog_Do_DB": "", "Binlog_Ignore_DB": ""}]
    coordinates = si.binlog_coordinates(rows, [{"gtid": "0-1-17"}])
    assert coordinates == {"binlog_file": "mysql-bin.000003", "binlog_position": 1234, "gtid": "0-1-17"}


def test_binary_log_off_gives_nulls_not_an_error():
    assert si.binlog_coordinates([], [{"gtid": ""}]) == {"binlog_file": None, "binlog_position": None, "gtid": None}


def test_replica_channels_mysql_84_names():
    rows = [{"Channel_Name": "", "Source_Host": "10.0.0.5", "Source_Port": 3306,
             "Relay_Source_Log_File": "binlog.000007", "Exec_Source_Log_Pos": 4242,
             "Executed_Gtid_Set": "uuid:1-10", "Auto_Position": 1, "Replica_SQL_Running": "Yes",
             "Replica_IO_Running": "Yes"}]
    (channel,) = si.replica_channels(rows)
    assert channel["source_log_file"] == "binlog.000007" and channel["source_log_position"] == 4242
    assert channel["sql_running"] is True and channel["gtid"] == "uuid:1-10"


def test_replica_channels_mariadb_multi_source():
    rows = [{"Connection_name": "east", "Master_Host": "db1", "Master_Port": 3306,
             "Relay_Master_Log_File": "mysql-bin.000002", "Exec_Master_Log_Pos": 99,
             "Gtid_Slave_Pos": "0-1-50", "Using_Gtid": "Slave_Pos", "Slave_SQL_Running": "No",
             "Slave_IO_Running": "Yes"}]
    (channel,) = si.replica_channels(rows)
    assert channel["connection_name"] == "east" and channel["sql_running"] is False
    assert channel["gtid"] == "0-1-50"


@pytest.mark.parametrize("server,channel,stop", [
    (MARIADB_1011, "", "STOP SLAVE SQL_THREAD"),
    (MARIADB_1011, "east", "STOP SLAVE 'east' SQL_THREAD"),
    (MYSQL_80, "", "STOP REPLICA SQL_THREAD"),
    (MYSQL_80, "ch'1", "STOP REPLICA SQL_THREAD FOR CHANNEL 'ch''1'"),
    (MYSQL_57, "", "STOP SLAVE SQL_THREAD")])
def test_sql_thread_statements(server, channel, stop):
    assert si.stop_sql_thread_statement(server, channel) == stop
    assert si.start_sql_thread_statement(server, channel) == stop.replace("STOP", "START", 1)


def test_parallel_applier_detection():
    assert si.parallel_applier_needs_stop(MARIADB_1011, {"workers": 4, "preserve_order": 1})
    assert not si.parallel_applier_needs_stop(MARIADB_1011, {"workers": 0, "preserve_order": 1})
    assert si.parallel_applier_needs_stop(MYSQL_80, {"workers": 4, "preserve_order": 1})
    assert not si.parallel_applier_needs_stop(MYSQL_80, {"workers": 4, "preserve_order": 0})
    assert not si.parallel_applier_needs_stop(MYSQL_80, {"workers": 1, "preserve_order": 1})
    assert "replica_parallel_workers" in si.parallel_applier_statement(MYSQL_80)
    assert "slave_parallel_workers" in si.parallel_applier_statement(MYSQL_57)


def test_durability_warnings():
    assert si.durability_warnings({"innodb_flush_log_at_trx_commit": 1, "sync_binlog": 1, "log_bin": 1}) == []
    warnings = si.durability_warnings({"innodb_flush_log_at_trx_commit": 2, "sync_binlog": 0, "log_bin": 1})
    assert len(warnings) == 2 and "innodb_flush_log_at_trx_commit=2" in warnings[0]
    # sync_binlog is irrelevant without a binary log.
    assert si.durability_warnings({"innodb_flush_log_at_trx_commit": 1, "sync_binlog": 0, "log_bin": 0}) == []


@pytest.mark.parametrize("info,kind", [
    ("SELECT SLEEP(30) FROM t", "select"), ("  /* app */ select * from t", "select"),
    ("-- note\nSELECT 1", "select"), ("(SELECT 1) UNION (SELECT 2)", "select"),
    ("UPDATE t SET v = 1", "update"), ("insert into t values (1)", "update"),
    ("ALTER TABLE t ADD c INT", "update"), ("WITH x AS (SELECT 1) UPDATE t JOIN x SET v=1", "update"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "select"), (None, "update"),
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE", "update"), ("select v from t lock in share mode", "update"),
    ("SELECT * INTO OUTFILE '/tmp/x' FROM t", "update"), ("SELECT updated_at FROM t", "select")])
def test_statement_kind(info, kind):
    assert si.statement_kind(info) == kind


PROCESSLIST = [
    {"ID": 1, "USER": "system user", "COMMAND": "Daemon", "TIME": 9999, "INFO": None},
    {"ID": 5, "USER": "app", "COMMAND": "Query", "TIME": 40, "INFO": "SELECT SLEEP(60)"},
    {"ID": 6, "USER": "app", "COMMAND": "Query", "TIME": 3, "INFO": "SELECT 1"},
    {"ID": 7, "USER": "etl", "COMMAND": "Query", "TIME": 25, "INFO": "UPDATE big SET x = x + 1"},
    {"ID": 8, "USER": "app", "COMMAND": "Sleep", "TIME": 5000, "INFO": None},
    {"ID": 9, "USER": "quiesce", "COMMAND": "Query", "TIME": 50, "INFO": "SELECT * FROM information_schema.PROCESSLIST"},
    {"ID": 10, "USER": "repl", "COMMAND": "Binlog Dump GTID", "TIME": 80000, "INFO": None},
]


def test_long_statements_filters_kind_threshold_and_own_sessions():
    ids = lambda kinds: [r["ID"] for r in si.long_statements(PROCESSLIST, [9], 10, kinds)]
    assert ids("all") == [5, 7]
    assert ids("select") == [5]
    assert ids("update") == [7]
    assert [r["ID"] for r in si.long_statements(PROCESSLIST, [9], 60, "all")] == []


def test_long_statements_prefers_millisecond_time():
    rows = [{"ID": 3, "USER": "a", "COMMAND": "Query", "TIME": 0, "TIME_MS": 2500.5, "INFO": "SELECT 1"}]
    assert si.long_statements(rows, [], 2, "all")[0]["elapsed"] == pytest.approx(2.5005)


def test_global_privileges_from_real_show_grants_lines():
    lines = [
        "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED VIA mysql_native_password USING "
        "'invalid' OR unix_socket WITH GRANT OPTION"]
    assert si.global_privileges(lines) == {"ALL"}
    lines = ["GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO `quiesce`@`localhost` IDENTIFIED BY PASSWORD '*X'",
             "GRANT SELECT ON `app`.* TO `quiesce`@`localhost`"]
    assert si.global_privileges(lines) == {"RELOAD", "PROCESS", "BINLOG MONITOR"}
    mysql_lines = ["GRANT RELOAD, PROCESS, REPLICATION CLIENT ON *.* TO `q`@`%`",
                   "GRANT BACKUP_ADMIN,CONNECTION_ADMIN ON *.* TO `q`@`%`"]
    assert si.global_privileges(mysql_lines) >= {"RELOAD", "BACKUP_ADMIN", "CONNECTION_ADMIN"}


def test_missing_privileges_names_what_to_grant():
    required, recommended = si.missing_privileges(MARIADB_1011, {"PROCESS"}, "backup-stage", True, False,
                                                  False, True)
    assert required == ["RELOAD", "BINLOG MONITOR"] and recommended == []
    required, _ = si.missing_privileges(MYSQL_80, {"RELOAD", "REPLICATION CLIENT", "PROCESS"}, "ftwrl",
                                        True, False, False, True)
    assert required == ["LOCK TABLES"]
    assert si.missing_privileges(MARIADB_1011, {"ALL"}, "ftwrl", True, True, True, True) == ([], [])


def test_replica_privileges_are_the_ones_stop_replica_needs():
    # MySQL's STOP REPLICA needs REPLICATION_SLAVE_ADMIN (or SUPER), not REPLICATION_APPLIER.
    _, recommended = si.missing_privileges(MYSQL_80, {"RELOAD", "LOCK TABLES", "PROCESS", "REPLICATION CLIENT"},
                                           "ftwrl", True, True, False, True)
    assert recommended == ["REPLICATION_SLAVE_ADMIN"]
    # MariaDB's SHOW GRANTS says SLAVE MONITOR for a GRANT REPLICA MONITOR.
    granted = si.global_privileges(["GRANT RELOAD, PROCESS, BINLOG MONITOR, SLAVE MONITOR, REPLICATION SLAVE ADMIN "
                                    "ON *.* TO `quiesce`@`localhost`"])
    assert si.missing_privileges(MARIADB_1011, granted, "backup-stage", True, True, False, True) == ([], [])


@pytest.mark.parametrize("server,method,kinds", [
    (MARIADB_1011, "backup-stage", "update"), (MARIADB_1011, "ftwrl", "update"),
    (MARIADB_103, "ftwrl", "all"), (MYSQL_80, "ftwrl", "all"), (PERCONA_80, "ftwrl", "all")])
def test_which_statements_a_lock_waits_for(server, method, kinds):
    assert si.default_long_query_kinds(server, method) == kinds


@pytest.mark.parametrize("info,ddl", [
    ("ALTER TABLE t ADD c INT", True), ("/* x */ optimize table t", True), ("TRUNCATE t", True),
    ("UPDATE t SET v = 1", False), ("SELECT 1", False), (None, False)])
def test_is_ddl(info, ddl):
    assert si.is_ddl(info) is ddl


def test_backup_stage_waits_for_ddl_and_non_innodb_writes_only():
    innodb_update = {"ID": 7, "INFO": "UPDATE big SET x = x + 1"}
    myisam_update = {"ID": 8, "INFO": "UPDATE log_myisam SET x = 1"}
    innodb_alter = {"ID": 9, "INFO": "ALTER TABLE big ADD c INT"}
    threads = {7, 9}
    assert not si.backup_stage_waits_for(innodb_update, threads)
    assert si.backup_stage_waits_for(myisam_update, threads)
    assert si.backup_stage_waits_for(innodb_alter, threads)
    # Unknown (no PROCESS privilege on INNODB_TRX): count everything.
    assert si.backup_stage_waits_for(innodb_update, None)


def test_a_galera_node_outside_the_primary_component_is_refused():
    synced = {"wsrep_local_state_comment": si.GALERA_SYNCED, "wsrep_cluster_status": "Primary"}
    assert si.galera_refusal(synced) is None
    cut_off = dict(synced, wsrep_cluster_status="non-Primary")
    assert "non-Primary component, not the primary one" in si.galera_refusal(cut_off)
    assert "Donor/Desynced" in si.galera_refusal(dict(synced, wsrep_local_state_comment="Donor/Desynced"))


MARIADB_104 = si.identify("10.4.34-MariaDB-1:10.4.34+maria~ubu2004", "mariadb.org binary distribution")
MARIADB_1055 = si.identify("10.5.5-MariaDB", "MariaDB Server")


def test_mariadb_104_is_named_privileges_it_has():
    # REPLICA MONITOR exists from 10.5.9, BINLOG MONITOR, REPLICATION SLAVE ADMIN and
    # CONNECTION ADMIN from 10.5.2: a GRANT of them fails on 10.4.
    required, recommended = si.missing_privileges(MARIADB_104, set(), "backup-stage", True, True, True, True)
    assert required == ["RELOAD", "REPLICATION CLIENT"]
    assert recommended == ["PROCESS", "SUPER"]
    assert si.binlog_monitor_privilege(MARIADB_104) == "REPLICATION CLIENT"
    assert si.replica_monitor_privilege(MARIADB_104) == "REPLICATION CLIENT"
    assert si.replica_admin_privilege(MARIADB_104) == "SUPER"
    assert si.connection_admin_privilege(MARIADB_104) == "SUPER"
    # SUPER covers all of them there.
    assert si.missing_privileges(MARIADB_104, {"RELOAD", "PROCESS", "SUPER"}, "backup-stage", True, True,
                                 True, True) == ([], [])


def test_replica_privilege_names_follow_the_server_version():
    # 10.5.2 to 10.5.8 read the replica status with REPLICATION SLAVE ADMIN.
    assert si.replica_monitor_privilege(MARIADB_1055) == "REPLICATION SLAVE ADMIN"
    assert si.replica_admin_privilege(MARIADB_1055) == "REPLICATION SLAVE ADMIN"
    assert si.binlog_monitor_privilege(MARIADB_1055) == "BINLOG MONITOR"
    assert si.replica_monitor_privilege(MARIADB_1011) == "REPLICA MONITOR"
    assert si.replica_admin_privilege(MARIADB_1011) == "REPLICATION SLAVE ADMIN"
    # MySQL 5.7 has no dynamic privileges.
    assert si.replica_admin_privilege(MYSQL_57) == "SUPER"
    assert si.replica_admin_privilege(MYSQL_80) == "REPLICATION_SLAVE_ADMIN"
    assert si.replica_monitor_privilege(MYSQL_80) == "REPLICATION CLIENT"
    assert si.binlog_monitor_privilege(MYSQL_84) == "REPLICATION CLIENT"
    _, recommended = si.missing_privileges(MYSQL_57, {"RELOAD", "LOCK TABLES", "PROCESS", "REPLICATION CLIENT"},
                                           "ftwrl", True, True, True, True)
    assert recommended == ["SUPER"]
