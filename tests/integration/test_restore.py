"""After the snapshot: verify a server booted from a copy, turn it into a replica of the
original, replay the original's binlogs to a point in time.

Copies are made as in test_snapshot_consistency.py (the server paused while its datadir is
copied, between freeze and thaw) and booted with crash recovery, like a restored VM.
"""

import datetime
import os
import re
import socket
import subprocess

import pytest

from . import servers
from .load import table_rows
from .runner import QuiesceEnv, wait_for

ENGINES = ("InnoDB", "MyISAM", "Aria")


def _frozen_copies(mariadb, env, load, tmp_path, names=("snapshot",)):
    """Copies of the datadir made while frozen under write load; the position file's path."""
    load.wait_for_progress(20)
    result = env.run("freeze")
    assert result.rc == 0, result
    try:
        dests = []
        for name in names:
            dest = tmp_path / name
            mariadb.copy_datadir(str(dest))
            dests.append(str(dest))
    finally:
        assert env.run("thaw").rc == 0
    return dests


def _boot(request, server, dest, options=None):
    copy = server.boot_copy(dest, options=options)
    request.addfinalizer(copy.cleanup)
    return copy


def _env_for(request, server, position_file=None, **settings):
    if position_file:
        settings["position_file"] = position_file
    env = QuiesceEnv(server, driver=None, **settings)
    request.addfinalizer(env.cleanup)
    return env


def _commit_ends(events):
    """Events that end a transaction: Xid (InnoDB) or a COMMIT query (MyISAM: BEGIN, INSERT, COMMIT)."""
    return [e for e in events if e["Event_type"] == "Xid" or (e["Event_type"] == "Query" and e["Info"] == "COMMIT")]


def _lines(result, word):
    return [line for line in result.stdout.splitlines() if line.startswith(word)]


def test_verify_passes_on_a_frozen_copy_and_fails_on_unlocked_and_truncated_ones(
        request, mariadb, quiesce_env, writers, tmp_path):
    load = writers(engines=ENGINES)
    good, truncated = _frozen_copies(mariadb, quiesce_env, load, tmp_path, ("good", "truncated"))
    position = quiesce_env.position()
    # The identity verify compares: what the position file says about the server.
    assert position["server_id"] == 1 and position["server_uuid"] is None
    assert position["hostname"] == socket.gethostname() and position["galera"] is None
    # Control: a copy of the same server made after thaw, without the lock, writers still going.
    load.wait_for_progress(10)
    unlocked = str(tmp_path / "unlocked")
    mariadb.copy_datadir(unlocked)
    load.stop()

    # Cut the last three transactions off the truncated copy's binlog, at an event boundary.
    events = mariadb.query("SHOW BINLOG EVENTS IN %s", (position["binlog_file"],), as_dict=True)
    boundaries = [int(e["End_log_pos"]) for e in _commit_ends(events)
                  if int(e["End_log_pos"]) < position["binlog_position"]]
    os.truncate(os.path.join(truncated, position["binlog_file"]), boundaries[-3])

    results = {}
    for name, dest in (("good", good), ("unlocked", unlocked), ("truncated", truncated)):
        copy = _boot(request, mariadb, dest)
        results[name] = _env_for(request, copy, quiesce_env.position_file).run("verify", timeout=120)

    ok = results["good"]
    assert ok.rc == 0, ok
    assert not _lines(ok, "FAIL"), ok
    said = ok.stdout
    assert "binlog ends exactly at the recorded %s:%s" % (position["binlog_file"], position["binlog_position"]) in said
    assert "GTID state gtid_binlog_pos = %r, as recorded" % position["gtid"] in said
    assert "no errors logged since the server started" in said
    assert re.search(r"ok +binlog\.index( and \S+)? name\(s\) files of this server only", said), said
    assert re.search(r"ok +\d+ MyISAM/Aria table\(s\) check clean", said), said

    bad = results["unlocked"]
    assert bad.rc == 9, bad
    assert "more than the recorded position" in bad.stdout and "GTID state gtid_binlog_pos is" in bad.stdout, bad
    assert "CHECK TABLE ... QUICK found" in bad.stdout, bad

    cut = results["truncated"]
    assert cut.rc == 9, cut
    assert "short of the recorded position" in cut.stdout and "GTID state" in cut.stdout, cut


