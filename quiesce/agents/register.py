"""Wiring quiesce into one snapshot agent (register), or undoing it (unregister).

Hook directories are registered by the packages; single-file conventions that other
software may own (/etc/google/snapshots/pre.sh, /usr/local/sbin/pre_freeze, Azure's
plugin config) only on request. A file is created only where nothing is, with exactly
the owner and mode the agent demands, and recorded in paths.HOOK_RECORD next to the
packages' own lines ("link PATH", "dir PATH"; ours add "file PATH SHA256"). A file is
ours only while it is recorded and unchanged: anything else is left alone and named.
Package removal runs 'unregister --all'.
"""

from __future__ import annotations

import collections
import configparser
import contextlib
import hashlib
import json
import math
import os
import stat

from quiesce.agents import catalog
from quiesce.base import budget, paths, safefile
from quiesce.base.config import Settings
from quiesce.base.errors import ConfigError

# root: prepended to every path (tests use a scratch tree). libdir: where our entry points
# live, as the created files name them (without root: the agent runs them in the real tree).
Layout = collections.namedtuple("Layout", "root libdir")


# ---------------------------------------------------------------- what we write

def script_text(agent: catalog.Agent, target: str, libdir: str) -> bytes:
    # POSIX sh, LF only, no control characters (Nutanix refuses them); run by exec or 'sh FILE'.
    return ("#!/bin/sh\n"
            "# Created by 'quiesce register %s'; 'quiesce unregister %s' removes it.\n"
            "# The agent's arguments (disk lists, empty strings) are not ours: not passed on.\n"
            "# The caller's name, whatever the agent's process tree looks like (quiesce(8), SEVERAL CALLERS).\n"
            "QUIESCE_CALLER=%s\n"
            "export QUIESCE_CALLER\n"
            "exec %s/%s\n" % (agent.name, agent.name, agent.name, libdir, target)).encode("ascii")


def azure_config_text(settings: Settings) -> bytes:
    pre, post = [f.path for f in catalog.AZURE.files if f.kind == "script"]
    timeout = max(catalog.AZURE_MIN_TIMEOUT, int(math.ceil(budget.freeze_budget(settings))) + 5)
    config = {
        "pluginName": "ScriptRunner",
        "preScriptLocation": pre,
        "postScriptLocation": post,
        "preScriptParams": [],
        "postScriptParams": [],
        "preScriptNoOfRetries": 0,
        "postScriptNoOfRetries": 0,
        "timeoutInSeconds": timeout,
        "continueBackupOnFailure": True,
        "fsFreezeEnabled": True,
        "ScriptsExecutionPollTimeSeconds": catalog.AZURE_POLL_SECONDS,
    }
    return (json.dumps(config, indent=4) + "\n").encode("ascii")


def _content(hook: catalog.HookFile, agent: catalog.Agent, layout: Layout, settings: Settings) -> bytes:
    if hook.kind == "azure-config":
        return azure_config_text(settings)
    return script_text(agent, hook.target, layout.libdir)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the record

class Record:
    """The lines of paths.HOOK_RECORD under root, shared with the packages' register-hooks."""

    def __init__(self, layout: Layout):
        self.path = layout.root + paths.HOOK_RECORD
        try:
            with open(self.path, encoding="utf-8") as handle:
                self.lines = [line.rstrip("\n") for line in handle if line.strip()]
        except FileNotFoundError:
            self.lines = []

    def files(self) -> dict[str, str]:
        return {parts[1]: parts[2] for parts in (line.split(" ") for line in self.lines)
                if len(parts) == 3 and parts[0] == "file"}

    def has(self, kind: str, path: str) -> bool:
        return any(line.split(" ")[:2] == [kind, path] for line in self.lines)

    def add(self, kind: str, path: str, extra: str | None = None) -> None:
        self.forget(kind, path)
        self.lines.append(" ".join(filter(None, (kind, path, extra))))

    def forget(self, kind: str, path: str) -> None:
        self.lines = [line for line in self.lines if line.split(" ")[:2] != [kind, path]]

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        safefile.write_atomic(self.path, "".join(line + "\n" for line in self.lines), 0o644)


# ---------------------------------------------------------------- what is there

