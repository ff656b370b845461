"""The hook's thaw reaches the holder before the configuration is parsed (quiesce.fastthaw).

Writers wait for thaw whenever no filesystem thaw released the lock first, so `hook thaw`
tells the holder to release before it imports the command line machinery, then parses
and validates the configuration as always and reports the holder's answer.

Driver: PyMySQL only. `hook thaw` talks to the holder over its control socket; the
release it asks for is the holder's, run with both drivers in test_freeze_thaw.py.
"""

import os
import subprocess
import sys

from .checks import assert_clean, assert_frozen, assert_no_holder, assert_writable
from .runner import base_env


def _hook(env, *args, python_path=None):
    cmd = [sys.executable, "-sB", "-c", "from quiesce.hooks import hook_main; hook_main()", *args]
    environment = base_env(env.tag)
    environment["QUIESCE_CONFIG"] = env.conf
    if python_path:
        environment["PYTHONPATH"] = python_path + os.pathsep + environment["PYTHONPATH"]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=environment, cwd="/", timeout=60)


def test_hook_thaw_reports_what_the_holder_answered(mariadb, quiesce_env):
    env = quiesce_env
    assert env.run("freeze").rc == 0
    assert_frozen(mariadb)
    proc = _hook(env, "thaw")
    assert proc.returncode == 0, proc
    assert "thawed: lock held" in proc.stderr, proc
    assert_clean(env, mariadb)
    # The answer was reported: a second thaw has nothing left to say.
    again = _hook(env, "thaw")
    assert again.returncode == 0 and "nothing is frozen" in again.stderr, again


def test_hook_thaw_with_a_broken_config_still_releases_and_says_so(mariadb, quiesce_env):
    env = quiesce_env
    assert env.run("freeze").rc == 0
    assert_frozen(mariadb)
    env.write_config(extra_text="lock-timeout = banana\n")
    proc = _hook(env, "thaw")
    # The configuration error is reported as always (one line, exit 2) ...
    assert proc.returncode == 2, proc
    assert "lock-timeout" in proc.stderr, proc
    # ... and the lock was released all the same, which the hook says.
    assert "the lock was released before the configuration was read: outcome released" in proc.stderr, proc
    assert_writable(mariadb)
    assert_no_holder(env)


def test_hook_thaw_releases_before_loading_configargparse(mariadb, quiesce_env, tmp_path):
    """A configargparse that cannot be imported stops the hook only after the release."""
    env = quiesce_env
    (tmp_path / "configargparse.py").write_text("raise ImportError('configargparse is not loaded in this test')\n")
    assert env.run("freeze").rc == 0
    assert_frozen(mariadb)
    proc = _hook(env, "thaw", python_path=str(tmp_path))
    assert proc.returncode != 0 and "configargparse is not loaded" in proc.stderr, proc
    assert_writable(mariadb)
    assert_no_holder(env)


def test_quiesce_thaw_releases_before_the_configuration_is_parsed(mariadb, quiesce_env, tmp_path):
    """The command, not only the hook: a configargparse that cannot be imported stops it
    only after the release (before, `quiesce thaw` parsed everything first)."""
    env = quiesce_env
    (tmp_path / "configargparse.py").write_text("raise ImportError('configargparse is not loaded in this test')\n")
    assert env.run("freeze", "--caller", "veeam").rc == 0
    assert_frozen(mariadb)
    broken = env.env({"PYTHONPATH": str(tmp_path) + os.pathsep + base_env(env.tag)["PYTHONPATH"]})
    proc = subprocess.run(env.command("thaw", "--caller", "veeam"), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=broken, cwd="/", timeout=60)
    assert proc.returncode != 0 and "configargparse is not loaded" in proc.stderr, proc
    assert_writable(mariadb)
    assert_no_holder(env)


def test_quiesce_freeze_with_a_caller_named_thaw_never_releases(mariadb, quiesce_env):
    env = quiesce_env
    assert env.run("freeze", "--caller", "veeam").rc == 0
    assert env.run("freeze", "--caller", "thaw").rc == 0
    assert_frozen(mariadb)
    assert env.status()["callers"] == ["veeam", "thaw"]
    assert env.run("thaw", "--all").rc == 0
    assert_clean(env, mariadb)