def test_a_copy_whose_binlog_index_names_the_originals_files_is_refused(request, mariadb_factory, tmp_path):
    """log-bin given as an absolute path writes absolute names into binlog.index. A copy booted
    at another path (its own log-bin there) follows those names to the live original's
    binlog and reports the original's state as its own: verify and --apply refuse it."""
    original_dir = str(tmp_path / "original")
    original = mariadb_factory(name="absolute", datadir=original_dir,
                               options={"log-bin": os.path.join(original_dir, "binlog")})
    env = _env_for(request, original)
    assert env.run("freeze").rc == 0
    dest = str(tmp_path / "elsewhere")
    original.copy_datadir(dest)
    assert env.run("thaw").rc == 0
    with open(os.path.join(dest, "binlog.index")) as handle:
        assert handle.read().startswith(original_dir + "/binlog."), "the index must name absolute paths"
    original.sql("CREATE TABLE quiesce_probe.after_snapshot (a INT)")
    copy = _boot(request, original, dest, options={"log-bin": os.path.join(dest, "binlog")})
    copy_env = _env_for(request, copy, env.position_file)

    verified = copy_env.run("verify", "--skip-table-check")
    assert verified.rc == 9, verified
    fail = [line for line in _lines(verified, "FAIL") if "binlog.index" in line]
    assert fail and original_dir + "/binlog.000001" in fail[0] and "outside" in fail[0] and dest in fail[0], verified
    assert "fix: stop the server, rewrite" in fail[0], verified

    credentials = _credentials_file(tmp_path, "repl", "x")
    applied = copy_env.run("restore-plan", "--as-replica-of", "127.0.0.1:%d" % original.port, "--server-id", "2",
                           "--source-credentials", credentials, "--apply", "--yes")
    assert applied.rc == 9 and "binlog index check:" in applied.stderr, applied
    assert copy.replica_status() is None


def test_a_replica_copy_whose_relay_log_index_names_the_originals_files_fails_verify(
        request, mariadb, mariadb_factory, tmp_path):
    replica_dir = str(tmp_path / "replica")
    replica = mariadb_factory(name="replica", server_id=2, datadir=replica_dir,
                              options={"relay-log": os.path.join(replica_dir, "relay-bin"),
                                       "log-slave-updates": None})
    replica.replicate_from(mariadb)
    mariadb.sql("CREATE TABLE quiesce_probe.relayed (a INT)")
    replica.wait_caught_up(mariadb)
    env = _env_for(request, replica)
    assert env.run("freeze").rc == 0
    dest = str(tmp_path / "elsewhere")
    replica.copy_datadir(dest)
    assert env.run("thaw").rc == 0
    copy = _boot(request, replica, dest, options={"relay-log": os.path.join(dest, "relay-bin")})
    verified = _env_for(request, copy, env.position_file).run("verify", "--skip-table-check")
    assert verified.rc == 9, verified
    fail = [line for line in _lines(verified, "FAIL") if "relay-bin.index" in line]
    assert fail and replica_dir + "/relay-bin." in fail[0] and "outside" in fail[0], verified


def test_verify_says_when_the_position_file_is_missing_or_foreign(request, mariadb, mariadb_factory, quiesce_env):
    assert quiesce_env.run("freeze").rc == 0
    assert quiesce_env.run("thaw").rc == 0
    other = mariadb_factory(name="other", server_id=7)
    foreign = _env_for(request, other, quiesce_env.position_file).run("verify", "--skip-table-check")
    assert foreign.rc == 9, foreign
    assert "the position file is from another server: server_id 1 recorded, this server has 7" in foreign.stdout

    missing = str(quiesce_env.position_file) + ".absent"
    result = quiesce_env.run("verify", "--position-file", missing)
    assert result.rc == 9, result
    assert _lines(result, "FAIL") == ["FAIL  position file %s does not exist, so there is nothing to compare with: "
                                      "was this server restored from a snapshot taken by quiesce? fix: pass the "
                                      "file with --position-file" % missing], result


