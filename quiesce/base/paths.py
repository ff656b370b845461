"""Every filesystem path and default in one place, so packaging and code agree."""

import os

CONFIG_FILE = "/etc/quiesce/quiesce.conf"
RUNTIME_DIR = "/run/quiesce"
STATE_DIR = "/var/lib/quiesce"
POSITION_FILE = STATE_DIR + "/position.json"
INSTANCE_POSITION_FILE = STATE_DIR + "/position-{name}.json"
# Next to the (first) position file: /var/lib/quiesce/history.jsonl by default.
HISTORY_NAME = "history.jsonl"
HISTORY_KEEP = 100
# Beside the history: serialises its writers (a holder and a thaw may finish together).
HISTORY_LOCK_NAME = "history.lock"

# node_exporter's textfile collector directories (metrics-file = auto): Debian's and
# Fedora's packages, then the layout of the upstream documentation.
METRICS_DIRS = ("/var/lib/prometheus/node-exporter", "/var/lib/node_exporter/textfile_collector")
METRICS_NAME = "quiesce.prom"

LIB_DIR = "/usr/lib/quiesce"
HOOK = LIB_DIR + "/hook"
# Copies of HOOK, one per agent, which the packages' registration links point at: the
# file an agent executes carries the SELinux label that lets it run unconfined.
QEMU_GA_HOOK = LIB_DIR + "/qemu-ga-hook"
VMWARE_HOOK = LIB_DIR + "/vmware-hook"
FREEZE = LIB_DIR + "/freeze"
THAW = LIB_DIR + "/thaw"

# Files inside runtime-dir.
LOCK_NAME = "lock"
SOCKET_NAME = "holder.sock"
STATE_NAME = "state.json"
RESULT_NAME = "result.json"
# Replica SQL threads a holder stopped, written before it stops them.
REPLICAS_NAME = "replicas.json"
# Server-wide settings a holder changed for its flush, written before it changes them.
GLOBALS_NAME = "globals.json"
# Left by a thaw that found a freeze still running: that freeze must not lock any more.
CANCEL_NAME = "cancel"

# What the packages' register-hooks script created ("link PATH" / "dir PATH" lines).
HOOK_RECORD = STATE_DIR + "/hooks"

# "zz-" sorts after digits, capitals and most lower-case names: our freeze runs last and
# our thaw first, so the database is locked for the shortest possible time.
HOOK_LINK_NAME = "zz-quiesce"

# (runner, directory) pairs whose entries may be links to our hook.
HOOK_DIRS = (
    ("vmware-tools", "/etc/vmware-tools/backupScripts.d"),
    ("qemu-guest-agent", "/etc/qemu/fsfreeze-hook.d"),
    ("qemu-guest-agent", "/etc/qemu-ga/fsfreeze-hook.d"),
)
LEGACY_HOOKS = (
    ("vmware-tools (legacy pre-freeze)", "/usr/sbin/pre-freeze-script"),
    ("vmware-tools (legacy post-thaw)", "/usr/sbin/post-thaw-script"),
)

# Where distributions put the server socket, most common first. Never a directory every
# user can write to (/tmp): whoever creates the socket there first gets the password.
DEFAULT_SOCKETS = (
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/var/lib/mysql/mysql.sock",
)
SERVER_PROCESS_NAMES = ("mariadbd", "mysqld")

DEFAULT_USER = "root"
DEFAULT_PORT = 3306


def inside(path: str, top: str) -> bool:
    """Whether path is top or below it (both normalised, absolute)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def resolved(path: str) -> str:
    """os.path.realpath, but a path through another process's /proc/PID/root stays there:
    realpath would follow that link to our own root, away from the process's mounts."""
    if path.startswith("/proc/") and "/root" in path:
        parts = path.split("/")
        if len(parts) > 3 and parts[2].isdigit() and parts[3] == "root":
            return os.path.normpath(path)
    return os.path.realpath(path)
