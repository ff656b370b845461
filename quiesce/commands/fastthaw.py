"""Thaw's first step: tell the holder to release, before loading anything else.

Whenever nothing thawed a filesystem first (agents that do not freeze filesystems), every
writer waits until the holder hears from thaw. Parsing the configuration costs tens of
milliseconds of imports (configargparse, argparse, re, json), so the hook sends its
request first, knowing only where the holder listens: runtime-dir from --runtime-dir,
QUIESCE_RUNTIME_DIR or the config file's top section (the same precedence as the full
parse), read here by hand. Only modules the interpreter loaded at start-up are used,
plus _socket (socket.py builds its enums on import) and fcntl.

Then the normal path runs: it validates the configuration and reports errors as always,
and reports the holder's answer given here. Releasing early is always safe -- it is what
thaw does anyway -- so a bad configuration cannot keep the database locked. Anything
unexpected here (no runtime-dir, no holder, a file that is not ours, another quiesce
command running) sends nothing and leaves it all to the normal path.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import stat
import sys
import time

from quiesce.base import caller as callers, paths

# How long the fast path waits for the holder's answer; the normal path (thaw.thaw_timeout)
# gives a holder that got this request the rest of its time.
REPLY_TIMEOUT = 30.0

def thaw_request(argv: list[str], environ) -> bytes:
    """protocol.encode({"all": ..., "caller": ..., "cmd": "thaw"}), built without json."""
    # clean(): nothing left to escape.
    caller = callers.identify(_option(argv, ("--caller",)) or environ.get("QUIESCE_CALLER"))
    everyone = "true" if "--all" in argv else "false"
    return ('{"all":%s,"caller":"%s","cmd":"thaw"}\n' % (everyone, caller)).encode("ascii")

_MAX_REPLY = 1 << 20
_MAX_CONFIG = 1 << 20


class Answer:
    """What the holder said (one undecoded line), or why it said nothing after the request."""

    __slots__ = ("reply", "holder_pid", "problem")

    def __init__(self, reply: bytes | None, holder_pid: int | None, problem: str | None):
        self.reply = reply
        self.holder_pid = holder_pid
        self.problem = problem

    def describe(self) -> str:
        """One line for when the normal path cannot report it (a configuration error)."""
        if self.reply is None:
            return ("thaw was sent to holder pid %s before the configuration was read, and it did not answer "
                    "(%s)" % (self.holder_pid, self.problem))
        import json
        try:
            result = json.loads(self.reply.decode("utf-8"))
        except ValueError:
            result = {}
        if not isinstance(result, dict):
            result = {}
        if result.get("held"):
            return ("thaw was sent before the configuration was read; the lock stays held for %s"
                    % ", ".join(str(c) for c in result.get("callers") or []))
        text = ("the lock was released before the configuration was read: outcome %s, held %s ms"
                % (result.get("outcome"), result.get("held_ms")))
        if result.get("outcome") not in ("released", "released-at-fs-thaw"):
            text += " (%s); the snapshot may be inconsistent" % result.get("reason")
        return text


def _option(argv: list[str], names: tuple[str, ...]) -> str | None:
    for i, word in enumerate(argv):
        if word in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.getuid()) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def config_value(text: str, key: str) -> str | None:
    """key's value in the top section of a config file in ConfigArgParse's syntax, or None."""
    value = None
    top = True
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            top = line.replace(" ", "").lower() in ("[quiesce]", "[main]")
            continue
        if not top or not line.startswith(key) or line[len(key):len(key) + 1] not in (":", "=", " ", "\t"):
            continue
        rest = line[len(key):].lstrip()
        if rest[:1] in (":", "="):
            rest = rest[1:].lstrip()
        for mark in (" #", "\t#", " ;", "\t;"):
            if mark in rest:
                rest = rest.split(mark, 1)[0].rstrip()
        if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "'\"":
            rest = rest[1:-1]
        value = rest
    return value


def runtime_dir(argv: list[str], environ) -> str | None:
    """Where the holder listens, as the full parse would find it; None if unsure."""
    given = _option(argv, ("--runtime-dir",)) or environ.get("QUIESCE_RUNTIME_DIR")
    if given:
        return given
    config = _option(argv, ("-c", "--config")) or environ.get("QUIESCE_CONFIG") or paths.CONFIG_FILE
    try:
        # O_NONBLOCK: a FIFO given as the config file must not hang the thaw.
        fd = os.open(config, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return paths.RUNTIME_DIR if config == paths.CONFIG_FILE else None
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st):
            return None         # the full parse refuses it; nothing here may act on it
        text = os.read(fd, _MAX_CONFIG).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    value = config_value(text, "runtime-dir")
    if value is None:
        value = config_value(text, "runtime_dir")
    return value if value is not None else paths.RUNTIME_DIR


def _read_line(sock: _socket.socket, deadline: float) -> bytes | None:
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer within %.0f s" % REPLY_TIMEOUT)
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > _MAX_REPLY:
            raise ValueError("answer too long")
    return data.split(b"\n", 1)[0]


def release(argv: list[str], environ=None) -> Answer | None:
    """Send thaw to the holder; None if nothing was sent (the normal path does it all)."""
    environ = os.environ if environ is None else environ
    directory = runtime_dir(argv, environ)
    if not directory or not os.path.isabs(directory):
        return None
    try:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or not _trusted(st):
            return None
        socket_path = os.path.join(directory, paths.SOCKET_NAME)
        st = os.lstat(socket_path)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid not in (0, os.getuid()):
            return None
        lock_fd = os.open(os.path.join(directory, paths.LOCK_NAME),
                          os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        # A freeze or thaw in progress: the normal path waits its turn.
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None
        return _request(socket_path, thaw_request(argv, environ))
    finally:
        os.close(lock_fd)


def _request(socket_path: str, request: bytes) -> Answer | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(REPLY_TIMEOUT)
        try:
            sock.connect(socket_path)
            creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        except OSError:
            return None         # a stale socket: the normal path finds out what happened
        pid = int.from_bytes(creds[:4], sys.byteorder, signed=True)
        try:
            sock.sendall(request)
            line = _read_line(sock, time.monotonic() + REPLY_TIMEOUT)
        except (OSError, ValueError) as exc:
            return Answer(None, pid, str(exc) or type(exc).__name__)
        if line is None:
            return Answer(None, pid, "the holder closed the connection without answering")
        return Answer(line, pid, None)
    finally:
        sock.close()
