"""enabled = false: installed before configured, the snapshot agents' hooks do nothing and
say so, never failing a backup; the history and check show it; the command line still
works for trying quiesce out (quiesce(8), ROLLING OUT)."""

import json
import os
import subprocess
import sys

from .checks import assert_clean, assert_frozen, assert_writable
from .runner import base_env


def _hook(env, *args):
    environment = base_env(env.tag)
    environment["QUIESCE_CONFIG"] = env.conf
    return subprocess.run([sys.executable, "-sB", "-c", "from quiesce.hooks import hook_main; hook_main()", *args],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=environment, cwd="/", timeout=60)


def _disarm(env, wrong_password=True):
    directory = os.path.join(os.path.dirname(env.conf), "conf.d")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "00-disarmed.conf")
    with open(path, "w") as handle:
        handle.write("enabled = false\n")
    os.chmod(path, 0o600)
    if wrong_password:
        # Not configured yet: an armed hook would fail every snapshot.
        env.write_config(user="nobody-yet", password="not-configured")
    return path


def test_a_disarmed_hook_never_fails_a_snapshot_and_says_it_is_not_quiesced(mariadb, quiesce_env):
    env = quiesce_env
    disarm = _disarm(env)
    freeze = _hook(env, "freeze")
    assert freeze.returncode == 0, freeze
    assert "NOT quiesced" in freeze.stderr and "enabled = true" in freeze.stderr, freeze
    assert_writable(mariadb)
    assert not env.holder_pids()
    thaw = _hook(env, "thaw")
    assert thaw.returncode == 0, thaw
    with open(env.history_file, encoding="utf-8") as handle:
        (entry,) = [json.loads(line) for line in handle]
    assert entry["outcome"] == "disabled" and entry["ok"] is False, entry
    checked = env.run("check")
    assert checked.rc != 0 and "quiesce is disabled" in checked.output, checked

    # Configured and armed: the same hook now locks.
    env.write_config(user="root", password=None)
    os.unlink(disarm)
    assert _hook(env, "freeze").returncode == 0
    assert_frozen(mariadb)
    assert _hook(env, "thaw").returncode == 0
    assert_clean(env, mariadb)


def test_while_disarmed_the_command_line_still_freezes_for_trying_it_out(mariadb, quiesce_env):
    env = quiesce_env
    _disarm(env, wrong_password=False)
    checked = env.run("check", "--cycle", timeout=120)
    assert "freeze/thaw cycle: freeze took" in checked.output, checked
    assert checked.rc == 2 and "quiesce is disabled" in checked.output, checked
    assert env.run("freeze", "--caller", "admin").rc == 0
    assert_frozen(mariadb)
    assert env.run("thaw", "--caller", "admin").rc == 0
    assert_clean(env, mariadb)
