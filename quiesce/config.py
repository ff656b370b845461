"""Settings from the command line, the environment and the config file (ConfigArgParse).

Precedence: command line > environment (QUIESCE_*) > config file > built-in default.
Secrets come only from files: a password given on the command line or in the environment
would be visible to every user through ps or /proc, so it is refused.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Sequence
import io
import json
import os
import re
import stat
import sys

import configargparse

from . import __version__, paths
from .errors import ConfigError

COMMANDS = ("freeze", "thaw", "hook", "status", "check", "verify", "restore-plan")
HOOK_ACTIONS = {"freeze": "freeze", "thaw": "thaw", "freezefail": "freezeFail"}
CONNECTION_KEYS = ("socket", "host", "port", "user", "password", "defaults-file", "position-file")
_INSTANCE_RE = re.compile(r"^\[\s*instance\s*[: ]\s*([A-Za-z0-9_.-]+)\s*\]$")
_MAIN_SECTION_RE = re.compile(r"^\[\s*(quiesce|main)\s*\]$")


_TARGET_FIELDS = ("name", "socket", "host", "port", "user", "password", "position_file")
_SETTINGS_FIELDS = ("command", "hook_action", "json", "cycle", "config_file", "driver", "lock_method",
                    "lock_timeout", "acquire_timeout", "connect_timeout", "on_failure", "runtime_dir",
                    "long_query_time", "long_query_wait", "long_query_type", "kill_long_selects",
                    "stop_replica", "release_on_fs_thaw", "targets", "metrics_file", "restore")


# Immutable records built on namedtuple rather than dataclasses: importing dataclasses
# costs thaw, which runs on the snapshot's critical path, about 8 ms.
class Target(collections.namedtuple("Target", _TARGET_FIELDS)):
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


class _SectionedConfigParser(configargparse.DefaultConfigFileParser):
    """ConfigArgParse's key = value syntax plus [instance:NAME] sections.

    Each section becomes one JSON value of the repeatable --instance option, so that
    ConfigArgParse still sees every setting and records where it came from.
    """

    def parse(self, stream):
        top: list[str] = []
        sections: dict[str, list[str]] = {}
        current = top
        for number, line in enumerate(stream, 1):
            stripped = line.strip()
            if stripped.startswith("["):
                match = _INSTANCE_RE.match(stripped)
                if match:
                    current = sections.setdefault(match.group(1), [])
                    continue
                if _MAIN_SECTION_RE.match(stripped):
                    current = top
                    continue
                raise configargparse.ConfigFileParserException(
                    "line %d: unknown section %s (use [instance:NAME])" % (number, stripped))
            current.append(line)
        items = super().parse(io.StringIO("".join(top)))
        if sections:
            values = []
            for name, lines in sections.items():
                section = dict(super().parse(io.StringIO("".join(lines))))
                unknown = set(section) - set(CONNECTION_KEYS)
                if unknown:
                    raise configargparse.ConfigFileParserException(
                        "[instance:%s]: unknown key %s (allowed: %s)"
                        % (name, sorted(unknown)[0], ", ".join(CONNECTION_KEYS)))
                section["name"] = name
                values.append(json.dumps(section))
            items["instance"] = values
        return items


class _Formatter(argparse.HelpFormatter):
    # argparse builds a formatter for every option and asks shutil for the terminal width
    # each time; a fixed width keeps that import off thaw's critical path.
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=int(os.environ.get("COLUMNS", "0") or 0) or 100)


class _Parser(configargparse.ArgParser):
    def get_possible_config_keys(self, action):
        # No config key and no environment variable: such options count on the command line only.
        if getattr(action, "command_line_only", False):
            return []
        return super().get_possible_config_keys(action)

    def error(self, message):
        # argparse prints usage and exits; we want one line and our own exit-code table.
        message = str(message)
        if message.startswith("the following arguments are required: command"):
            message = "no command given: use freeze, thaw, hook ACTION, status, check, verify or restore-plan"
        raise ConfigError("%s (see 'quiesce --help')" % message)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text)
    if value <= 0:
        raise argparse.ArgumentTypeError("%r must be greater than 0" % text)
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text)
    if value < 0:
        raise argparse.ArgumentTypeError("%r must not be negative" % text)
    return value


def _boolean(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise argparse.ArgumentTypeError("%r is not a boolean (use true or false)" % text)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a port number" % text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("%r is not a port number (1-65535)" % text)
    return value


def _instance(text: str) -> dict[str, str]:
    """An instance as JSON (from the config file) or NAME:key=value,key=value."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    name, _, rest = text.partition(":")
    spec = {"name": name}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in CONNECTION_KEYS:
            raise argparse.ArgumentTypeError(
                "bad instance %r: expected NAME:key=value,... with keys %s" % (text, ", ".join(CONNECTION_KEYS)))
        if key == "password":
            raise argparse.ArgumentTypeError(
                "a password may come only from a file: put it in an [instance:%s] section" % name)
        spec[key] = value
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise argparse.ArgumentTypeError("bad instance name %r (letters, digits, . _ - only)" % name)
    return spec


