"""check's verdict on whether this server's snapshots need the commit block, read from real
servers (MariaDB 10.11 and 11.8, MySQL 9.7): the engines of the tables (a MyISAM table
created at any time is found), the durability settings per kind of agent, the log tables,
and which of MariaDB's own system tables are not crash-safe. Galera: test_galera.py.

Driver: PyMySQL only; the statements are plain queries, the same on both drivers.
"""

import pytest

from . import servers
from .runner import QuiesceEnv

EVERY_AGENT = "crash-safe: a snapshot would be consistent without blocking commits, for every agent"
FREEZING_ONLY = "crash-safe for agents that freeze the filesystems"
NEEDED = "snapshots need the commit block: "


def _verdict(env):
    result = env.run("check")
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if "crash-safe" in line or "commit block" in line]
    assert len(lines) == 1, result
    return lines[0]


@pytest.fixture
def innodb_only(mariadb):
    """The test server with only InnoDB tables of its own and every commit synced."""
    mariadb.sql("DROP TABLE quiesce_probe.probe_myisam")
    mariadb.sql("SET GLOBAL sync_binlog = 1")
    mariadb.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 1")
    env = QuiesceEnv(mariadb, driver="pymysql")
    yield mariadb, env
    env.cleanup()


@pytest.mark.flavours()
def test_an_innodb_only_durable_server_needs_no_commit_block(innodb_only):
    _server, env = innodb_only
    assert EVERY_AGENT in _verdict(env)
    # What it would save: the time the last snapshots' lock blocked commits.
    assert env.run("freeze", "--caller", "gce").rc == 0
    assert env.run("thaw", "--caller", "gce").rc == 0
    line = _verdict(env)
    assert EVERY_AGENT + " (the lock blocked commits for a median " in line and "over the last snapshot)" in line


@pytest.mark.flavours()
def test_a_myisam_table_created_later_is_found(innodb_only):
    server, env = innodb_only
    assert EVERY_AGENT in _verdict(env)
    server.sql("CREATE DATABASE app")
    server.sql("CREATE TABLE app.late (id INT PRIMARY KEY) ENGINE=MyISAM")
    line = _verdict(env)
    assert NEEDED in line and "app.late (MyISAM)" in line, line


@pytest.mark.flavours()
@pytest.mark.parametrize("statements, verdict, words", [
    (("SET GLOBAL sync_binlog = 0",), FREEZING_ONLY, "for the others not: sync_binlog = 0"),
    (("SET GLOBAL innodb_flush_log_at_trx_commit = 0",), NEEDED, "innodb_flush_log_at_trx_commit = 0"),
    (("SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = ON"), NEEDED, "log_output = TABLE"),
], ids=["sync_binlog-0", "flush-0", "general-log-table"])
def test_settings_that_need_the_commit_block(innodb_only, statements, verdict, words):
    server, env = innodb_only
    for statement in statements:
        server.sql(statement)
    line = _verdict(env)
    assert verdict in line and words in line, line


@pytest.mark.flavours(*servers.ALL_MARIADB)
def test_mariadb_system_tables_that_are_not_crash_safe_are_those_only_maintenance_writes(mariadb):
    """The open question of docs/servers.md, answered on the real servers: the mysql schema's
    Aria tables are transactional (crash-safe) except the help tables (written by installs
    and upgrades) and the engine-independent statistics (ANALYZE ... PERSISTENT FOR); the
    CSV log tables are written only with log_output = TABLE."""
    rows = mariadb.query("SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'mysql' "
                         "AND TABLE_TYPE = 'BASE TABLE' AND NOT (ENGINE = 'InnoDB' OR (ENGINE = 'Aria' AND "
                         "CREATE_OPTIONS LIKE '%transactional=1%'))")
    assert sorted(rows) == sorted([
        ("column_stats", "Aria"), ("index_stats", "Aria"), ("table_stats", "Aria"), ("help_category", "Aria"),
        ("help_keyword", "Aria"), ("help_relation", "Aria"), ("help_topic", "Aria"), ("general_log", "CSV"),
        ("slow_log", "CSV")]), rows


@pytest.mark.flavours()
def test_an_account_that_cannot_see_every_table_cannot_tell(innodb_only):
    """The documented least-privilege account sees no table in information_schema: a MyISAM
    table would go unseen, so the verdict needs SHOW VIEW ON *.*, which reads no data."""
    server, env = innodb_only
    server.sql("CREATE DATABASE app")
    server.sql("CREATE TABLE app.hidden (id INT PRIMARY KEY) ENGINE=MyISAM")
    mariadb_side = server.query("SELECT VERSION()")[0][0].find("MariaDB") >= 0
    grants = "RELOAD, PROCESS, BINLOG MONITOR" if mariadb_side else "RELOAD, LOCK TABLES, PROCESS, REPLICATION CLIENT"
    server.sql("CREATE USER 'least'@'localhost' IDENTIFIED BY 'least-secret'")
    server.sql("GRANT %s ON *.* TO 'least'@'localhost'" % grants)
    env.write_config(user="least", password="least-secret")
    line = _verdict(env)
    assert NEEDED in line and "GRANT SHOW VIEW ON *.*" in line and "app.hidden" not in line, line
    server.sql("GRANT SHOW VIEW ON *.* TO 'least'@'localhost'")
    line = _verdict(env)
    assert NEEDED in line and "app.hidden (MyISAM)" in line and "SHOW VIEW" not in line, line