def _user_tables(server):
    return [(db, name) for db, name in server.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
        "AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') "
        "ORDER BY 1, 2")]


def _checksums(server, tables):
    return {t: server.query("CHECKSUM TABLE `%s`.`%s`" % t)[0][1] for t in tables}


def _credentials_file(tmp_path, user, password):
    path = tmp_path / "source.cnf"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("[client]\nuser = %s\npassword = %s\n" % (user, password))
    return str(path)


@pytest.mark.parametrize("replication", ["gtid", "position"])
def test_restored_copy_becomes_a_replica_of_the_original(request, mariadb, quiesce_env, writers, tmp_path,
                                                          replication):
    mariadb.create_user("repl", "repl-Secret-1", grants=("REPLICATION SLAVE",), host="127.0.0.1")
    load = writers(engines=ENGINES)
    (dest,) = _frozen_copies(mariadb, quiesce_env, load, tmp_path)
    copy = _boot(request, mariadb, dest)
    env = _env_for(request, copy, quiesce_env.position_file)
    assert env.run("verify").rc == 0
    credentials = _credentials_file(tmp_path, "repl", "repl-Secret-1")

    result = env.run("restore-plan", "--as-replica-of", "127.0.0.1:%d" % mariadb.port, "--replication",
                     replication, "--server-id", "2", "--source-credentials", credentials, "--apply", "--yes")
    assert result.rc == 0, result
    assert "repl-Secret-1" not in result.output
    assert "replicating from 127.0.0.1:%d" % mariadb.port in result.stdout
    position = quiesce_env.position()
    if replication == "gtid":
        assert "SET GLOBAL gtid_slave_pos = '%s';" % position["gtid"] in result.stdout
    else:
        assert ("MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d, MASTER_USE_GTID=no;"
                % (position["binlog_file"], position["binlog_position"])) in result.stdout
    assert copy.value("SELECT @@GLOBAL.server_id") == 2

    load.wait_for_progress(20)   # the original goes on; the replica follows
    load.stop()
    copy.wait_caught_up(mariadb, timeout=60)
    tables = _user_tables(mariadb)
    assert ("load", "t_myisam") in tables and ("load", "t_aria") in tables
    assert _checksums(copy, tables) == _checksums(mariadb, tables)
    assert table_rows(copy, load.database, load.tables) == table_rows(mariadb, load.database, load.tables)


def test_apply_refuses_a_clone_with_the_original_server_id(request, mariadb, quiesce_env, tmp_path):
    assert quiesce_env.run("freeze").rc == 0
    dest = str(tmp_path / "copy")
    mariadb.copy_datadir(dest)
    assert quiesce_env.run("thaw").rc == 0
    copy = _boot(request, mariadb, dest)
    env = _env_for(request, copy, quiesce_env.position_file)
    credentials = _credentials_file(tmp_path, "repl", "x")
    result = env.run("restore-plan", "--as-replica-of", "127.0.0.1:%d" % mariadb.port,
                     "--source-credentials", credentials, "--apply", "--yes")
    assert result.rc == 9, result
    assert "still has the original's server_id 1" in result.stderr
    # Without --yes it asks, and without a terminal to ask on it refuses.
    result = env.run("restore-plan", "--as-replica-of", "127.0.0.1:%d" % mariadb.port, "--server-id", "2",
                     "--source-credentials", credentials, "--apply")
    assert result.rc == 2 and "there is no terminal; fix: add --yes" in result.stderr, result
    assert copy.replica_status() is None, "nothing may be changed when the plan is refused"
    assert copy.value("SELECT @@GLOBAL.server_id") == 1