def build_parser(config_files: Sequence[str]) -> _Parser:
    parser = _Parser(
        prog="quiesce",
        description="Make a running MySQL or MariaDB server consistent for a virtual-machine snapshot.",
        default_config_files=list(config_files),
        config_file_parser_class=_SectionedConfigParser,
        auto_env_var_prefix="QUIESCE_",
        formatter_class=_Formatter,
        add_help=True,
    )
    add = parser.add_argument
    add("command", choices=COMMANDS, help="freeze, thaw, hook ACTION, status, check, verify or restore-plan")
    add("words", nargs="*", help=argparse.SUPPRESS)
    add("--version", action="version", version="quiesce " + __version__)
    add("-c", "--config", metavar="FILE", env_var="QUIESCE_CONFIG",
        help="config file (default %s)" % paths.CONFIG_FILE)
    add("--json", action="store_true", help="status: print JSON")
    add("--cycle", action="store_true", help="check: do one real short freeze and thaw")
    add("--defaults-file", metavar="FILE", help="MySQL option file with [client] credentials")
    add("--socket", metavar="PATH", help="server socket (default: the distribution's)")
    add("--host", help="server host for TCP (default: use the socket)")
    add("--port", type=_port, help="server TCP port (default 3306)")
    add("--user", help="account name (default root)")
    add("--password", help=argparse.SUPPRESS)
    add("--instance", action="append", type=_instance, help=argparse.SUPPRESS)
    add("--position-file", metavar="FILE", help="where coordinates go (default %s)" % paths.POSITION_FILE)
    add("--driver", choices=("auto", "mysql-connector", "pymysql"), default="auto")
    add("--lock-method", choices=("auto", "ftwrl", "backup-stage"), default="auto")
    add("--lock-timeout", type=_positive, default=300.0, metavar="SECONDS",
        help="release by itself after this long (default 300)")
    add("--acquire-timeout", type=_positive, default=5.0, metavar="SECONDS",
        help="give up taking the lock after this long (default 5)")
    add("--connect-timeout", type=_positive, default=5.0, metavar="SECONDS")
    add("--on-failure", choices=("fail", "continue"), default="fail")
    add("--runtime-dir", default=paths.RUNTIME_DIR, metavar="DIR")
    add("--long-query-time", type=_non_negative, default=10.0, metavar="SECONDS")
    add("--long-query-wait", type=_non_negative, default=10.0, metavar="SECONDS")
    add("--long-query-type", choices=("auto", "all", "select", "update"), default="auto")
    add("--kill-long-selects", type=_non_negative, default=0.0, metavar="SECONDS")
    add("--stop-replica", choices=("auto", "always", "never"), default="auto")
    add("--release-on-fs-thaw", type=_boolean, default=True, metavar="BOOL")
    add("--metrics-file", default="auto", metavar="FILE",
        help="node_exporter textfile (default auto: quiesce.prom in its textfile directory if that exists; "
             "none: off)")
    _add_restore_options(parser)
    return parser


RESTORE_KEYS = ("skip_table_check", "check_timeout", "as_replica_of", "pitr_until", "galera", "apply", "yes",
                "replication", "server_id", "source_credentials", "binlog_dir")


