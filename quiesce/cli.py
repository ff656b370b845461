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
    if action == "run":
        from quiesce.commands import run
        return run.run(settings)
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


def _requested(argv: Sequence[str] | None) -> str | None:
    """The command or hook action asked for, from the raw words (parse() failed)."""
    words = list(sys.argv[1:] if argv is None else argv)
    return config.requested_action(words) or config.command_word(words)


def _failed(action: str | None, code: int, message: str, policy: str, exc_info: bool = False) -> int:
    """The one place a failure becomes an exit status: freezeFail always succeeds, and a
    freeze with on-failure=continue lets the snapshot go ahead, whatever failed."""
    log = _log()
    if action == "freezeFail":
        log.error("%s (freezeFail always succeeds)", message, exc_info=exc_info)
        return int(Exit.OK)
    if action == "freeze" and policy == "continue":
        log.error("FREEZE FAILED: %s -- on-failure=continue: the snapshot goes ahead WITHOUT a database "
                  "lock and is only crash-consistent", message, exc_info=exc_info)
        return int(Exit.OK)
    log.error("%s", message, exc_info=exc_info)
    return code


def main(argv: Sequence[str] | None = None, early_thaw=None) -> int:
    """early_thaw: the holder's answer to a hook's thaw sent before this (fastthaw.Answer)."""
    try:
        settings = config.parse(argv)
    except QuiesceError as exc:
        if early_thaw is not None:
            _log().error("%s", early_thaw.describe())
        return _failed(_requested(argv), int(exc.exit_code), "error: %s" % exc, config.failure_policy(argv))
    action = settings.hook_action or settings.command
    policy = settings.on_failure
    try:
        _check_access(settings)
        return _dispatch(action, settings, early_thaw)
    except QuiesceError as exc:
        return _failed(action, int(exc.exit_code), "error: %s" % exc, policy)
    except KeyboardInterrupt:
        return _failed(action, int(Exit.INTERNAL), "error: interrupted", policy)
    except PermissionError as exc:
        if os.geteuid() == 0:
            return _internal_error(action, policy)
        # Another file quiesce needs (runtime-dir's parent, a state file) is root's.
        return _failed(action, int(Exit.CONFIG), "error: %s" % _not_root_message(settings, exc.filename or "a file"),
                       policy)
    except Exception:
        return _internal_error(action, policy)


def _internal_error(action: str, policy: str) -> int:
    """The last net: one record at ERROR whose traceback the log formatter folds into one line."""
    exc = sys.exc_info()[1]
    return _failed(action, int(Exit.INTERNAL), "internal error: %s: %s (a bug: please report it with this whole "
                   "message)" % (type(exc).__name__, exc), policy, exc_info=True)
