"""Settings from the command line, the environment and the config file.

Precedence: command line > environment (QUIESCE_*) > config file > built-in default.
Everything is validated here, before any command runs: a bad value is a configuration
error (exit 2) whatever the command and whether or not a server is running.

Secrets come only from files: a password given on the command line or in the environment
would be visible to every user through ps or /proc, so it is refused. Error messages
name the setting at fault but never repeat its value, which could be a password typed
in the wrong place.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable, Mapping, Sequence
import json
import math
import os
import re
import sys

import configargparse

from quiesce import __version__
from quiesce.base import optionfile, paths, safefile
from quiesce.base.errors import ConfigError

COMMANDS = ("freeze", "thaw", "run", "hook", "status", "check", "register", "unregister", "verify",
            "restore-plan")
# Commands that take words after them (an action, agent names, the command to run).
_WORD_COMMANDS = ("hook", "register", "unregister", "run")
HOOK_ACTIONS = {"freeze": "freeze", "thaw": "thaw", "freezefail": "freezeFail"}
CONNECTION_KEYS = ("socket", "host", "port", "user", "password", "defaults-file", "position-file")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NUMBER_RE = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")

# Upper bounds of the seconds options. They catch typos (3000000 for 300) and keep every
# timer far inside what poll(), the drivers and the server accept (poll() takes at most
# 2^31 ms, about 24.8 days). A day is longer than any snapshot: no snapshot agent keeps a
# guest frozen for more than minutes. An hour is longer than any agent waits for a
# freeze hook (Veeam 600 s, Azure at most 1800 s, GCE 60 s), so waiting longer for a
# connection or a lock is never useful; the two thresholds are statement ages, so a day
# means "practically never".
MAX_LOCK_TIMEOUT = 86400.0
MAX_WAIT = 3600.0
MAX_AGE = 86400.0


_TARGET_FIELDS = ("name", "socket", "host", "port", "user", "password", "position_file",
                  "ssl_mode", "ssl_ca", "allow_unverified_host")
# TCP only: the socket's server is identified by the kernel (trust.py).
SSL_MODES = ("preferred", "disabled", "required", "verify-ca", "verify-identity")
VERIFYING_SSL_MODES = ("verify-ca", "verify-identity")
_SETTINGS_FIELDS = ("command", "hook_action", "json", "cycle", "config_file", "driver", "lock_method",
                    "lock_timeout", "acquire_timeout", "connect_timeout", "on_failure", "runtime_dir",
                    "long_query_time", "long_query_wait", "long_query_type", "kill_long_selects",
                    "stop_replica", "release_on_fs_thaw", "allow_cleartext_auth", "targets", "words", "all_agents",
                    "root", "metrics_file", "metrics_dir_shared", "restore", "caller", "enabled",
                    "config_files", "freeze_fs")


# Immutable records built on namedtuple rather than dataclasses: importing dataclasses
# costs thaw, which runs on the snapshot's critical path, about 8 ms.
# on-failure: what a freeze that fails does (cli.py applies it to every failure).
FAILURE_POLICIES = ("fail", "continue")


class Target(collections.namedtuple("Target", _TARGET_FIELDS, defaults=("preferred", None, False))):
    """One database server to lock."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Target(name=%r, socket=%r, host=%r, port=%r, user=%r, position_file=%r)" % (
            self.name, self.socket, self.host, self.port, self.user, self.position_file)

    @property
    def address(self) -> str:
        return "%s:%d" % (self.host, self.port) if self.host else str(self.socket)

    @property
    def is_local(self) -> bool:
        return not self.host or self.host in ("localhost", "127.0.0.1", "::1")


class Settings(collections.namedtuple("Settings", _SETTINGS_FIELDS)):
    """Everything a command needs, resolved from all sources; targets is a tuple of Target."""

    __slots__ = ()


# ---------------------------------------------------------------------------------------
# Value checks. Each takes the text as given and returns the value, or raises
# ArgumentTypeError with a message that does not repeat the text.

def _seconds(minimum_exclusive: bool, maximum: float):
    def seconds(text: str) -> float:
        text = str(text).strip()
        value = float(text) if _NUMBER_RE.match(text) else math.nan
        low = "greater than 0" if minimum_exclusive else "0 or more"
        if not math.isfinite(value) or value > maximum or (value <= 0 if minimum_exclusive else value < 0):
            raise argparse.ArgumentTypeError("must be a number of seconds, %s and at most %g" % (low, maximum))
        return value
    return seconds


