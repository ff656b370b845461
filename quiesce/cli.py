"""Command line entry point: parse settings, run one command, map errors to exit codes.

This is the only place where exceptions become exit codes (errors.Exit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sys

from . import config
from .errors import ConfigError, Exit, QuiesceError

def _log():
    # Imported on first use: thaw reaches the holder before paying for the logging module,
    # and writers wait for nothing else.
    from . import log
    return log.get()


def _dispatch(action: str, settings: config.Settings) -> int:
    # Imports stay inside the branches: thaw must not load the database driver.
    if action == "freeze":
        from . import freeze
        return freeze.run(settings)
    if action in ("thaw", "freezeFail"):
        from . import thaw
        return thaw.run(settings)
    if action == "status":
        from . import status
        return status.run(settings)
    if action == "check":
        from . import check
        return check.run(settings)
    if action == "verify":
        from . import verify
        return verify.run(settings)
    if action == "restore-plan":
        from . import restoreplan
        return restoreplan.run(settings)
    raise ConfigError("unknown command %r" % action)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = config.parse(argv)
    except QuiesceError as exc:
        print("quiesce: error: %s" % exc, file=sys.stderr)
        return int(exc.exit_code)
    action = settings.hook_action or settings.command
    try:
        return _dispatch(action, settings)
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
    except Exception as exc:  # the last net: one line, exit 1, details in the system log
        log = _log()
        log.error("internal error: %s: %s (please report this)", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        return int(Exit.OK if action == "freezeFail" else Exit.INTERNAL)
