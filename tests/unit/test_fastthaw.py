"""fastthaw finds runtime-dir as the full configuration parse does, without parsing it all."""

import os

import pytest

from quiesce import hooks
from quiesce.base import paths
from quiesce.commands import fastthaw


@pytest.mark.parametrize("text, expected", [
    ("runtime-dir = /run/q\n", "/run/q"),
    ("runtime-dir=/run/q\n", "/run/q"),
    ("runtime-dir: /run/q\n", "/run/q"),
    ("runtime-dir /run/q\n", "/run/q"),
    ("  runtime-dir = '/run/q'  \n", "/run/q"),
    ('runtime-dir = "/run/q" # where the holder listens\n', "/run/q"),
    ("runtime-dir = /run/q ; comment\n", "/run/q"),
    ("runtime-dir = /run/a\nruntime-dir = /run/b\n", "/run/b"),
    ("# runtime-dir = /run/q\n; runtime-dir = /run/q\n", None),
    ("runtime-dirs = /run/q\n", None),
    ("[quiesce]\nruntime-dir = /run/q\n", "/run/q"),
    ("[instance:a]\nruntime-dir = /run/q\n", None),
    ("[instance:a]\nsocket = /s\n[main]\nruntime-dir = /run/q\n", "/run/q"),
    ("lock-timeout = banana\nruntime-dir = /run/q\n\xff\n", "/run/q"),
])
def test_config_value(text, expected):
    assert fastthaw.config_value(text, "runtime-dir") == expected


def _config(tmp_path, text, mode=0o600):
    path = tmp_path / "quiesce.conf"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_runtime_dir_precedence(tmp_path):
    conf = _config(tmp_path, "runtime-dir = /from/file\n")
    environ = {"QUIESCE_CONFIG": conf}
    assert fastthaw.runtime_dir(["hook", "thaw"], environ) == "/from/file"
    assert fastthaw.runtime_dir(["hook", "thaw"], dict(environ, QUIESCE_RUNTIME_DIR="/from/env")) == "/from/env"
    assert fastthaw.runtime_dir(["--runtime-dir", "/from/argv", "thaw"],
                                dict(environ, QUIESCE_RUNTIME_DIR="/from/env")) == "/from/argv"
    assert fastthaw.runtime_dir(["--runtime-dir=/from/argv", "thaw"], environ) == "/from/argv"
    assert fastthaw.runtime_dir(["--config", conf, "thaw"], {}) == "/from/file"
    assert fastthaw.runtime_dir(["-c", conf, "thaw"], {}) == "/from/file"


def test_runtime_dir_default_and_refusals(tmp_path):
    assert fastthaw.runtime_dir(["thaw"], {"QUIESCE_CONFIG": _config(tmp_path, "user = x\n")}) == paths.RUNTIME_DIR
    # A file the full parse refuses, or that is missing, is not acted on.
    assert fastthaw.runtime_dir(["thaw"], {"QUIESCE_CONFIG": _config(tmp_path, "runtime-dir = /x\n", 0o622)}) is None
    assert fastthaw.runtime_dir(["thaw"], {"QUIESCE_CONFIG": str(tmp_path / "missing")}) is None


def test_release_sends_nothing_without_a_holder(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    assert fastthaw.release(["hook", "thaw"], {"QUIESCE_RUNTIME_DIR": str(runtime)}) is None
    assert fastthaw.release(["hook", "thaw"], {"QUIESCE_RUNTIME_DIR": "relative/dir"}) is None
    os.chmod(runtime, 0o777)
    assert fastthaw.release(["hook", "thaw"], {"QUIESCE_RUNTIME_DIR": str(runtime)}) is None


@pytest.mark.parametrize("args, plain", [
    (["thaw"], True),
    (["--config", "/etc/q.conf", "thaw"], True),
    (["-c", "/etc/q.conf", "thaw", "--caller", "veeam"], True),
    (["thaw", "--all", "--caller=admin", "--runtime-dir", "/run/q"], True),
    (["freeze", "--caller", "thaw"], False),         # a value, not the command
    (["--caller", "thaw", "freeze"], False),
    (["thaw", "--json"], False),                     # an option the fast path does not know
    (["--lock-timeout", "60", "thaw"], False),
    (["thaw", "extra"], False),
    (["status"], False),
    (["--config"], False),
    ([], False),
])
def test_only_a_certain_thaw_command_takes_the_fast_path(args, plain):
    assert hooks.is_plain_thaw(args) is plain


@pytest.mark.parametrize("text", [
    "runtime-dir = /run/q\n", "runtime-dir=/run/q\n", "runtime-dir: /run/q\n", "runtime-dir /run/q\n",
    "  runtime-dir = '/run/q'  \n", 'runtime-dir = "/run/q" # where the holder listens\n',
    "runtime-dir = /run/q ; comment\n", "runtime-dir = /run/a\nruntime-dir = /run/b\n",
    "# runtime-dir = /run/x\n", "[quiesce]\nruntime-dir = /run/q\n",
    "[instance:a]\nsocket = /s\n[main]\nruntime-dir = /run/q\n", "runtime_dir = /run/u\n",
    "lock-timeout = 60\n",
])
def test_the_fast_path_finds_the_runtime_dir_the_full_parse_uses(tmp_path, text):
    """fastthaw reads runtime-dir by hand: it must agree with config.parse wherever that
    accepts the file (where it refuses it, the normal path reports the error anyway)."""
    from quiesce.base import config
    from quiesce.base.errors import QuiesceError
    conf = _config(tmp_path, text)
    try:
        expected = config.parse(["--config", conf, "status"]).runtime_dir
    except QuiesceError:
        return
    assert fastthaw.runtime_dir(["--config", conf, "thaw"], {}) == expected


def test_a_fifo_as_config_neither_blocks_nor_counts(tmp_path):
    # Opening a FIFO for reading waits for a writer; the fast path must not. In a child
    # process, so that a regression fails after a bound instead of hanging the suite.
    import subprocess
    import sys
    fifo = str(tmp_path / "quiesce.conf")
    os.mkfifo(fifo, 0o600)
    code = ("import sys; from quiesce.commands import fastthaw; "
            "print(fastthaw.runtime_dir(['--config', sys.argv[1], 'thaw'], {}))")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        done = subprocess.run([sys.executable, "-c", code, fifo], cwd=repo, capture_output=True, text=True,
                              timeout=10, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    except subprocess.TimeoutExpired:
        pytest.fail("fastthaw.runtime_dir blocked opening a FIFO given as --config")
    assert done.returncode == 0, done.stderr
    # Not a regular file: the full parse refuses it, so nothing here acts on it.
    assert done.stdout.strip() == "None"