def _choice(*choices: str):
    def choice(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError("must be one of %s" % ", ".join(choices))
        return text
    return choice


def _boolean(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise argparse.ArgumentTypeError("must be true or false")


def _port(text: str) -> int:
    text = str(text).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError("must be a port number (1-65535)")
    return int(text)


def _absolute_path(text: str) -> str:
    if not text or "\n" in text or "\0" in text:
        raise argparse.ArgumentTypeError("must be an absolute path")
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError(
            "must be an absolute path: a relative one depends on the working directory, "
            "which differs when a hook runner starts quiesce")
    return text


def _caller_name(text: str) -> str:
    if not _NAME_RE.match(str(text)):
        raise argparse.ArgumentTypeError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                                         "or digit")
    return str(text)


def _auto_none_or_path(text: str) -> str:
    return text if text in ("auto", "none") else _absolute_path(text)


def _text(text: str) -> str:
    if not text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError("must be non-empty text without control characters")
    return text


def _secret(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("is empty; remove the line for an account without a password")
    return text


def _instance_name(text: object) -> str:
    if not isinstance(text, str) or not _NAME_RE.match(text):
        raise argparse.ArgumentTypeError("instance names are 1 to 64 letters, digits, '.', '_' or '-', "
                                         "starting with a letter or digit")
    return text


CONNECTION_CHECKS = {"socket": _absolute_path, "host": _text, "port": _port, "user": _text,
                     "password": _secret, "defaults-file": _absolute_path, "position-file": _absolute_path}


def _checked(key: str, value: object, where: str) -> object:
    """A connection setting checked by its rule; where names the source in errors."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError("%s: %s must be a string" % (where, key))
    try:
        return CONNECTION_CHECKS[key](str(value))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError("%s: %s %s" % (where, key, exc))


def _instance_spec(spec: object, where: str) -> dict[str, object]:
    """An instance given on the command line or in QUIESCE_INSTANCE, checked."""
    if not isinstance(spec, dict):
        raise ConfigError("%s: an instance must be a JSON object or NAME:key=value,..." % where)
    if "name" not in spec:
        raise ConfigError("%s: an instance needs a \"name\"" % where)
    try:
        name = _instance_name(spec["name"])
    except argparse.ArgumentTypeError as exc:
        raise ConfigError("%s: %s" % (where, exc))
    where = "%s instance %s" % (where, name)
    checked: dict[str, object] = {"name": name}
    for key, value in spec.items():
        if key == "name":
            continue
        if key == "password":
            raise ConfigError("%s: a password may come only from a file: put it in an [instance:%s] "
                              "section of the config file or in a defaults-file" % (where, name))
        if key not in CONNECTION_CHECKS:
            raise ConfigError("%s: unknown key (allowed: %s)" % (where, ", ".join(CONNECTION_KEYS)))
        checked[key] = _checked(key, value, where)
    return checked


def _instance_text(text: str, where: str) -> dict[str, object]:
    """NAME:key=value,key=value or a JSON object."""
    text = text.strip()
    if text.startswith(("{", "[")):
        try:
            spec = json.loads(text)
        except ValueError:
            raise ConfigError("%s: not valid JSON" % where)
        return _instance_spec(spec, where)
    name, _, rest = text.partition(":")
    spec: dict[str, object] = {"name": name}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError("%s: expected NAME:key=value,... with keys %s" % (where, ", ".join(CONNECTION_KEYS)))
        if key in spec:
            raise ConfigError("%s: %s given twice" % (where, key))
        spec[key] = value
    return _instance_spec(spec, where)


# ---------------------------------------------------------------------------------------
# The config file: "key = value" lines, [instance:NAME] sections.

_KEY_LINE_RE = re.compile(r"^([A-Za-z0-9_.-]+)\s*(?:([=:])\s*(.*))?$")
_SECTION_RE = re.compile(r"^\[\s*([^]:\s]+)\s*(?:[: ]\s*([^]]*?))?\s*\]$")


class ConfigLine(collections.namedtuple("ConfigLine", "key value line path", defaults=(None,))):
    """path: the file the line is in (the main file or a drop-in)."""
    __slots__ = ()

    def where(self, path: str) -> str:
        return "config file %s line %d" % (self.path or path, self.line)


def _config_value(raw: str) -> str:
    """A value: quoted ("..." or '...', taken literally) or bare, which ends at " #" or " ;"."""
    if raw[:1] in ("'", '"'):
        end = raw.find(raw[0], 1)
        if end < 0:
            raise ValueError("has an opening quote without a closing one")
        rest = raw[end + 1:].strip()
        if rest and rest[0] not in "#;":
            raise ValueError("has text after the closing quote")
        return raw[1:end]
    comment = re.search(r"\s[#;]", raw)
    return (raw[:comment.start()] if comment else raw).strip()


def parse_config_text(text: str, path: str, known: Iterable[str] = ()
                      ) -> tuple[dict[str, ConfigLine], dict[str, dict[str, ConfigLine]]]:
    """The top-level settings and the [instance:NAME] sections, syntax checked.

    known: the keys that may be named in messages.
    """
    top: dict[str, ConfigLine] = {}
    sections: dict[str, dict[str, ConfigLine]] = {}
    current = top
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        where = "config file %s line %d" % (path, number)
        if stripped.startswith("["):
            match = _SECTION_RE.match(stripped)
            kind = match.group(1).lower() if match else ""
            if kind in ("quiesce", "main") and not match.group(2):
                current = top
                continue
            if kind != "instance" or not match.group(2):
                raise ConfigError("%s: unknown section (use [instance:NAME])" % where)
            try:
                name = _instance_name(match.group(2))
            except argparse.ArgumentTypeError as exc:
                raise ConfigError("%s: %s" % (where, exc))
            if name in sections:
                raise ConfigError("%s: a second [instance:%s] section" % (where, name))
            current = sections[name] = {}
            continue
        match = _KEY_LINE_RE.match(stripped)
        if not match:
            raise ConfigError("%s: expected key = value" % where)
        key = match.group(1)
        if match.group(2) is None:
            # Only a known key is named: a stray word on its own line could be a password.
            named = key if key in known else "the line"
            raise ConfigError("%s: %s has no value; fix: write KEY = VALUE, or remove the line"
                              % (where, named))
        try:
            value = _config_value(match.group(3))
        except ValueError as exc:
            raise ConfigError("%s: the value of %s %s" % (where, key, exc))
        if not value:
            raise ConfigError("%s: %s has an empty value; fix: give a value, or remove the line for the default"
                              % (where, key))
        if key in current:
            raise ConfigError("%s: %s is set twice (first on line %d); fix: keep one"
                              % (where, key, current[key].line))
        current[key] = ConfigLine(key, value, number, path)
    return top, sections


# ---------------------------------------------------------------------------------------
# The command line.

class _Formatter(argparse.HelpFormatter):
    # argparse builds a formatter for every option and asks shutil for the terminal width
    # each time; a fixed width keeps that import off thaw's critical path.
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=int(os.environ.get("COLUMNS", "0") or 0) or 100)


class _CommandsFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the top level's list of commands one a line."""


_REQUIRED_COMMAND = "the following arguments are required: command"
_ARGUMENT_RE = re.compile(r"^argument ([^:]+): (.*)$", re.S)
_ENV_FLAG_RE = re.compile(r"^Unexpected value for (\w+):")


def _usage_error(message: object) -> ConfigError:
    """argparse's message as one line, without the value it may quote."""
    message = str(message)
    if message.startswith(_REQUIRED_COMMAND):
        message = "no command given: use freeze, thaw, hook ACTION, status, check, register, unregister, verify or restore-plan"
    else:
        match = _ARGUMENT_RE.match(message)
        flag = _ENV_FLAG_RE.match(message)
        if flag:
            # ConfigArgParse on a flag set in the environment (QUIESCE_JSON=...)
            message = "%s must be true or false" % flag.group(1)
        elif match and ("'" in match.group(2) or '"' in match.group(2)):
            # argparse's own wording ("invalid choice: 'x'", "ignored explicit argument 'x'")
            message = "argument %s: invalid value" % match.group(1)
        elif not match and ("'" in message or '"' in message):
            message = "invalid command line or environment"
    return ConfigError("%s (see 'quiesce --help')" % message.splitlines()[0])


class _Parser(configargparse.ArgParser):
    def error(self, message):
        # argparse prints usage and exits; we want one line and our own exit-code table.
        raise _usage_error(message)


class _ConfigOption(argparse.ArgumentParser):
    """Finds --config/-c the way the full parser will (-cFILE, --config=FILE, -c FILE)."""

    def error(self, message):
        raise _usage_error(message)


# Which commands use an option. Every command's parser accepts every option (the config
# file and the environment are shared by all commands, and spellings that worked before
# must keep working), but its --help shows only the options it uses; the others warn.
_CONNECTING = ("freeze", "thaw", "run", "hook", "check", "register", "verify", "restore-plan")
_LOCKING = ("freeze", "run", "hook", "check", "register")
_EVERY = COMMANDS
# Where a setting may come from besides the command line.
_FILE_AND_ENV, _ENV_ONLY, _COMMAND_LINE = "file+env", "env", "command line"


class _Option(collections.namedtuple("_Option", "flags kwargs commands sources values")):
    """values: the words the option's value may be (all of them, unless it has its own type)."""

    __slots__ = ()

    @property
    def key(self) -> str:
        return self.flags[-1][2:]


def _options() -> list[_Option]:
    """Every option, in --help order."""
    options: list[_Option] = []

    def add(*flags: str, commands: Sequence[str] = _EVERY, sources: str = _FILE_AND_ENV,
            values: Sequence[str] = (), **kwargs) -> None:
        if values:
            kwargs.setdefault("type", _choice(*values))
            kwargs.setdefault("metavar", "{%s}" % ",".join(values))
        options.append(_Option(flags, kwargs, tuple(commands), sources, tuple(values)))

    add("-c", "--config", metavar="FILE", sources=_ENV_ONLY,
        help="config file (default %s)" % paths.CONFIG_FILE)
    add("--runtime-dir", type=_absolute_path, default=paths.RUNTIME_DIR, metavar="DIR",
        help="runtime state: lock file, holder socket (default %(default)s)")
    add("--json", action="store_true", commands=("status",), sources=_COMMAND_LINE, help="print JSON")
    add("--cycle", action="store_true", commands=("check",), sources=_COMMAND_LINE,
        help="do one real short freeze and thaw")
    add("--all", dest="all_agents", action="store_true", commands=("thaw", "unregister"), sources=_COMMAND_LINE,
        help="unregister: every agent; thaw: release now, for every caller that shares the lock")
    add("--caller", metavar="NAME", type=_caller_name, commands=("freeze", "thaw", "run", "hook"), sources=_ENV_ONLY,
        help="who asks (default: the snapshot agent found among the parent processes); callers "
             "with different names share a lock and the last one's thaw releases it")
    add("--freeze-fs", action="store_true", commands=("run",), sources=_COMMAND_LINE,
        help="also freeze the filesystems that hold the server's files while CMD runs (for snapshots that "
             "do not freeze them: cloud disk snapshots; not for btrfs or ZFS snapshots, which are atomic)")
    add("--root", default="/", type=_absolute_path, commands=(), sources=_COMMAND_LINE, help=argparse.SUPPRESS)
    add("--defaults-file", metavar="FILE", type=_absolute_path, commands=_CONNECTING,
        help="MySQL option file with [client] credentials")
    add("--socket", metavar="PATH", type=_absolute_path, commands=_CONNECTING,
        help="server socket (default: the distribution's)")
    add("--host", type=_text, commands=_CONNECTING, help="server host for TCP (default: use the socket)")
    add("--port", type=_port, commands=_CONNECTING, help="server TCP port (default 3306)")
    add("--user", type=_text, commands=_CONNECTING, help="account name (default root)")
    add("--instance", action="append", commands=(), sources=_COMMAND_LINE, help=argparse.SUPPRESS)
    add("--position-file", metavar="FILE", type=_absolute_path, commands=_CONNECTING,
        help="where coordinates go (default %s)" % paths.POSITION_FILE)
    add("--driver", values=("auto", "mysql-connector", "pymysql"), default="auto", commands=_CONNECTING,
        help="MySQL driver (default %(default)s)")
    add("--ssl-mode", values=SSL_MODES, default="preferred", commands=_CONNECTING,
        help="TLS over TCP, as the MySQL clients' --ssl-mode (default preferred: when the server offers it, "
             "unverified)")
    add("--ssl-ca", metavar="FILE", type=_absolute_path, commands=_CONNECTING,
        help="CA certificate (PEM) the server's certificate must be signed by; for ssl-mode verify-ca and "
             "verify-identity")
    add("--allow-unverified-host", type=_boolean, default=False, metavar="BOOL", commands=_CONNECTING,
        help="send credentials to a server on another host without a verified certificate (default false)")
    add("--allow-cleartext-auth", type=_boolean, default=False, metavar="BOOL", commands=_CONNECTING,
        help="send the password in clear text over a non-TLS connection if the server asks (default false)")
    add("--connect-timeout", type=_seconds(True, MAX_WAIT), default=5.0, metavar="SECONDS", commands=_CONNECTING,
        help="wait this long for a connection (default 5, at most %g)" % MAX_WAIT)
    add("--lock-method", values=("auto", "ftwrl", "backup-stage"), default="auto", commands=_LOCKING,
        help="lock statement (default %(default)s)")
    add("--lock-timeout", type=_seconds(True, MAX_LOCK_TIMEOUT), default=300.0, metavar="SECONDS",
        commands=_LOCKING, help="release by itself after this long (default 300, at most %g)" % MAX_LOCK_TIMEOUT)
    add("--acquire-timeout", type=_seconds(True, MAX_WAIT), default=5.0, metavar="SECONDS", commands=_LOCKING,
        help="give up taking the lock after this long (default 5, at most %g)" % MAX_WAIT)
    add("--enabled", type=_boolean, default=True, metavar="BOOL", commands=("hook", "check"),
        help="false: the snapshot agents' hooks do nothing (and say so) until set back to true, for installing "
             "before configuring (default true)")
    add("--on-failure", values=FAILURE_POLICIES, default="fail", commands=_LOCKING,
        help="continue: a failed freeze (whatever failed, a configuration or internal error included) logs it "
             "loudly and exits 0; the snapshot is then only crash-consistent (default %(default)s)")
    add("--long-query-time", type=_seconds(False, MAX_AGE), default=10.0, metavar="SECONDS", commands=_LOCKING,
        help="statements running longer than this count as long (default 10, at most %g)" % MAX_AGE)
    add("--long-query-wait", type=_seconds(False, MAX_WAIT), default=10.0, metavar="SECONDS", commands=_LOCKING,
        help="wait this long for long statements before locking (default 10, at most %g)" % MAX_WAIT)
    add("--long-query-type", values=("auto", "all", "select", "update"), default="auto", commands=_LOCKING,
        help="which long statements count (default %(default)s)")
    add("--kill-long-selects", type=_seconds(False, MAX_AGE), default=0.0, metavar="SECONDS", commands=_LOCKING,
        help="kill long SELECTs older than this while waiting (default 0: never, at most %g)" % MAX_AGE)
    add("--stop-replica", values=("auto", "always", "never"), default="auto", commands=_LOCKING,
        help="stop the replica's applier for the freeze (default %(default)s)")
    add("--release-on-fs-thaw", type=_boolean, default=True, metavar="BOOL", commands=_LOCKING + ("status",),
        help="release as soon as the filesystems thaw (default true)")
    add("--metrics-file", default="auto", metavar="FILE", type=_auto_none_or_path, commands=_LOCKING,
        values=("auto", "none"),
        help="node_exporter textfile (default auto: quiesce.prom in its textfile directory if that exists; "
             "none: off)")
    add("--metrics-dir-shared", type=_boolean, default=False, metavar="BOOL", commands=_LOCKING,
        help="write metrics-file even where another account can write its directory (default false)")
    # verify and restore-plan: what to check or do this once, never a standing setting.
    add("--skip-table-check", action="store_true", commands=("verify",), sources=_COMMAND_LINE,
        help="no CHECK TABLE on MyISAM/Aria tables")
    add("--check-timeout", type=_seconds(True, MAX_WAIT), default=300.0, metavar="SECONDS", commands=("verify",),
        sources=_COMMAND_LINE, help="time allowed for all CHECK TABLEs (default 300)")
    add("--as-replica-of", metavar="HOST[:PORT]", type=_text, commands=("restore-plan",), sources=_COMMAND_LINE,
        help="make this server a replica of HOST")
    add("--pitr-until", metavar="DATETIME|GTID|FILE:POS", type=_text, commands=("restore-plan",),
        sources=_COMMAND_LINE, help="replay the binlogs up to here")
    add("--galera", action="store_true", commands=("restore-plan",), sources=_COMMAND_LINE,
        help="grastate.dat to rejoin a Galera cluster by IST")
    add("--apply", action="store_true", commands=("restore-plan",), sources=_COMMAND_LINE,
        help="run the replica plan on this server")
    add("--yes", action="store_true", commands=("restore-plan",), sources=_COMMAND_LINE,
        help="--apply without asking")
    add("--replication", values=("auto", "gtid", "position"), default="auto", commands=("restore-plan",),
        sources=_COMMAND_LINE,
        help="GTID or binlog file/position (default auto: GTID when recorded)")
    add("--server-id", type=int, metavar="N", commands=("restore-plan",), sources=_COMMAND_LINE,
        help="the new server_id of a clone")
    add("--source-credentials", metavar="FILE", type=_absolute_path, commands=("restore-plan",),
        sources=_COMMAND_LINE, help="option file (mode 0600) with [client] user and password for the source")
    add("--binlog-dir", metavar="DIR", type=_absolute_path, commands=("restore-plan",), sources=_COMMAND_LINE,
        help="where the original's binary logs are (PITR)")
    return options


OPTIONS = _options()
RESTORE_KEYS = ("skip_table_check", "check_timeout", "as_replica_of", "pitr_until", "galera", "apply", "yes",
                "replication", "server_id", "source_credentials", "binlog_dir")
# Not config-file keys.
_COMMAND_LINE_ONLY = ("help", "version") + tuple(o.key for o in OPTIONS if o.sources != _FILE_AND_ENV)
# Set in the environment, these are refused rather than ignored (QUIESCE_APPLY must not apply).
# QUIESCE_INSTANCE is read by parse() itself, with the same checks as --instance.
_ENVIRONMENT_REFUSED = ("help", "version") + tuple(o.key for o in OPTIONS
                                                   if o.sources == _COMMAND_LINE and o.key != "instance")
_SYNOPSIS = {"hook": "hook ACTION [EXTRA...]", "register": "register AGENT...",
             "run": "run [--freeze-fs] [OPTIONS] -- CMD [ARGS...]",
             "unregister": "unregister AGENT...|--all"}
_SUMMARY = {
    "freeze": "lock the server(s) for a snapshot; a holder keeps the lock until thaw",
    "thaw": "release the lock",
    "run": "lock the server(s) while CMD runs (a storage snapshot command), then release; exit with CMD's status",
    "hook": "what snapshot agents run: ACTION is freeze, thaw or freezeFail; extra words are ignored",
    "status": "whether a lock is held, and the last outcome",
    "check": "whether the configuration, the server and the snapshot agents are ready",
    "register": "install quiesce's hooks into snapshot agents (AGENT: see quiesce(8), SNAPSHOT AGENTS)",
    "unregister": "remove the hooks register installed",
    "verify": "check a restored copy of the data",
    "restore-plan": "print (or --apply) the steps to bring a restored copy back into service",
}


def env_var(option: _Option) -> str | None:
    """The environment variable an option is read from, if any."""
    if option.sources == _COMMAND_LINE:
        return None
    return "QUIESCE_" + option.key.upper().replace("-", "_")


def option_choices(option: _Option) -> tuple[str, ...]:
    """The words an option's value may be (for completion), or () for free text."""
    if option.kwargs.get("metavar") == "BOOL":
        return ("true", "false")
    return option.values


def _help_text(option: _Option, command: str | None) -> str:
    kwargs = option.kwargs
    visible = command in option.commands or option.commands == _EVERY
    if kwargs.get("help") == argparse.SUPPRESS or not visible:
        return argparse.SUPPRESS
    text = kwargs.get("help", "")
    if "%(default)" not in text and "default" not in text and kwargs.get("default") not in (None, False):
        text += " (default %(default)s)"
    where = []
    if option.sources == _FILE_AND_ENV:
        where.append("config: %s" % option.key)
    if env_var(option):
        where.append("env: %s" % env_var(option))
    return text + (" [%s]" % "; ".join(where) if where else "")


def build_parser(command: str | None = None) -> _Parser:
    """The parser of one command (None: the top level, for --help and bad command words).

    Each accepts every option, so that a spelling that worked before still parses, but
    lists in --help only those the command uses, and the sources each may come from.
    """
    if command is None:
        usage = "quiesce [-c FILE] COMMAND [OPTIONS]"
        description = ("Make a running MySQL or MariaDB server consistent for a virtual-machine snapshot.\n\n"
                       "commands:\n" + "".join("  %-13s %s\n" % (c, _SUMMARY[c]) for c in COMMANDS) +
                       "\n'quiesce COMMAND --help' lists a command's options. See quiesce(8) and quiesce.conf(5).")
    else:
        synopsis = _SYNOPSIS.get(command, command)
        usage = "quiesce " + (synopsis if "[OPTIONS]" in synopsis else synopsis + " [OPTIONS]")
        description = _SUMMARY[command] + (
            ". Options marked config: are also config-file settings (quiesce.conf(5)); env: the environment "
            "variable that sets it. The command line wins over the environment, the environment over the file.")
    parser = _Parser(
        prog="quiesce", usage=usage, description=description,
        formatter_class=_CommandsFormatter if command is None else _Formatter, add_help=True, allow_abbrev=False,
        add_config_file_help=False, add_env_var_help=False,
    )
    parser.add_argument("command", metavar="command", help=argparse.SUPPRESS)
    parser.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version="quiesce " + __version__)
    for option in OPTIONS:
        kwargs = dict(option.kwargs, help=_help_text(option, command))
        parser.add_argument(*option.flags, env_var=env_var(option), **kwargs)
    return parser


def all_parsers() -> dict[str | None, _Parser]:
    """Every command's parser, and the top level's (key None)."""
    return {command: build_parser(command) for command in (None,) + COMMANDS}


def _value_options() -> set[str]:
    return {flag for o in OPTIONS for flag in o.flags
            if o.kwargs.get("action") != "store_true"}


def command_word(argv: Sequence[str]) -> str | None:
    """The command named in argv: its first word that is neither an option nor an option's value."""
    takes_value = _value_options()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if word.startswith("-") and word != "-":
            i += 2 if word in takes_value else 1
            continue
        return word
    return None


def _misplaced_options(argv: Sequence[str], command: str) -> list[str]:
    """Options given on the command line that this command does not use."""
    unused = {flag: o for o in OPTIONS for flag in o.flags if command not in o.commands and o.commands != _EVERY
              and o.kwargs.get("help") != argparse.SUPPRESS}
    found = []
    for word in argv:
        if word == "--":
            break
        name = word.split("=", 1)[0] if word.startswith("--") else word
        if name in unused and unused[name].flags[-1] not in found:
            found.append(unused[name].flags[-1])
    return found


def _warn_misplaced(argv: Sequence[str], command: str) -> None:
    """Options of other commands still parse, as they always did, but say they do nothing here."""
    misplaced = _misplaced_options(argv, command)
    if misplaced:
        from quiesce.base import log
        log.get().warning("warning: %s %s no effect on %s; fix: leave %s out (see 'quiesce %s --help')",
                          ", ".join(misplaced), "has" if len(misplaced) == 1 else "have", command,
                          "it" if len(misplaced) == 1 else "them", command)


def _restore_options(ns: argparse.Namespace) -> dict[str, object]:
    return {key: getattr(ns, key) for key in RESTORE_KEYS}


def _file_keys(parser: _Parser) -> dict[str, argparse.Action]:
    """Config-file key -> the option it sets."""
    keys = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option[2:] not in _COMMAND_LINE_ONLY:
                keys[option[2:]] = action
    return keys


def _config_path(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, bool]:
    """(path, explicit): --config/-c, else QUIESCE_CONFIG, else the default (which may be absent)."""
    finder = _ConfigOption(add_help=False, allow_abbrev=False)
    finder.add_argument("-c", "--config")
    given = finder.parse_known_args(list(argv))[0].config or env.get("QUIESCE_CONFIG") or None
    if given:
        return given, True
    return paths.CONFIG_FILE, False


# Drop-in files beside the config file, read after it in name order; a later file's key
# wins. Only names like these: editors' and package managers' leftovers (x.conf~,
# x.conf.dpkg-old, .x.conf.swp) are never read.
DROP_IN_DIR = "conf.d"
_DROP_IN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.conf$")


def drop_in_dir(config_path: str) -> str:
    return os.path.join(os.path.dirname(config_path) or ".", DROP_IN_DIR)


def _drop_ins(directory: str) -> list[str]:
    """The drop-in files to read, in order; the directory is checked like a config file."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError("cannot read drop-in directory %s: %s" % (directory, exc.strerror))
    try:
        safefile.check_owner_and_mode(os.fstat(fd), directory, "drop-in directory")
        names = os.listdir(fd)
    finally:
        os.close(fd)
    return [os.path.join(directory, name) for name in sorted(names) if _DROP_IN_NAME.match(name)]


def _read_one(path: str, known: Iterable[str]) -> tuple[dict[str, ConfigLine], dict[str, dict[str, ConfigLine]]]:
    file = safefile.read_trusted(path, "config file")
    top, sections = parse_config_text(file.text, path, known)
    if "password" in top or any("password" in section for section in sections.values()):
        safefile.refuse_shared_secret(path, file.shared, "config file")
    return top, sections


def _load_config(path: str, explicit: bool, known: Iterable[str]
                 ) -> tuple[list[str], dict[str, ConfigLine], dict[str, dict[str, ConfigLine]]]:
    """(files read, top, sections) of the config file and its drop-ins, owner, mode and syntax checked."""
    known = set(known)
    read: list[str] = []
    top: dict[str, ConfigLine] = {}
    sections: dict[str, dict[str, ConfigLine]] = {}
    try:
        top, sections = _read_one(path, known)
        read.append(path)
    except FileNotFoundError:
        if explicit:
            raise ConfigError("config file %s does not exist; fix the --config path or QUIESCE_CONFIG" % path)
    for drop_in in _drop_ins(drop_in_dir(path)):
        try:
            more_top, more_sections = _read_one(drop_in, known)
        except FileNotFoundError:
            continue  # removed while we listed the directory
        top.update(more_top)
        for name, section in more_sections.items():
            sections.setdefault(name, {}).update(section)
        read.append(drop_in)
    return read, top, sections


def _file_defaults(top: dict[str, ConfigLine], keys: dict[str, argparse.Action], path: str) -> dict[str, object]:
    """The file's top-level settings, checked, as parser defaults (dest -> value)."""
    defaults: dict[str, object] = {}
    for key, item in top.items():
        where = item.where(path)
        if key == "password":
            defaults["password"] = item.value
            continue
        action = keys.get(key)
        if action is None:
            hint = key.replace("_", "-")
            raise ConfigError("%s: unknown key %s%s (see quiesce.conf(5))" % (
                where, key, "; did you mean %s?" % hint if hint in keys else ""))
        value: object = item.value
        if action.type is not None:
            try:
                value = action.type(item.value)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError("%s: %s %s" % (where, key, exc))
        defaults[action.dest] = value
    return defaults


def _section_specs(sections: dict[str, dict[str, ConfigLine]], path: str) -> list[dict[str, object]]:
    specs = []
    for name, section in sections.items():
        spec: dict[str, object] = {"name": name}
        for key, item in section.items():
            where = item.where(path)
            if key not in CONNECTION_CHECKS:
                raise ConfigError("%s: unknown key %s in [instance:%s] (allowed: %s)"
                                  % (where, key, name, ", ".join(CONNECTION_KEYS)))
            spec[key] = _checked(key, item.value, where)
        specs.append(spec)
    return specs


def _environment_instances(text: str) -> list[dict[str, object]]:
    where = "QUIESCE_INSTANCE"
    if text.strip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise ConfigError("%s: not valid JSON" % where)
        if not isinstance(items, list) or not items:
            raise ConfigError("%s: expected a JSON list of instances" % where)
        return [_instance_spec(item, where) for item in items]
    return [_instance_text(text, where)]


def _refuse_password_outside_files(argv: Sequence[str], env: Mapping[str, str]) -> None:
    if any(w == "--password" or w.startswith("--password=") for w in argv) or "QUIESCE_PASSWORD" in env:
        raise ConfigError("a password on the command line or in the environment is visible to other users; "
                          "put it in the config file (mode 0600) or a defaults-file")


def _unknown_option_name(word: str) -> str:
    """How to name an unknown option without showing what may be a value glued to it."""
    if word.startswith("--"):
        name = word.split("=", 1)[0]
        return name if re.match(r"^--[A-Za-z][A-Za-z0-9_-]{0,40}$", name) else "an unknown --option"
    return word[:2]


def _default_socket() -> str:
    for candidate in paths.DEFAULT_SOCKETS:
        if os.path.exists(candidate):
            return candidate
    return paths.DEFAULT_SOCKETS[0]


def _tls_settings(ns: argparse.Namespace) -> dict[str, object]:
    """ssl-mode, ssl-ca and allow-unverified-host, checked against each other."""
    verifying = ns.ssl_mode in VERIFYING_SSL_MODES
    if verifying and not ns.ssl_ca:
        raise ConfigError("ssl-mode = %s needs ssl-ca; fix: set ssl-ca to the CA certificate (PEM) that signed "
                          "the server's certificate" % ns.ssl_mode)
    if ns.ssl_ca and not verifying:
        raise ConfigError("ssl-ca is used only with ssl-mode = verify-ca or verify-identity; fix: set ssl-mode = "
                          "verify-ca (or verify-identity), or remove ssl-ca")
    if ns.ssl_ca:
        # Whoever can change the CA file can make quiesce trust their own server.
        try:
            safefile.read_trusted(ns.ssl_ca, "ssl-ca file")
        except FileNotFoundError:
            raise ConfigError("ssl-ca file %s does not exist; fix: set ssl-ca to the CA certificate" % ns.ssl_ca)
    return {"ssl_mode": ns.ssl_mode, "ssl_ca": ns.ssl_ca, "allow_unverified_host": ns.allow_unverified_host}


def _make_target(name: str, layers: Sequence[Mapping[str, object]], position_default: str,
                 tls: Mapping[str, object]) -> Target:
    """Merge connection settings: earlier layers win over later ones."""
    merged: dict[str, object] = {}
    for layer in reversed(layers):
        merged.update({k: v for k, v in layer.items() if v not in (None, "")})
    option_file = merged.get("defaults-file")
    if option_file:
        from_file = optionfile.read_credentials(str(option_file))
        # The option file only fills what quiesce's own settings left open.
        for key in optionfile.CREDENTIAL_KEYS:
            if key not in merged and key in from_file:
                merged[key] = _checked(key, from_file[key], "defaults-file %s" % option_file)
    host = merged.get("host")
    port = _checked("port", merged.get("port") or paths.DEFAULT_PORT, "instance %s" % name)
    socket_path = merged.get("socket")
    if host == "localhost":
        # libmysqlclient convention: "localhost" means the socket (the one given, else the
        # default), not TCP.
        host = None
    if not host and not socket_path:
        socket_path = _default_socket()
    position_file = str(merged.get("position-file") or position_default)
    return Target(name=name, socket=str(socket_path) if socket_path else None,
                  host=str(host) if host else None, port=port,
                  user=str(merged.get("user") or paths.DEFAULT_USER),
                  password=str(merged["password"]) if merged.get("password") else None,
                  position_file=position_file, **tls)


def requested_action(argv: Sequence[str] | None = None) -> str | None:
    """The hook action asked for, read from the raw words (for when parse() failed)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "hook" in words:
        following = words[words.index("hook") + 1:]
        if following:
            return HOOK_ACTIONS.get(following[0].lower())
    return None


def _policy_in_file(path: str) -> str | None:
    """The last top-level on-failure line of a config file that only root (or its owner) can
    change, read leniently: the rest of it may be what made parse() fail."""
    try:
        text = safefile.read_trusted(path, "config file").text
    except (OSError, ConfigError):
        return None
    found, top = None, True
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("["):
            match = _SECTION_RE.match(stripped)
            top = bool(match) and match.group(1).lower() in ("quiesce", "main") and not match.group(2)
            continue
        match = _KEY_LINE_RE.match(stripped)
        if top and match and match.group(1) == "on-failure" and match.group(3) is not None:
            try:
                found = _config_value(match.group(3))
            except ValueError:
                continue
    return found


def failure_policy(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """on-failure as well as it can be read when parse() itself failed: "continue" only when
    the source that parse() would have taken it from says so (command line, environment,
    the last of the config file and its drop-ins); "fail" otherwise."""
    words = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    value = None
    for i, word in enumerate(words):
        if word == "--on-failure" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--on-failure="):
            value = word.split("=", 1)[1]
    if value is None:
        value = env.get("QUIESCE_ON_FAILURE")
    if value is None:
        try:
            path, _explicit = _config_path(words, env)
            files = [path] + _drop_ins(drop_in_dir(path))
        except (ConfigError, OSError):
            files = [paths.CONFIG_FILE]
        for found in (_policy_in_file(f) for f in files):
            value = found if found is not None else value
    return value if value in FAILURE_POLICIES else "fail"


def _unregister_all(argv: Sequence[str]) -> bool:
    """Exactly 'unregister --all' (with --root or --config at most): what package removal runs."""
    finder = _ConfigOption(add_help=False, allow_abbrev=False)
    finder.add_argument("command")
    finder.add_argument("-c", "--config")
    finder.add_argument("--root")
    finder.add_argument("--all", action="store_true")
    try:
        ns, unknown = finder.parse_known_args(list(argv))
    except ConfigError:
        return False
    return ns.command == "unregister" and ns.all and not unknown


def split_run_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """(the words before the first "--", those after it or None): run's CMD [ARGS...]."""
    words = list(argv)
    if "--" not in words:
        return words, None
    i = words.index("--")
    return words[:i], words[i + 1:]


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    # run's command is everything after "--", whatever it looks like: never our options.
    argv, run_command = split_run_command(argv) if command_word(argv) == "run" else (argv, None)
    # Package removal runs 'unregister --all', also when the config file or the
    # environment is broken; it needs neither, so it reads neither.
    uninstalling = _unregister_all(argv)
    if uninstalling:
        env = {}
    _refuse_password_outside_files(argv, env)
    config_path, explicit = _config_path(argv, env)
    command = command_word(argv)
    parser = build_parser(command if command in COMMANDS else None)
    keys = _file_keys(parser)
    if uninstalling:
        files_read, top, sections = [], {}, {}
    else:
        files_read, top, sections = _load_config(config_path, explicit, set(keys) | {"password"})
    file_defaults = _file_defaults(top, keys, config_path)
    file_password = file_defaults.pop("password", None)
    parser.set_defaults(**file_defaults)
    for key in _ENVIRONMENT_REFUSED:
        name = "QUIESCE_" + key.upper().replace("-", "_")
        if name in env:
            raise ConfigError("%s is not read from the environment; fix: give --%s on the command line, or unset "
                              "it" % (name, key))
    env_vars = {k: v for k, v in env.items() if k != "QUIESCE_INSTANCE"}
    ns, unknown = parser.parse_known_args(argv, env_vars=env_vars)
    if (ns.config or None) != (config_path if explicit else None):
        raise ConfigError("give the config file once, as --config FILE (see 'quiesce --help')")
    options = [w for w in unknown if w.startswith("-") and w != "-"]
    if options:
        raise ConfigError("unknown option %s (see 'quiesce --help')" % _unknown_option_name(options[0]))
    if ns.command not in COMMANDS:
        raise ConfigError("unknown command: use %s or %s (see 'quiesce --help')"
                          % (", ".join(c if c != "hook" else "hook ACTION" for c in COMMANDS[:-1]), COMMANDS[-1]))
    if unknown:
        raise ConfigError("unexpected extra argument after %s (see 'quiesce --help')" % ns.command)
    _warn_misplaced(argv, ns.command)

    hook_action = None
    if ns.command == "hook":
        # Hook runners may pass more words after the action (GCE: a disk list, Azure: empty
        # strings); they carry nothing for us.
        if not ns.words:
            raise ConfigError("hook needs an action: freeze, thaw or freezeFail")
        hook_action = HOOK_ACTIONS.get(ns.words[0].lower())
        if hook_action is None:
            raise ConfigError("unknown hook action: expected freeze, thaw or freezeFail")
    elif ns.command == "run":
        if ns.words or run_command is None:
            raise ConfigError("run takes its command after --: quiesce run [OPTIONS] -- CMD [ARGS...]")
        ns.words = run_command
    elif ns.words and ns.command not in _WORD_COMMANDS:
        raise ConfigError("unexpected extra argument after %s (see 'quiesce --help')" % ns.command)

    if ns.acquire_timeout >= ns.lock_timeout:
        raise ConfigError("acquire-timeout must be shorter than lock-timeout")

    if ns.instance:
        specs = [_instance_text(text, "--instance") for text in ns.instance]
    elif env.get("QUIESCE_INSTANCE"):
        specs = _environment_instances(env["QUIESCE_INSTANCE"])
    else:
        specs = _section_specs(sections, config_path)

    tls = _tls_settings(ns)
    top_layer = {"socket": ns.socket, "host": ns.host, "port": ns.port, "user": ns.user,
                 "password": file_password, "defaults-file": ns.defaults_file}
    if specs:
        names = [str(spec["name"]) for spec in specs]
        if len(set(names)) != len(names):
            raise ConfigError("instance names must be unique: %s" % ", ".join(names))
        targets = tuple(
            _make_target(str(spec["name"]), [spec, top_layer],
                         paths.INSTANCE_POSITION_FILE.format(name=spec["name"]), tls)
            for spec in specs)
        files = [t.position_file for t in targets]
        if len(set(files)) != len(files):
            raise ConfigError("each instance needs its own position-file")
    else:
        targets = (_make_target("default", [{"position-file": ns.position_file}, top_layer],
                                paths.POSITION_FILE, tls),)

    return Settings(
        command=ns.command, hook_action=hook_action, json=ns.json, cycle=ns.cycle,
        config_file=config_path if config_path in files_read else None, driver=ns.driver,
        lock_method=ns.lock_method, lock_timeout=ns.lock_timeout,
        acquire_timeout=ns.acquire_timeout, connect_timeout=ns.connect_timeout,
        on_failure=ns.on_failure, runtime_dir=ns.runtime_dir,
        long_query_time=ns.long_query_time, long_query_wait=ns.long_query_wait,
        long_query_type=ns.long_query_type, kill_long_selects=ns.kill_long_selects,
        stop_replica=ns.stop_replica, release_on_fs_thaw=ns.release_on_fs_thaw,
        allow_cleartext_auth=ns.allow_cleartext_auth, targets=targets,
        words=tuple(ns.words), all_agents=ns.all_agents, root=ns.root, metrics_file=ns.metrics_file,
        metrics_dir_shared=ns.metrics_dir_shared, restore=_restore_options(ns), caller=ns.caller,
        enabled=ns.enabled, config_files=tuple(files_read), freeze_fs=ns.freeze_fs)


def settings_to_dict(settings: Settings) -> dict[str, object]:
    """For handing the settings to the holder over a private pipe (the password included)."""
    data = settings._asdict()
    data["targets"] = [t._asdict() for t in settings.targets]
    return data


def settings_from_dict(data: dict[str, object]) -> Settings:
    values = dict(data)
    values["targets"] = tuple(Target(**t) for t in values["targets"])
    return Settings(**values)
