"""cli.main: errors become one line on stderr and in the system log, and the documented exit code."""

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from quiesce import cli
from quiesce.base import log

from .test_config import clean_env  # noqa: F401 (autouse: no QUIESCE_* variables, no /etc config)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534


@pytest.fixture
def syslog(tmp_path, monkeypatch):
    """A real datagram socket standing in for /dev/log; returns a function giving what arrived."""
    path = str(tmp_path / "dev-log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.setblocking(False)
    monkeypatch.setattr(log, "SYSLOG_SOCKETS", (path,))
    logger = logging.getLogger(log.LOGGER_NAME)
    saved = list(logger.handlers)
    for handler in saved:
        logger.removeHandler(handler)

    def received():
        messages = []
        while True:
            try:
                messages.append(server.recv(65536).decode("utf-8"))
            except BlockingIOError:
                return messages

    yield received
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved:
        logger.addHandler(handler)
    server.close()


def conf(tmp_path, text):
    path = tmp_path / "quiesce.conf"
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


ERR = "<%d>quiesce[" % (log.SyslogHandler.FACILITY_DAEMON * 8 + 3)


def test_config_errors_reach_the_system_log(tmp_path, syslog, capsys):
    rc = cli.main(["--config", conf(tmp_path, "long-query-wait = soon\n"), "freeze"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("quiesce: error: config file ") and err.count("\n") == 1
    records = syslog()
    assert len(records) == 1 and records[0].startswith(ERR) and "long-query-wait" in records[0]


@pytest.mark.parametrize("argv", [["hook", "freezeFail"], ["hook", "FREEZEFAIL", "", ""]])
def test_freezefail_succeeds_even_on_a_config_error(tmp_path, syslog, argv):
    assert cli.main(["--config", conf(tmp_path, "lock-timeout = abc\n")] + argv) == 0
    assert "freezeFail always succeeds" in syslog()[0]
    assert cli.main(["--config", conf(tmp_path, "lock-timeout = abc\n"), "hook", "freeze"]) == 2


def test_internal_error_traceback_is_recorded_at_error(tmp_path, syslog, capsys, monkeypatch):
    def broken(action, settings, early_thaw=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_dispatch", broken)
    assert cli.main(["--config", conf(tmp_path, ""), "status"]) == 1
    records = syslog()
    assert len(records) == 1 and records[0].startswith(ERR) and "\n" not in records[0]
    assert "internal error: RuntimeError: boom" in records[0]
    assert "Traceback (most recent call last)" in records[0] and "in broken" in records[0]
    assert capsys.readouterr().err.count("\n") == 1


# on-failure = continue: every failure of a freeze lets the snapshot go ahead (exit 0),
# logged loudly; a freeze without it, and any other command, keeps its exit status.
@pytest.mark.parametrize("where", ["file", "drop-in", "environment", "command line"])
@pytest.mark.parametrize("argv", [["hook", "freeze"], ["freeze"]])
def test_continue_covers_a_config_error(tmp_path, syslog, capsys, monkeypatch, where, argv):
    text = "lock-timeout = abc\n" + ("on-failure = continue\n" if where == "file" else "")
    path = conf(tmp_path, text)
    if where == "drop-in":
        os.mkdir(tmp_path / "conf.d", 0o755)
        conf(tmp_path / "conf.d", "on-failure = continue\n")
        os.rename(tmp_path / "conf.d" / "quiesce.conf", tmp_path / "conf.d" / "50-site.conf")
    if where == "environment":
        monkeypatch.setenv("QUIESCE_ON_FAILURE", "continue")
    extra = ["--on-failure", "continue"] if where == "command line" else []
    assert cli.main(["--config", path] + extra + argv) == 0
    record = syslog()[0]
    assert "FREEZE FAILED: error: config file" in record and "lock-timeout" in record
    assert "only crash-consistent" in record and capsys.readouterr().err.count("\n") == 1


def test_continue_is_read_only_from_where_parse_would_take_it(tmp_path, syslog, monkeypatch):
    path = conf(tmp_path, "lock-timeout = abc\non-failure = continue\n")
    # A later source that says fail wins, as it would in parse().
    monkeypatch.setenv("QUIESCE_ON_FAILURE", "fail")
    assert cli.main(["--config", path, "freeze"]) == 2
    monkeypatch.delenv("QUIESCE_ON_FAILURE")
    # Not for other commands.
    assert cli.main(["--config", path, "hook", "thaw"]) == 2
    assert cli.main(["--config", path, "check"]) == 2
    # Not from a file others may change: that is the config error itself.
    os.chmod(path, 0o666)
    assert cli.main(["--config", path, "freeze"]) == 2
    assert "writable" in syslog()[-1] or "mode" in syslog()[-1]


@pytest.mark.parametrize("policy, rc", [("continue", 0), ("fail", 1)])
def test_continue_covers_an_internal_error(tmp_path, syslog, monkeypatch, policy, rc):
    def broken(action, settings, early_thaw=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_dispatch", broken)
    assert cli.main(["--config", conf(tmp_path, "on-failure = %s\n" % policy), "hook", "freeze"]) == rc
    record = syslog()[0]
    assert "internal error: RuntimeError: boom" in record and "Traceback" in record
    assert ("FREEZE FAILED" in record) == (policy == "continue")


def test_continue_covers_a_config_error_found_after_parsing(tmp_path, syslog, monkeypatch):
    from quiesce.base.errors import ConfigError

    def refused(action, settings, early_thaw=None):
        raise ConfigError("unsafe runtime-dir")

    monkeypatch.setattr(cli, "_dispatch", refused)
    assert cli.main(["--config", conf(tmp_path, "on-failure = continue\n"), "freeze"]) == 0
    assert cli.main(["--config", conf(tmp_path, "on-failure = fail\n"), "freeze"]) == 2


@pytest.mark.parametrize("argv", [
    ["--instance", "{}", "freeze"],
    ["--instance", '{"name": "../../../etc/evil"}', "freeze"],
    ["--instance", '{"name": "a", "password": ["x"]}', "freeze"],
])
def test_bad_instances_are_one_line_exit_2(tmp_path, syslog, capsys, argv):
    # Private paths: should the instance be accepted, the freeze touches nothing shared.
    private = ["--runtime-dir", str(tmp_path / "run"), "--socket", str(tmp_path / "none.sock")]
    assert cli.main(private + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("quiesce: error: ") and err.count("\n") == 1


@pytest.fixture
def nobody_tree():
    """A directory nobody can traverse, with a config file nobody owns, a root-only runtime-dir
    and a copy of the package (the source tree may sit where nobody cannot read it)."""
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root (unprivileged package builds run these unit tests)")
    top = tempfile.mkdtemp(prefix="quiesce-cli-")
    try:
        os.chmod(top, 0o755)
        shutil.copytree(os.path.join(REPO, "quiesce"), os.path.join(top, "lib", "quiesce"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        runtime = os.path.join(top, "run")
        os.mkdir(runtime, 0o700)
        config = os.path.join(top, "quiesce.conf")
        with open(config, "w") as handle:
            handle.write("runtime-dir = %s\nsocket = %s/mysqld.sock\n" % (runtime, top))
        os.chmod(config, 0o600)
        os.chown(config, NOBODY, NOBODY)
        yield config, runtime
    finally:
        shutil.rmtree(top)


def run_as_nobody(config, *args):
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv is missing: install util-linux (make deps)"
    lib = os.path.join(os.path.dirname(config), "lib")
    return subprocess.run(
        [setpriv, "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
         sys.executable, "-m", "quiesce", "--config", config] + list(args),
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": lib, "LANG": "C.UTF-8"}, cwd="/",
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command,rc", [(["freeze"], 2), (["thaw"], 2), (["status"], 2),
                                        (["hook", "freezeFail"], 0)])
def test_a_user_who_is_not_root_gets_one_line(nobody_tree, command, rc):
    config, runtime = nobody_tree
    result = run_as_nobody(config, *command)
    assert result.returncode == rc, result
    assert result.stderr.count("\n") == 1 and "quiesce must run as root" in result.stderr, result
    assert runtime in result.stderr


def test_a_user_who_is_not_root_cannot_create_runtime_dir(nobody_tree):
    config, runtime = nobody_tree
    with open(config, "w") as handle:
        handle.write("runtime-dir = %s/sub\n" % runtime)
    result = run_as_nobody(config, "freeze")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result
    assert "quiesce must run as root" in result.stderr, result