def test_apply_refuses_a_copy_that_does_not_match_its_position_file(request, mariadb, quiesce_env, tmp_path):
    """A copy made after thaw and more commits (what a crash-consistent snapshot of a failed
    freeze holds, next to the previous position file): the plan would replay those commits
    again, so --apply refuses before changing anything, naming the binlog and GTID checks."""
    mariadb.sql("CREATE TABLE quiesce_probe.later (id INT PRIMARY KEY) ENGINE=InnoDB")
    assert quiesce_env.run("freeze").rc == 0
    assert quiesce_env.run("thaw").rc == 0
    for n in range(5):
        mariadb.sql("INSERT INTO quiesce_probe.later VALUES (%d)" % n)
    dest = str(tmp_path / "unlocked")
    mariadb.copy_datadir(dest)
    copy = _boot(request, mariadb, dest)
    env = _env_for(request, copy, quiesce_env.position_file)
    credentials = _credentials_file(tmp_path, "repl", "x")
    result = env.run("restore-plan", "--as-replica-of", "127.0.0.1:%d" % mariadb.port, "--server-id", "2",
                     "--source-credentials", credentials, "--apply", "--yes")
    assert result.rc == 9, result
    (line,) = [l for l in result.stderr.splitlines() if "refused" in l]
    assert "does not match the position file" in line and "binlog check:" in line, result
    assert "more than the recorded position" in line and "GTID check:" in line and "fix:" in line, result
    assert copy.replica_status() is None, "nothing may be changed when the plan is refused"
    assert copy.value("SELECT @@GLOBAL.server_id") == 1


def test_apply_refuses_the_original_server(request, mariadb, quiesce_env, tmp_path):
    """The original holds the position file too, and its binlog may still end where the
    snapshot's did: it has been running since before the lock was taken, so it is no copy."""
    wait_for(lambda: int(mariadb.query("SHOW GLOBAL STATUS LIKE 'Uptime'")[0][1]) >= 2, 30,
             what="the server to have run for two whole seconds before the freeze")
    assert quiesce_env.run("freeze").rc == 0
    assert quiesce_env.run("thaw").rc == 0
    credentials = _credentials_file(tmp_path, "repl", "x")
    result = quiesce_env.run("restore-plan", "--as-replica-of", "127.0.0.1:9", "--server-id", "2",
                             "--source-credentials", credentials, "--apply", "--yes")
    assert result.rc == 9, result
    assert "has been running since" in result.stderr and "before the snapshot was taken" in result.stderr, result
    assert "it is not a copy restored from it" in result.stderr and "fix:" in result.stderr, result
    assert mariadb.replica_status() is None
    assert mariadb.value("SELECT @@GLOBAL.server_id") == 1


def test_apply_quotes_for_a_server_without_backslash_escapes(request, mariadb, quiesce_env, tmp_path):
    """sql_mode NO_BACKSLASH_ESCAPES on the copy, a password with a quote and a backslash: the
    copy authenticates with it, and no part of it reaches the output."""
    password = "a'b\\c"
    mariadb.create_user("repl", password, grants=("REPLICATION SLAVE",), host="127.0.0.1")
    assert quiesce_env.run("freeze").rc == 0
    dest = str(tmp_path / "copy")
    mariadb.copy_datadir(dest)
    assert quiesce_env.run("thaw").rc == 0
    copy = _boot(request, mariadb, dest, options={"sql-mode": "NO_BACKSLASH_ESCAPES"})
    assert "NO_BACKSLASH_ESCAPES" in copy.value("SELECT @@GLOBAL.sql_mode")
    env = _env_for(request, copy, quiesce_env.position_file)
    credentials = _credentials_file(tmp_path, "repl", password.replace("\\", "\\\\"))
    result = env.run("restore-plan", "--as-replica-of", "127.0.0.1:%d" % mariadb.port, "--server-id", "2",
                     "--source-credentials", credentials, "--apply", "--yes")
    for fragment in ("a'b", "b\\c", "\\c", "'b\\"):
        assert fragment not in result.output, (fragment, result)
    assert result.rc == 0, result
    assert "replicating from 127.0.0.1:%d" % mariadb.port in result.stdout
    copy.wait_caught_up(mariadb, timeout=60)


def _replay(plan_output):
    commands = [line for line in plan_output.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 1, plan_output
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", commands[0]], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")
    return commands[0]


