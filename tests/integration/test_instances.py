"""Several servers in one config ([instance:NAME] sections), on two real MariaDB servers.

freeze locks all or none: when the second instance fails, the first is released before
freeze exits and its writers go on at once; thaw releases all and reports each instance;
each instance has its own position file; status --json lists each.

Driver: the two-instance freeze and thaw runs with both drivers; the failure cases,
on all three server kinds, with PyMySQL only: a failing second instance reaches the
holder as quiesce's own error, mapped per driver in tests/unit/test_db_errors.py.
"""

import json
import os
import time

import pytest

from .load import Writers
from .prodhelpers import Background, instance_section, lock_waiters, no_lock_held

# Seconds within which writers must commit again once freeze has failed. Generous: a first
# server left locked would stay so until lock-timeout (300 s), and a busy machine only
# delays a commit by a fraction of this.
RESUME = 10.0

pytestmark = pytest.mark.flavours()


@pytest.fixture
def two(mariadb, mariadb_factory, quiesce_env, request):
    """(first, second, env, position files, configure): [instance:First] and [instance:Second].

    Capitalised names never occur in the lower-case temporary paths: a message that
    contains one really names the instance."""
    second = mariadb_factory(name="second", server_id=2)
    files = {name: os.path.join(quiesce_env.state_dir, "position-%s.json" % name) for name in ("First", "Second")}

    def configure(second_user=None, second_password=None, **settings):
        quiesce_env.write_config(
            extra_text=instance_section("First", mariadb, files["First"])
            + instance_section("Second", second, files["Second"], user=second_user, password=second_password),
            **settings)
    configure()
    yield mariadb, second, quiesce_env, files, configure
    if second.running:
        assert no_lock_held(second), "the second server was left locked"


def _writers(request, *servers):
    loads = []
    for server in servers:
        load = Writers(server, engines=("InnoDB", "MyISAM"), max_seconds=60)
        request.addfinalizer(lambda load=load: load.stop(timeout=15))
        loads.append(load.start())
    for load in loads:
        load.wait_for_progress(5)
    return loads


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_two_instances_lock_together_and_thaw_reports_each(driver, two, request):
    first, second, env, files, _configure = two
    lock = "backup-stage" if first.flavour == "mariadb" else "ftwrl"    # lock-method auto
    loads = _writers(request, first, second)
    result = env.run("freeze")
    assert result.rc == 0, result
    try:
        status = env.status()
        masters = {"First": first.binlog_status(), "Second": second.binlog_status()}
        # Both servers are locked: their writers wait for the lock.
        for server in (first, second):
            assert lock_waiters(server), "%s is not locked" % server.name
        positions = {name: _read(path) for name, path in files.items()}
    finally:
        thawed = env.run("thaw")
    assert thawed.rc == 0, thawed
    assert "First" in result.stderr and "Second" in result.stderr, result

    # One position file per instance, each with its own server's coordinates.
    for name, position in positions.items():
        assert position["instance"] == name
        assert position["lock"] == lock
        assert position["binlog_file"] == masters[name]["file"]
        assert position["binlog_position"] == masters[name]["position"]
        assert position["gtid"] == masters[name]["gtid"]
    if first.flavour == "mariadb":
        assert positions["First"]["gtid"].startswith("0-1-") and positions["Second"]["gtid"].startswith("0-2-")
    else:
        assert positions["First"]["gtid"].split(":")[0] == first.value("SELECT @@server_uuid")
        assert positions["Second"]["gtid"].split(":")[0] == second.value("SELECT @@server_uuid")
    assert not os.path.exists(env.position_file), "the single-instance position file was written too"

    assert status["frozen"] is True
    assert [(i["name"], i["lock"], i["position_file"]) for i in status["instances"]] == \
        [("First", lock, files["First"]), ("Second", lock, files["Second"])]

    # Thaw released both at once, and says so for each.
    for load in loads:
        load.wait_for_progress(1, timeout=RESUME + 0.5)
    last = env.status()["last_result"]
    assert last["outcome"] == "released"
    assert [i["name"] for i in last["instances"]] == ["First", "Second"]
    assert all(i["lost"] is None and i["held_ms"] > 0 for i in last["instances"]), last
    for name in ("First", "Second"):
        assert name in thawed.stderr + thawed.stdout, "thaw does not report instance %s: %r" % (name, thawed)


@pytest.mark.parametrize("failure", ["wrong-password", "server-down", "lock-timeout"])
def test_second_instance_fails_and_the_first_is_released(failure, two, request):
    first, second, env, files, configure = two
    blocker = None
    if failure == "wrong-password":
        second.create_user("qsecond", "right-password")
        configure(second_user="qsecond", second_password="wrong-password")
        expected = 3
    elif failure == "server-down":
        second.stop()
        expected = 3
    else:
        second.sql("CREATE TABLE quiesce_probe.held (a INT) ENGINE=MyISAM")
        blocker = Background(second, ["LOCK TABLES held WRITE"], database="quiesce_probe")
        request.addfinalizer(blocker.close)
        assert blocker.wait(5) and blocker.error is None, blocker.error
        configure(lock_method="ftwrl", acquire_timeout=1.5)
        expected = 5
    (load,) = _writers(request, first)
    began = time.monotonic()
    result = env.run("freeze")
    ended = time.monotonic()
    assert result.rc == expected, result

    # The first server takes writes again at once, and nothing of quiesce is left.
    load.wait_for_progress(1, timeout=RESUME)
    assert no_lock_held(first, RESUME)
    if failure == "lock-timeout":
        # The first server really was locked while the second one was tried.
        assert load.longest_wait(began, ended) > 1.0
    assert env.wait_no_holder(5) == set()
    assert env.status()["frozen"] is False
    assert not any(os.path.exists(path) for path in files.values()), "a failed freeze left position files"
    # With several servers, the message must say which one failed.
    assert "Second" in result.stderr, "the error does not name the failing instance: %r" % result
