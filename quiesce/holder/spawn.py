"""Starting a holder from the freeze command, and waiting for its one readiness line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Dict

import quiesce
from quiesce.base import budget, config
from quiesce.base.config import Settings
from quiesce.base.errors import StateError
from quiesce.holder import protocol
from quiesce.records import state

# How much longer than its own worst case the freeze command waits for the holder.
SPAWN_MARGIN = 15.0


def spawn_timeout(settings: Settings) -> float:
    return budget.freeze_budget(settings) + SPAWN_MARGIN


def spawn(settings: Settings, caller: str = "unknown", test: bool = False) -> Dict[str, Any]:
    """Start a holder and return its readiness message ({"status": "locked"|"not-running"|"error"}).

    caller: who asked (quiesce/base/caller.py); test: check --cycle's cycle, which is no backup.
    """
    settings_r, settings_w = os.pipe()
    ready_r, ready_w = os.pipe()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(quiesce.__file__)))
    code = ("import sys; sys.path.insert(0, %r); from quiesce.holder.process import main; main(%d, %d)"
            % (package_parent, settings_r, ready_w))
    try:
        # A fresh interpreter in its own session, stdio on /dev/null, cwd /, nothing inherited
        # but the two pipes: the hook runner waits only for our pid and never for the holder.
        proc = subprocess.Popen([sys.executable, "-sB", "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                close_fds=True, pass_fds=(settings_r, ready_w), start_new_session=True)
    finally:
        os.close(settings_r)
        os.close(ready_w)
    files = state.RuntimeFiles(settings.runtime_dir)
    try:
        try:
            protocol.write_all_fd(settings_w, protocol.encode(
                {"settings": config.settings_to_dict(settings), "caller": caller, "test": test}))
        finally:
            os.close(settings_w)
        try:
            line = protocol.read_line_fd(ready_r, spawn_timeout(settings))
        except TimeoutError:
            # Killing it closes its sessions, and the server drops any lock with them.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            _clean_up_after(settings, files)
            raise StateError("the holder did not report within %.0f s and was killed; nothing stays locked"
                             % spawn_timeout(settings))
    finally:
        os.close(ready_r)
    if line is None:
        status = proc.wait(timeout=10)
        # It died after writing state.json, perhaps: its sessions, and so any lock, are gone.
        _clean_up_after(settings, files)
        raise StateError("the holder exited (status %s) before reporting; see the system log" % status)
    message = protocol.decode(line)
    if message.get("status") != "locked":
        proc.wait(timeout=10)
    message["pid"] = proc.pid
    return message


def _clean_up_after(settings: Settings, files: state.RuntimeFiles) -> None:
    """After a holder that never reported: no state of it stays, no applier stays stopped."""
    from quiesce.holder import recovery
    state.remove(files.state)
    state.remove(files.socket)
    recovery.restart_orphaned_replicas(settings, files)