@pytest.mark.parametrize("until", ["gtid", "position", "datetime"])
def test_pitr_command_brings_a_copy_to_exactly_the_target(request, mariadb, quiesce_env, writers, tmp_path, until):
    load = writers(engines=("InnoDB", "MyISAM"))
    (dest,) = _frozen_copies(mariadb, quiesce_env, load, tmp_path)
    position = quiesce_env.position()
    load.wait_for_progress(30)
    mariadb.sql("FLUSH BINARY LOGS")   # the replay spans two binlog files
    load.wait_for_progress(30)
    load.stop()
    # A target in the middle of what was committed after the snapshot, in the second file.
    events = mariadb.query("SHOW BINLOG EVENTS IN %s", (mariadb.binlog_files()[-1][0],), as_dict=True)
    commits = _commit_ends(events)
    middle = commits[len(commits) // 2]
    target_pos = "%s:%s" % (middle["Log_name"], middle["End_log_pos"])
    target_gtid = mariadb.value("SELECT BINLOG_GTID_POS(%s, %s)", (middle["Log_name"], int(middle["End_log_pos"])))
    assert target_gtid and target_gtid != position["gtid"]

    copy = _boot(request, mariadb, dest)
    env = _env_for(request, copy, quiesce_env.position_file)
    if until == "datetime":
        # A moment after every commit (a day ahead: mariadb-binlog reads it in local time).
        target = (datetime.datetime.now() + datetime.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
        target_gtid = mariadb.value("SELECT @@GLOBAL.gtid_binlog_pos")
    else:
        target = target_gtid if until == "gtid" else target_pos
    result = env.run("restore-plan", "--pitr-until", target)
    assert result.rc == 0, result
    command = _replay(result.stdout)
    assert "--socket=%s" % copy.socket in command
    assert copy.value("SELECT @@GLOBAL.gtid_binlog_pos") == target_gtid


def test_table_check_is_bounded_by_check_timeout(mariadb, quiesce_env):
    """A table CHECK TABLE cannot get (held by LOCK TABLES ... WRITE) fails verify after
    --check-timeout instead of hanging; the other checks pass on the unchanged server."""
    mariadb.sql("CREATE TABLE quiesce_probe.held (a INT) ENGINE=MyISAM")
    assert quiesce_env.run("freeze").rc == 0
    assert quiesce_env.run("thaw").rc == 0
    holder = mariadb.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES quiesce_probe.held WRITE")
        result = quiesce_env.run("verify", "--check-timeout", "1", timeout=60)
    finally:
        holder.close()
    assert result.rc == 9, result
    assert result.elapsed < 20, result
    assert "ok    binlog ends exactly at the recorded" in result.stdout
    assert "CHECK TABLE did not finish within --check-timeout=1 s" in result.stdout, result


def test_a_table_check_longer_than_connect_timeout_passes_within_check_timeout(mariadb, quiesce_env):
    """connect-timeout = 1 and a CHECK TABLE that waits longer (another session holds the table
    with LOCK TABLES ... WRITE and lets go only once the check has waited 1.5 s, as the server
    counts it): within --check-timeout that is no table problem."""
    mariadb.sql("CREATE TABLE quiesce_probe.busy (a INT) ENGINE=MyISAM")
    mariadb.sql("INSERT INTO quiesce_probe.busy VALUES (1), (2)")
    assert quiesce_env.run("freeze").rc == 0
    assert quiesce_env.run("thaw").rc == 0
    quiesce_env.write_config(connect_timeout=1)
    holder = mariadb.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES quiesce_probe.busy WRITE")
        running = quiesce_env.start("verify", "--check-timeout", "60")
        wait_for(lambda: mariadb.value("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE "
                                       "'CHECK TABLE %%busy%%' AND TIME_MS > 1500"), 60,
                 what="verify's CHECK TABLE to wait longer than connect-timeout")
        with holder.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        result = running.wait(60)
    finally:
        holder.close()
    assert result.rc == 0, result
    assert not _lines(result, "FAIL"), result
    assert re.search(r"ok +\d+ MyISAM/Aria table\(s\) check clean", result.stdout), result


@pytest.mark.parametrize("replication", ["gtid", "position"])
def test_snapshot_of_a_replica_follows_its_source_from_the_recorded_coordinates(
        request, mariadb, replica_of, writers, tmp_path, replication):
    primary = mariadb
    replica = replica_of(primary)
    env = _env_for(request, replica)
    load = writers(engines=("InnoDB", "MyISAM"))
    load.wait_for_progress(20)
    replica.wait_caught_up(primary)
    assert env.run("freeze").rc == 0
    dest = str(tmp_path / "replica-snapshot")
    replica.copy_datadir(dest)
    assert env.run("thaw").rc == 0
    (channel,) = env.position()["replica"]

    copy = _boot(request, replica, dest)
    copy_env = _env_for(request, copy, env.position_file)
    credentials = _credentials_file(tmp_path, "repl", "repl-secret")   # made by make_replica
    result = copy_env.run("restore-plan", "--as-replica-of", "127.0.0.1:%d" % primary.port, "--replication",
                          replication, "--server-id", "3", "--source-credentials", credentials, "--apply", "--yes")
    assert result.rc == 0, result
    assert "the snapshot's replication coordinates from 127.0.0.1:%d" % primary.port in result.stdout
    if replication == "gtid":
        assert "SET GLOBAL gtid_slave_pos = '%s';" % channel["gtid"] in result.stdout
    else:
        assert ("MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d" % (channel["source_log_file"],
                                                            channel["source_log_position"])) in result.stdout
    load.wait_for_progress(10)
    load.stop()
    copy.wait_caught_up(primary, timeout=60)
    tables = _user_tables(primary)
    assert _checksums(copy, tables) == _checksums(primary, tables)


# ------------------------------------------------------------------ MySQL

@pytest.mark.flavours(servers.MYSQL)
@pytest.mark.parametrize("replication", ["gtid", "position"])
def test_mysql_copy_verifies_then_becomes_a_replica_of_the_original(request, server_flavour, mariadb, quiesce_env,
                                                                    writers, tmp_path, replication):
    """MySQL 9.7: the position file names the server's UUID; verify passes on the booted copy;
    once the clone has its own identity (auto.cnf removed, new server_id), the plan makes it
    a replica by GTID auto-position or by file and position, and it catches up exactly."""
    mysql = mariadb
    mysql.create_user("repl", "repl-Secret-1", grants=("REPLICATION SLAVE",), host="127.0.0.1")
    load = writers(engines=mysql.ENGINES)
    (dest,) = _frozen_copies(mysql, quiesce_env, load, tmp_path)
    position = quiesce_env.position()
    uuid = mysql.value("SELECT @@GLOBAL.server_uuid")
    assert position["server_uuid"] == uuid and position["gtid"].startswith(uuid + ":1-")
    copy = _boot(request, mysql, dest)
    env = _env_for(request, copy, quiesce_env.position_file)
    verified = env.run("verify")
    assert verified.rc == 0, verified
    assert not _lines(verified, "FAIL"), verified

    # The clone still carries the original's identity: the plan refuses until it is fixed.
    credentials = _credentials_file(tmp_path, "repl", "repl-Secret-1")
    plan = ("restore-plan", "--as-replica-of", "127.0.0.1:%d" % mysql.port, "--replication", replication,
            "--server-id", "2", "--source-credentials", credentials)
    refused = env.run(*plan, "--apply", "--yes")
    assert refused.rc == 9 and "auto.cnf" in refused.stderr, refused
    copy.stop()
    os.unlink(os.path.join(dest, "auto.cnf"))
    copy.start()
    result = env.run(*plan, "--apply", "--yes")
    assert result.rc == 0, result
    assert "repl-Secret-1" not in result.output
    assert copy.value("SELECT @@GLOBAL.server_uuid") != uuid and copy.value("SELECT @@GLOBAL.server_id") == 2

    load.wait_for_progress(20)   # the original goes on; the replica follows
    load.stop()
    copy.wait_caught_up(mysql, timeout=60)
    tables = _user_tables(mysql)
    assert _checksums(copy, tables) == _checksums(mysql, tables)
    assert table_rows(copy, load.database, load.tables) == table_rows(mysql, load.database, load.tables)
