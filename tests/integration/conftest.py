"""Fixtures for the integration tests: a real MariaDB per test, quiesce's config and runner.

Every test gets a fresh server (a copy of a template datadir; start-up takes about 0.1 s),
its own config file, runtime-dir and position file. At the end of each test the fixtures
check, and then enforce, that nothing is left behind: no quiesce process of the test's
(holder or command) is alive, and the server accepts a write within 10 s. A test that left
something behind errors at teardown even if its own assertions passed.

quiesce runs with PyMySQL (what Debian, Ubuntu and EL9 package) unless a test says
otherwise. A test that takes a `driver` argument runs once per database driver quiesce
supports, its `quiesce_env` then using that driver; a module whose tests do not says in
its docstring why PyMySQL alone is enough there.

Servers: by default the host's MariaDB (Debian 12's 10.11). A test or module marked
`@pytest.mark.flavours(*names)` (names from servers.FLAVOURS, or none for all of them) runs
once per server kind, its `mariadb` fixture and factories then giving that kind (MariaDB
11.8 and MySQL 9.7 run in chroots built once and cached, see chroot.py). The kind a test
runs against is the `server_flavour` fixture.
"""

import importlib.util
import inspect
import os
import statistics

import pytest

from .load import Writers
from . import servers
from .chroot import ChrootError
from .mariadb import MariaDB, kill_all_started
from .runner import QuiesceEnv

DRIVERS = ("mysql-connector", "pymysql")
DEFAULT_DRIVER = "pymysql"
TEST_TIMEOUT = 180          # seconds, per integration test (needs pytest-timeout)

_start_times = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "flavours(*names): run once per server kind named (none: all of %s)"
                            % ", ".join(servers.FLAVOURS))


def pytest_generate_tests(metafunc):
    # quiesce_env asks for `driver`, so it is in the fixture closure of every test using
    # quiesce_env: only a test naming it runs once per driver.
    if "driver" in inspect.signature(metafunc.function).parameters:
        metafunc.parametrize("driver", DRIVERS, indirect=True)
    marker = metafunc.definition.get_closest_marker("flavours")
    if marker is not None and "server_flavour" in metafunc.fixturenames and not _parametrizes_flavour(metafunc):
        names = marker.args or servers.FLAVOURS
        unknown = set(names) - set(servers.FLAVOURS)
        if unknown:
            raise ValueError("unknown server flavour(s) %s in %s" % (sorted(unknown), metafunc.definition.nodeid))
        metafunc.parametrize("server_flavour", names, indirect=True, scope="function")


def _parametrizes_flavour(metafunc) -> bool:
    """The test parametrizes server_flavour itself (with other arguments, e.g. servers.with_locks())."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "server_flavour" in names:
            return True
    return False


def pytest_collection_modifyitems(config, items):
    has_timeout = config.pluginmanager.hasplugin("timeout")
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(pytest.mark.integration)
            if has_timeout and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


def pytest_sessionfinish(session, exitstatus):
    kill_all_started()
    servers.forget_roots()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for flavour, times in sorted(_start_times.items()):
        terminalreporter.write_line("%s server start-up: %d starts, median %.3f s, max %.3f s"
                                    % (flavour, len(times), statistics.median(times), max(times)))


@pytest.fixture(scope="session")
def driver_modules():
    """Fail loudly (never skip) when a driver quiesce should be tested with is missing."""
    missing = []
    for name, module in (("mysql-connector", "mysql.connector"), ("pymysql", "pymysql")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.fixture
def driver(request, driver_modules):
    """The driver this test runs quiesce with: each of DRIVERS in turn, or DEFAULT_DRIVER."""
    name = getattr(request, "param", DEFAULT_DRIVER)
    if name in driver_modules:
        pytest.fail("driver %s is not importable: run 'make deps' (mysql-connector-python goes to .deps/)" % name)
    return name


@pytest.fixture
def server_flavour(request) -> str:
    """The server kind this test runs against (see the flavours marker)."""
    return getattr(request, "param", servers.HOST_MARIADB)


@pytest.fixture
def server_class(server_flavour):
    """The class of this test's servers; a chroot that cannot be built fails the test."""
    try:
        return servers.server_class(server_flavour)
    except ChrootError as exc:
        pytest.fail("%s: %s" % (server_flavour, exc), pytrace=False)


def _note_start(server: MariaDB) -> None:
    _start_times.setdefault(getattr(server, "KIND", "") or servers.HOST_MARIADB, []).append(server.start_seconds)


def _new_server(request, **kwargs) -> MariaDB:
    server = request.getfixturevalue("server_class")(**kwargs)
    request.addfinalizer(server.cleanup)
    server.start()
    _note_start(server)
    server.create_probe_tables()
    return server


@pytest.fixture
def mariadb(request, server_class) -> MariaDB:
    """A fresh private server for this test (killed and removed afterwards): the host's
    MariaDB, or the kind the flavours marker asks for."""
    return _new_server(request)


@pytest.fixture
def mariadb_factory(request, server_class):
    """Start more servers: mariadb_factory(name=..., server_id=..., options={...})."""
    def make(**kwargs) -> MariaDB:
        return _new_server(request, **kwargs)
    return make


@pytest.fixture
def replica_of(request):
    """replica_of(primary, parallel_threads=0, ...) -> a running replica (GTID, slave_pos) of
    the primary's kind."""
    def make(primary: MariaDB, **kwargs) -> MariaDB:
        replica = primary.make_replica(**kwargs)
        request.addfinalizer(replica.cleanup)
        _note_start(replica)
        return replica
    return make


@pytest.fixture
def quiesce_env(request, mariadb, driver) -> QuiesceEnv:
    """Config file (0600), runtime-dir (0700) and position file for this test's server.

    Uses the `driver` fixture (PyMySQL unless the test runs per driver). Teardown fails the
    test if a quiesce process was left running or the server is still locked.
    """
    env = QuiesceEnv(mariadb, driver=driver)
    yield env
    problems = []
    report = env.cleanup()
    if report["holders"]:
        problems.append("quiesce process(es) still alive after the test: %s (thaw: %r)"
                        % (sorted(report["holders"]), report["thaw"]))
    if mariadb.running:
        # Generous: a lock never lets the write through, a busy machine only delays it.
        if mariadb.try_write(10.0) is None:
            problems.append("the server was still locked after the test: a write did not commit within 10 s")
            for conn_id, row in mariadb.connection_ids().items():
                if row.get("USER") not in ("system user", "event_scheduler", "repl"):
                    try:
                        mariadb.sql("KILL %d" % conn_id)
                    except Exception:
                        pass
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def quiesce_conf(quiesce_env) -> str:
    return quiesce_env.conf


@pytest.fixture
def run_quiesce(quiesce_env):
    """run_quiesce(*args, timeout=60) -> (rc, stdout, stderr) (a Result: also .elapsed)."""
    return quiesce_env.run


@pytest.fixture
def writers(request, mariadb):
    """Factory for concurrent writers on the test server; all are stopped at teardown."""
    started = []

    def make(server=None, **kwargs) -> Writers:
        load = Writers(server or mariadb, **kwargs)
        started.append(load)
        return load.start()

    yield make
    for load in started:
        load.stop(timeout=15)
