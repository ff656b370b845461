"""Dedicated accounts: the grants docs/accounts.md lists, run as written, are enough for a
freeze on a primary and on a replica (whose applier quiesce stops), on every server kind;
and MySQL's default authentication (caching_sha2_password) works with both drivers over
the socket and over TCP."""

import os
import re

import pytest

from . import servers
from .checks import assert_clean, assert_frozen
from .prodhelpers import sql_thread_running, wait_sql_thread
from .runner import REPO, QuiesceEnv

PASSWORD = "Grant-Tested-9"


def readme_grants(flavour: str, replica: bool):
    """docs/accounts.md's account statements for this flavour, as written: for a primary, or
    what replicas need on top (the primary's statements reach a replica by replication)."""
    with open(os.path.join(REPO, "docs", "accounts.md"), encoding="utf-8") as handle:
        text = handle.read()
    block = re.search(r"```sql\n(-- MariaDB 10\.5.*?)```", text, flags=re.S).group(1)
    sections, current = {}, None
    for line in block.splitlines():
        if line.startswith("-- "):
            current = line[3:].strip()
            sections[current] = []
        elif line.strip():
            sections[current].append(line.strip().rstrip(";").replace("'...'", "'%s'" % PASSWORD))
    prefix = "MariaDB" if flavour == "mariadb" else "MySQL"
    wanted = [name for name in sections if name.startswith(prefix) and ("replicas" in name) == replica]
    assert len(wanted) == 1, (flavour, list(sections))
    return sections[wanted[0]]


def _grant_as_readme_says(server, replica: bool = False) -> None:
    for statement in readme_grants(server.flavour, replica):
        server.sql(statement)


def _freeze_and_thaw(env: QuiesceEnv, server) -> dict:
    result = env.run("freeze")
    assert result.rc == 0, result
    try:
        position = env.position()
        assert_frozen(server)
        stopped_while_frozen = sql_thread_running(server)
    finally:
        thawed = env.run("thaw")
    assert thawed.rc == 0, thawed
    position["sql_thread_while_frozen"] = stopped_while_frozen
    return position


@pytest.mark.flavours()
def test_readme_grants_suffice_on_a_primary_and_a_replica(mariadb, replica_of, request):
    primary = mariadb
    # MySQL's default applier (4 workers, commit order kept); MariaDB with 4 threads.
    replica = replica_of(primary, parallel_threads=None if primary.flavour == "mysql" else 4)
    _grant_as_readme_says(primary)
    replica.wait_caught_up(primary)
    _grant_as_readme_says(replica, replica=True)

    for server in (primary, replica):
        env = QuiesceEnv(server, driver=None, user="quiesce", password=PASSWORD)
        request.addfinalizer(env.cleanup)
        checked = env.run("check")
        assert "privileges suffice" in checked.output and "also useful" not in checked.output, checked
        position = _freeze_and_thaw(env, server)
        assert position["binlog_file"] and position["gtid"], position
        if server is replica:
            assert position["replica"] and position["replica_stopped"] is True, position
            assert position["sql_thread_while_frozen"] == "No"
            wait_sql_thread(replica, "Yes", timeout=5)
        assert_clean(env, server)


@pytest.mark.flavours()
def test_check_names_the_replica_privilege_that_is_missing(mariadb, replica_of, request):
    """Primary grants (and the right to read replica status) only, on a replica: check names
    the privilege STOP REPLICA needs, and a freeze that must stop the applier fails with exit 4
    naming it, leaving replication running."""
    replica = replica_of(mariadb, parallel_threads=4)
    _grant_as_readme_says(mariadb)
    replica.wait_caught_up(mariadb)
    if mariadb.flavour == "mariadb":
        replica.sql("GRANT REPLICA MONITOR ON *.* TO 'quiesce'@'localhost'")
    wanted = "REPLICATION_SLAVE_ADMIN" if mariadb.flavour == "mysql" else "REPLICATION SLAVE ADMIN"
    env = QuiesceEnv(replica, driver=None, user="quiesce", password=PASSWORD, stop_replica="always")
    request.addfinalizer(env.cleanup)
    checked = env.run("check")
    assert wanted in checked.output, checked
    result = env.run("freeze")
    assert result.rc == 4, result
    assert wanted in result.stderr, result
    assert sql_thread_running(replica) == "Yes"
    assert_clean(env, replica)


@pytest.mark.flavours(servers.MYSQL)
@pytest.mark.parametrize("transport", ["socket", "tcp"])
def test_caching_sha2_password_with_both_drivers(mariadb, driver, transport, request):
    """MySQL's default plugin. Over TCP without TLS the first login needs the full
    authentication exchange (the server's cache is flushed first): mysql-connector uses
    TLS, PyMySQL encrypts the password with the server's RSA key (python3-cryptography)."""
    mariadb.create_user("qsha", PASSWORD, grants=("RELOAD", "LOCK TABLES", "PROCESS", "REPLICATION CLIENT"),
                        host="localhost" if transport == "socket" else "127.0.0.1")
    assert mariadb.value("SELECT plugin FROM mysql.user WHERE user = 'qsha'") == "caching_sha2_password"
    mariadb.sql("FLUSH PRIVILEGES")         # empties the fast-auth cache: a full login follows
    settings = {"socket": None, "host": "127.0.0.1", "port": mariadb.port} if transport == "tcp" else {}
    env = QuiesceEnv(mariadb, driver=driver, user="qsha", password=PASSWORD)
    request.addfinalizer(env.cleanup)
    env.write_config(**settings)
    _freeze_and_thaw(env, mariadb)
    assert_clean(env, mariadb)


def test_check_fails_when_the_long_statement_check_would_be_blind(mariadb, request):
    """Without PROCESS, freeze's look for long statements sees only its own sessions: check's
    verdict is exit 4 (before, a warning and exit 0); with PROCESS, exit 0."""
    grants = ["RELOAD", "BINLOG MONITOR" if mariadb.flavour == "mariadb" else "REPLICATION CLIENT"]
    mariadb.create_user("qnoproc", PASSWORD, grants=grants)
    env = QuiesceEnv(mariadb, driver=None, user="qnoproc", password=PASSWORD)
    request.addfinalizer(env.cleanup)
    checked = env.run("check")
    assert checked.rc == 4, checked
    assert "lacks PROCESS" in checked.output and "fix: GRANT PROCESS" in checked.output, checked
    mariadb.create_user("qnoproc", PASSWORD, grants=grants + ["PROCESS"])
    checked = env.run("check")
    assert checked.rc == 0, checked