def _add_restore_options(parser: _Parser) -> None:
    group = parser.add_argument_group("verify and restore-plan (command line only)")
    add = group.add_argument
    add("--skip-table-check", action="store_true", help="verify: no CHECK TABLE on MyISAM/Aria tables")
    add("--check-timeout", type=_positive, default=300.0, metavar="SECONDS",
        help="verify: time allowed for all CHECK TABLEs (default 300)")
    add("--as-replica-of", metavar="HOST[:PORT]", help="restore-plan: make this server a replica of HOST")
    add("--pitr-until", metavar="DATETIME|GTID|FILE:POS", help="restore-plan: replay the binlogs up to here")
    add("--galera", action="store_true", help="restore-plan: grastate.dat to rejoin a Galera cluster by IST")
    add("--apply", action="store_true", help="restore-plan: run the replica plan on this server")
    add("--yes", action="store_true", help="restore-plan: --apply without asking")
    add("--replication", choices=("auto", "gtid", "position"), default="auto",
        help="restore-plan: GTID or binlog file/position (default auto: GTID when recorded)")
    add("--server-id", type=int, metavar="N", help="restore-plan: the new server_id of a clone")
    add("--source-credentials", metavar="FILE",
        help="restore-plan: option file (mode 0600) with [client] user and password for the source")
    add("--binlog-dir", metavar="DIR", help="restore-plan: where the original's binary logs are (PITR)")
    for action in group._group_actions:
        action.command_line_only = True


def _restore_options(ns: argparse.Namespace) -> dict[str, object]:
    return {key: getattr(ns, key) for key in RESTORE_KEYS}


def _explicit_config(argv: Sequence[str]) -> str | None:
    for i, word in enumerate(argv):
        if word in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--config="):
            return word.split("=", 1)[1]
    return os.environ.get("QUIESCE_CONFIG") or None


