"""Typed errors and the one table of exit codes.

Every failure the user can meet is one of these exceptions; cli.py turns them into a
one-line message and the exit code below. quiesce(8) EXIT STATUS and docs/troubleshooting.md follow this table (tests/unit/test_docs.py checks the latter).
"""

import enum


class Exit(enum.IntEnum):
    OK = 0
    INTERNAL = 1
    CONFIG = 2
    CONNECT = 3
    PRIVILEGE = 4
    LOCK_TIMEOUT = 5
    LOCK_LOST = 6
    BUSY = 7
    STATE = 8
    RESTORE = 9
    REPLICA_STOPPED = 10


EXIT_MEANINGS = {
    Exit.OK: "success (also: server not running, nothing frozen to thaw, on-failure=continue)",
    Exit.INTERNAL: "internal error (a bug: please report it)",
    Exit.CONFIG: "usage or configuration error",
    Exit.CONNECT: "cannot connect to or authenticate with the server",
    Exit.PRIVILEGE: "the account lacks a privilege the chosen lock needs",
    Exit.LOCK_TIMEOUT: "lock not acquired in time (acquire-timeout or long-running statements)",
    Exit.LOCK_LOST: "lock lost or expired before thaw: the snapshot may be inconsistent",
    Exit.BUSY: "busy: another quiesce command did not finish in time",
    Exit.STATE: "the holder or its runtime state failed (no answer, unreadable state)",
    Exit.RESTORE: "a restored server does not match its snapshot (verify failed, position file missing or "
                  "from another server) or a restore plan could not be applied",
    Exit.REPLICA_STOPPED: "the lock lasted, but a replica SQL thread stopped for the freeze could not be restarted "
                          "(the next quiesce command retries)",
}


class QuiesceError(Exception):
    """Base class: message is one line that names the problem and the fix."""

    exit_code = Exit.INTERNAL


class ConfigError(QuiesceError):
    exit_code = Exit.CONFIG


class ConnectError(QuiesceError):
    exit_code = Exit.CONNECT


class ServerNotRunning(ConnectError):
    """Nothing to quiesce: no server process exists. Freeze treats this as success."""


class PrivilegeError(QuiesceError):
    exit_code = Exit.PRIVILEGE


class LockTimeout(QuiesceError):
    exit_code = Exit.LOCK_TIMEOUT


class LockLost(QuiesceError):
    exit_code = Exit.LOCK_LOST


class Busy(QuiesceError):
    exit_code = Exit.BUSY


class StateError(QuiesceError):
    exit_code = Exit.STATE


class RestoreError(QuiesceError):
    exit_code = Exit.RESTORE


class ReplicaStopped(QuiesceError):
    exit_code = Exit.REPLICA_STOPPED


def exit_code_for(exc: BaseException) -> Exit:
    if isinstance(exc, QuiesceError):
        return exc.exit_code
    return Exit.INTERNAL


_BY_CODE = {cls.exit_code: cls for cls in (ConfigError, ConnectError, PrivilegeError, LockTimeout,
                                           LockLost, Busy, StateError, RestoreError, ReplicaStopped)}


def error_for_code(code: int, message: str) -> QuiesceError:
    """Rebuild an error that another process (the holder) reported by exit code."""
    cls = _BY_CODE.get(Exit(code) if code in Exit._value2member_map_ else Exit.INTERNAL, QuiesceError)
    return cls(message)
