"""The bash completion script: up to date with the parsers, and what bash completes with it."""

import os
import subprocess

import pytest

from quiesce import completion
from quiesce.agents import catalog
from quiesce.base import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "completion", "quiesce")


def test_committed_script_is_generated_from_the_parsers():
    with open(SCRIPT, encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == completion.script(), "completion/quiesce is out of date: run 'make completion'"
    # lintian (very-long-line-length-in-source-file) refuses lines over 512 characters.
    assert max(len(line) for line in committed.splitlines()) <= completion.WIDTH + 2


def complete(*words, cwd=None):
    """What bash offers for the last of words (COMP_WORDS split as bash splits them)."""
    words = ("quiesce",) + words
    program = 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _quiesce; ' \
              'printf "%s\\n" "${COMPREPLY[@]}"'
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", program, "bash", SCRIPT] + list(words),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True, cwd=cwd)
    assert out.stderr == ""
    return sorted(filter(None, out.stdout.split("\n")))


def help_flags(command):
    return sorted(action.option_strings[-1] for action in config.build_parser(command)._actions
                  if action.option_strings and action.help != "==SUPPRESS==")


def test_commands():
    assert complete("") == sorted(config.COMMANDS)
    assert complete("reg") == ["register"]
    assert complete("--config", "/etc/quiesce.conf", "re") == ["register", "restore-plan"]
    assert complete("--config", "=", "/etc/quiesce.conf", "st") == ["status"]


@pytest.mark.parametrize("command", config.COMMANDS)
def test_each_command_offers_its_own_options(command):
    before = ["hook", "freeze"] if command == "hook" else [command]
    assert complete(*before, "--") == help_flags(command)


def test_options_before_the_command_are_the_common_ones():
    assert complete("--") == help_flags(None)
    assert complete("--config", "/x", "status", "--j") == ["--json"]
    assert "--cycle" not in complete("verify", "--")


def test_agents_hook_actions_and_choices():
    assert complete("register", "") == sorted(catalog.REGISTERABLE)
    assert complete("register", "vmware", "q") == ["qemu-ga"]
    assert complete("unregister", "") == sorted(catalog.REGISTERABLE)
    assert complete("hook", "") == ["freeze", "freezeFail", "thaw"]
    assert complete("hook", "thaw", "") == []
    assert complete("freeze", "--driver", "") == ["auto", "mysql-connector", "pymysql"]
    assert complete("freeze", "--ssl-mode", "=", "verify") == ["verify-ca", "verify-identity"]
    assert complete("status", "--release-on-fs-thaw", "") == ["false", "true"]
    assert complete("restore-plan", "--replication", "g") == ["gtid"]
    assert complete("freeze", "--lock-timeout", "") == []


def test_file_and_directory_values(tmp_path):
    (tmp_path / "quiesce.conf").write_text("")
    (tmp_path / "rundir").mkdir()
    assert complete("--config", "qu", cwd=str(tmp_path)) == ["quiesce.conf"]
    assert complete("freeze", "--runtime-dir", "", cwd=str(tmp_path)) == ["rundir"]
    assert complete("freeze", "--metrics-file", "", cwd=str(tmp_path)) == ["auto", "none", "quiesce.conf",
                                                                            "rundir"]


def test_the_script_registers_the_function():
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", 'source "$1"; complete -p quiesce', "bash", SCRIPT],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    assert out.strip() == "complete -F _quiesce quiesce"
