"""Command line entry point: parse settings, run one command, map errors to exit codes.

This is the only place where exceptions become exit codes (errors.Exit).
"""

from __future__ import annotations

from collections.abc import Sequence

import os
import sys

from quiesce.base import config
from quiesce.base.errors import ConfigError, Exit, QuiesceError

def _log():
    # Imported on first use: thaw reaches the holder before paying for the logging module,
    # and writers wait for nothing else.
    from quiesce.base import log
    return log.get()


def _dispatch(action: str, settings: config.Settings, early_thaw=None) -> int:
    # Imports stay inside the branches: thaw must not load the database driver.
    if action == "freeze":
        from quiesce.commands import freeze
        return freeze.run(settings)
    if action in ("thaw", "freezeFail"):
        from quiesce.commands import thaw
        return thaw.run(settings, early_thaw)
    if action == "status":
        from quiesce.commands import status
        return status.run(settings)
    if action == "check":
        from quiesce.commands import check
        return check.run(settings)
    if action == "verify":
        from quiesce.commands import verify
        return verify.run(settings)
    if action == "restore-plan":
        from quiesce.commands import restore_plan
        return restore_plan.run(settings)
    if action in ("register", "unregister"):
        from quiesce.commands import register
        return register.run(settings)
    raise ConfigError("unknown command %r" % action)


def _not_root_message(settings: config.Settings, what: str) -> str:
    return "quiesce must run as root (or as the owner of runtime-dir %s): %s: permission denied" % (
        settings.runtime_dir, what)


def _check_access(settings: config.Settings) -> None:
    """A user who cannot use runtime-dir learns it in one line, whatever the command."""
    if os.geteuid() != 0 and os.path.isdir(settings.runtime_dir) and not os.access(
            settings.runtime_dir, os.R_OK | os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise ConfigError(_not_root_message(settings, settings.runtime_dir))


def main(argv: Sequence[str] | None = None, early_thaw=None) -> int:
    """early_thaw: the holder's answer to a hook's thaw sent before this (fastthaw.Answer)."""
    try:
        settings = config.parse(argv)
    except QuiesceError as exc:
        if early_thaw is not None:
            _log().error("%s", early_thaw.describe())
        if config.requested_action(argv) == "freezeFail":
            _log().error("error: %s (freezeFail always succeeds)", exc)
            return int(Exit.OK)
        _log().error("error: %s", exc)
        return int(exc.exit_code)
    action = settings.hook_action or settings.command
    try:
        _check_access(settings)
        return _dispatch(action, settings, early_thaw)
    except QuiesceError as exc:
        log = _log()
        if action == "freezeFail":
            log.error("error: %s (freezeFail always succeeds)", exc)
            return int(Exit.OK)
        if action == "freeze" and settings.on_failure == "continue" and not isinstance(exc, ConfigError):
            log.error("FREEZE FAILED: %s -- on-failure=continue: the snapshot goes ahead WITHOUT a database "
                      "lock and is only crash-consistent", exc)
            return int(Exit.OK)
        log.error("error: %s", exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _log().error("error: interrupted")
        return int(Exit.INTERNAL)
    except PermissionError as exc:
        if os.geteuid() == 0:
            return _internal_error(action)
        # Another file quiesce needs (runtime-dir's parent, a state file) is root's.
        _log().error("error: %s", _not_root_message(settings, exc.filename or "a file"))
        return int(Exit.OK if action == "freezeFail" else Exit.CONFIG)
    except Exception:
        return _internal_error(action)


def _internal_error(action: str) -> int:
    """The last net: one record at ERROR whose traceback the log formatter folds into one line."""
    exc = sys.exc_info()[1]
    _log().error("internal error: %s: %s (a bug: please report it with this whole message)",
                 type(exc).__name__, exc, exc_info=True)
    return int(Exit.OK if action == "freezeFail" else Exit.INTERNAL)