def check_secret_file(path: str, what: str) -> None:
    """Refuse a file that holds a password but others may read, or others may change."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s" % (what, path, exc.strerror))
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ConfigError("%s %s holds a password and is readable by group or others; "
                          "fix: chmod 600 %s" % (what, path, path))


def _check_not_writable_by_others(path: str, what: str) -> None:
    st = os.stat(path)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError("%s %s is writable by group or others; fix: chmod go-w %s" % (what, path, path))


def read_option_file(path: str) -> dict[str, str]:
    """Credentials from a MySQL option file: [client], then [quiesce] overriding it."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("cannot read defaults-file %s: %s" % (path, exc.strerror))
    # !include lines are a MySQL extension configparser does not know; credentials for us
    # must be in this file itself.
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("!"))
    import configparser  # only with a defaults-file: kept off thaw's path

    parser = configparser.ConfigParser(allow_no_value=True, strict=False, interpolation=None,
                                       delimiters=("=",), comment_prefixes=("#", ";"),
                                       inline_comment_prefixes=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError("cannot parse defaults-file %s: %s" % (path, str(exc).splitlines()[0]))
    values: dict[str, str] = {}
    for group in ("client", "quiesce"):
        if parser.has_section(group):
            for key, value in parser.items(group):
                if value is None:
                    continue
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                values[key.replace("_", "-")] = value
    if values.get("password"):
        check_secret_file(path, "defaults-file")
    return values


def _default_socket() -> str:
    for candidate in paths.DEFAULT_SOCKETS:
        if os.path.exists(candidate):
            return candidate
    return paths.DEFAULT_SOCKETS[0]


def _make_target(name: str, layers: Sequence[dict[str, object]], position_default: str) -> Target:
    """Merge connection settings: earlier layers win over later ones."""
    merged: dict[str, object] = {}
    for layer in reversed(layers):
        merged.update({k: v for k, v in layer.items() if v not in (None, "")})
    option_file = merged.get("defaults-file")
    if option_file:
        from_file = read_option_file(str(option_file))
        # The option file only fills what quiesce's own settings left open.
        for key in ("user", "password", "socket", "host", "port"):
            if key not in merged and key in from_file:
                merged[key] = from_file[key]
    host = merged.get("host")
    try:
        port = _port(str(merged.get("port") or paths.DEFAULT_PORT))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError("instance %s: %s" % (name, exc))
    socket_path = merged.get("socket")
    if host == "localhost" and not socket_path:
        # libmysqlclient convention: "localhost" means the socket, not TCP.
        host = None
    if not host and not socket_path:
        socket_path = _default_socket()
    position_file = str(merged.get("position-file") or position_default)
    if not os.path.isabs(position_file):
        raise ConfigError("position-file %r must be an absolute path" % position_file)
    return Target(name=name, socket=str(socket_path) if socket_path else None,
                  host=str(host) if host else None, port=port,
                  user=str(merged.get("user") or paths.DEFAULT_USER),
                  password=str(merged["password"]) if merged.get("password") else None,
                  position_file=position_file)


def parse(argv: Sequence[str] | None = None) -> Settings:
    argv = list(sys.argv[1:] if argv is None else argv)
    explicit = _explicit_config(argv)
    if explicit:
        if not os.path.isfile(explicit):
            raise ConfigError("config file %s does not exist; fix the --config path or QUIESCE_CONFIG" % explicit)
        config_files = [explicit]
    else:
        config_files = [paths.CONFIG_FILE] if os.path.isfile(paths.CONFIG_FILE) else []
    for path in config_files:
        _check_not_writable_by_others(path, "config file")
        if _file_sets_password(path):
            check_secret_file(path, "config file")

    parser = build_parser(config_files)
    if any(w == "--password" or w.startswith("--password=") for w in argv) or os.environ.get("QUIESCE_PASSWORD"):
        raise ConfigError("a password on the command line or in the environment is visible to other users; "
                          "put it in the config file (mode 0600) or a defaults-file")
    try:
        ns, unknown = parser.parse_known_args(argv)
    except configargparse.ConfigFileParserException as exc:
        raise ConfigError("config file: %s" % exc)
    if unknown and ns.command != "hook":
        raise ConfigError("unrecognised arguments: %s (see 'quiesce --help')" % " ".join(unknown))

    hook_action = None
    if ns.command == "hook":
        if not ns.words:
            raise ConfigError("hook needs an action: freeze, thaw or freezeFail")
        hook_action = HOOK_ACTIONS.get(ns.words[0].lower())
        if hook_action is None:
            raise ConfigError("unknown hook action %r: expected freeze, thaw or freezeFail" % ns.words[0])
    elif ns.words:
        raise ConfigError("unexpected argument %r after %s" % (ns.words[0], ns.command))

    if not os.path.isabs(ns.runtime_dir):
        raise ConfigError("runtime-dir %r must be an absolute path" % ns.runtime_dir)
    if ns.acquire_timeout >= ns.lock_timeout:
        raise ConfigError("acquire-timeout (%g) must be shorter than lock-timeout (%g)"
                          % (ns.acquire_timeout, ns.lock_timeout))

    top = {"socket": ns.socket, "host": ns.host, "port": ns.port, "user": ns.user,
           "password": ns.password, "defaults-file": ns.defaults_file}
    if ns.instance:
        names = [spec["name"] for spec in ns.instance]
        if len(set(names)) != len(names):
            raise ConfigError("instance names must be unique: %s" % ", ".join(names))
        targets = tuple(
            _make_target(spec["name"], [spec, top],
                         paths.INSTANCE_POSITION_FILE.format(name=spec["name"]))
            for spec in ns.instance)
        files = [t.position_file for t in targets]
        if len(set(files)) != len(files):
            raise ConfigError("each instance needs its own position-file")
    else:
        targets = (_make_target("default", [{"position-file": ns.position_file}, top], paths.POSITION_FILE),)

    return Settings(
        command=ns.command, hook_action=hook_action, json=ns.json, cycle=ns.cycle,
        config_file=config_files[0] if config_files else None, driver=ns.driver,
        lock_method=ns.lock_method, lock_timeout=ns.lock_timeout,
        acquire_timeout=ns.acquire_timeout, connect_timeout=ns.connect_timeout,
        on_failure=ns.on_failure, runtime_dir=ns.runtime_dir,
        long_query_time=ns.long_query_time, long_query_wait=ns.long_query_wait,
        long_query_type=ns.long_query_type, kill_long_selects=ns.kill_long_selects,
        stop_replica=ns.stop_replica, release_on_fs_thaw=ns.release_on_fs_thaw,
        targets=targets, metrics_file=ns.metrics_file, restore=_restore_options(ns))


def _file_sets_password(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return any(re.match(r"^\s*(--)?password\s*[:=\s]\s*\S", line) for line in handle)
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror))


def settings_to_dict(settings: Settings) -> dict[str, object]:
    """For handing the settings to the holder over a private pipe (the password included)."""
    data = settings._asdict()
    data["targets"] = [t._asdict() for t in settings.targets]
    return data


def settings_from_dict(data: dict[str, object]) -> Settings:
    values = dict(data)
    values["targets"] = tuple(Target(**t) for t in values["targets"])
    return Settings(**values)