def describe(path: str) -> str:
    """What occupies a path, in words, for messages."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "nothing"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link to %s" % os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISREG(st.st_mode):
        return "a file of %d bytes (mode %04o, owner uid %d)" % (st.st_size, stat.S_IMODE(st.st_mode), st.st_uid)
    return "a special file"


def _file_is_ours(real: str, digest: str | None) -> bool:
    if digest is None:
        return False
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        return _digest(handle.read()) == digest


def _link_is_ours(real: str, target: str) -> bool:
    return os.path.islink(real) and os.readlink(real) == target


def is_ours(hook: catalog.HookFile, layout: Layout, record: Record) -> bool:
    real = layout.root + hook.path
    if hook.kind == "link":
        return _link_is_ours(real, layout.libdir + "/" + hook.target)
    return _file_is_ours(real, record.files().get(hook.path))


# ---------------------------------------------------------------- creating

def _make_dirs(directory: str, mode: int, layout: Layout, record: Record) -> None:
    missing = []
    while not os.path.isdir(layout.root + directory):
        if os.path.lexists(layout.root + directory):
            raise ConfigError("%s is %s, not a directory; fix: move it away, then register again"
                              % (directory, describe(layout.root + directory)))
        missing.append(directory)
        directory = os.path.dirname(directory)
    for new in reversed(missing):
        os.mkdir(layout.root + new)
        # The agent's mode for its own directory; the usual 0755 for parents.
        os.chmod(layout.root + new, mode if new == missing[0] else 0o755)
        record.add("dir", new)


def _write_file(real: str, data: bytes, mode: int, replace: bool) -> None:
    """Write a whole file owned by root with exactly `mode`; never over a file that is not ours.

    replace=False: link() fails if anything appeared there meanwhile: no overwrite, ever.
    """
    safefile.write_atomic(real, data, mode, replace=replace, owner=(0, 0))


def _hooks_to_use(agent: catalog.Agent, layout: Layout) -> list[catalog.HookFile]:
    hooks = [h for h in agent.files if h.dir_mode is not None or os.path.isdir(layout.root + os.path.dirname(h.path))]
    if not hooks:
        raise ConfigError("%s: none of %s exists; fix: install the agent first"
                          % (agent.name, ", ".join(os.path.dirname(h.path) for h in agent.files)))
    return hooks


def azure_workload(layout: Layout) -> str | None:
    """The workload Azure's own framework handles, which bypasses the script plugin."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(layout.root + catalog.AZURE_WORKLOAD_CONF, encoding="utf-8")
    except configparser.Error:
        return "unreadable"
    name = parser.get("workload", "workload_name", fallback="").strip()
    return name or None


def register(agent: catalog.Agent, layout: Layout, settings: Settings) -> list[str]:
    """Create what the agent needs; returns what was done. All or nothing on refusal."""
    if not agent.registerable:
        raise ConfigError("%s is configured outside this machine; see quiesce(8), SNAPSHOT AGENTS" % agent.name)
    if agent is catalog.AZURE:
        workload = azure_workload(layout)
        if workload:
            raise ConfigError("%s names workload_name = %s: Azure then runs its own database lock and never "
                              "the script plugin; fix: remove workload_name (or the file), then register again"
                              % (catalog.AZURE_WORKLOAD_CONF, workload))
    record = Record(layout)
    hooks = _hooks_to_use(agent, layout)
    foreign = [h for h in hooks if os.path.lexists(layout.root + h.path) and not is_ours(h, layout, record)]
    if foreign:
        raise ConfigError("%s: %s; nothing was changed; fix: move it away (or fold quiesce into it: see "
                          "quiesce(8)), then register again"
                          % (agent.name, "; ".join("%s is already there (%s), not created by quiesce"
                                                   % (h.path, describe(layout.root + h.path)) for h in foreign)))
    done = []
    try:
        for hook in hooks:
            real = layout.root + hook.path
            if hook.dir_mode is not None:
                _make_dirs(os.path.dirname(hook.path), hook.dir_mode, layout, record)
            if hook.kind == "link":
                if not _link_is_ours(real, layout.libdir + "/" + hook.target):
                    os.symlink(layout.libdir + "/" + hook.target, real)
                    done.append("created %s -> %s/%s" % (hook.path, layout.libdir, hook.target))
                record.add("link", hook.path)
                continue
            data = _content(hook, agent, layout, settings)
            present = os.path.lexists(real)
            if present and _file_is_ours(real, _digest(data)):
                os.chmod(real, hook.mode)
                os.chown(real, 0, 0)
            else:
                _write_file(real, data, hook.mode, replace=present)
                done.append("%s %s (mode %04o)" % ("updated" if present else "created", hook.path, hook.mode))
            record.add("file", hook.path, _digest(data))
    finally:
        record.save()
    return done or ["already registered: %s" % ", ".join(h.path for h in hooks)]


def unregister(agent: catalog.Agent, layout: Layout) -> list[str]:
    """Remove what register created and nobody changed since; name what is left alone."""
    record = Record(layout)
    done = []
    for hook in agent.files:
        real = layout.root + hook.path
        if not os.path.lexists(real):
            record.forget("file", hook.path)
            continue
        if is_ours(hook, layout, record):
            os.unlink(real)
            done.append("removed %s" % hook.path)
            # A "link" record stays: the packages then know it was removed on purpose.
            record.forget("file", hook.path)
        elif hook.kind != "link" or record.has("file", hook.path):
            done.append("left %s alone: it is %s, changed or not created by quiesce" % (hook.path, describe(real)))
    for line in reversed(list(record.lines)):
        kind, _, directory = line.partition(" ")
        if kind == "dir" and any(h.path.startswith(directory + "/") for h in agent.files):
            if not os.path.isdir(layout.root + directory):
                record.forget("dir", directory)
                continue
            with contextlib.suppress(OSError):
                os.rmdir(layout.root + directory)
                record.forget("dir", directory)
                done.append("removed directory %s" % directory)
    record.save()
    return done or ["%s: nothing of quiesce's to remove" % agent.name]


def unregister_all(layout: Layout) -> list[str]:
    done = []
    for agent in catalog.ALL:
        if agent.registerable:
            done.extend(line for line in unregister(agent, layout) if "nothing of quiesce's" not in line)
    return done
