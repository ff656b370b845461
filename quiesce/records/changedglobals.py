"""The record of server-wide settings a holder changed, kept in runtime-dir while changed.

Written before the change and updated once it is undone, so that whoever finds the holder
dead (recovery.py) can put the old value back over a fresh connection.
"""

from __future__ import annotations

import os

from quiesce.base import paths
from quiesce.records import state

# The only server-wide setting a holder changes: raised to 1 for the flush under the lock.
FLUSH_LOG = "innodb_flush_log_at_trx_commit"


def _path(runtime_dir: str) -> str:
    return os.path.join(runtime_dir, paths.GLOBALS_NAME)


def read(runtime_dir: str) -> dict[str, object] | None:
    return state.read_json(_path(runtime_dir))


def record(runtime_dir: str, instance: str, name: str, value: int) -> None:
    """Before a holder changes a global: the value to put back, should it die first."""
    path = _path(runtime_dir)
    current = state.read_json(path) or {}
    instances = dict(current.get("instances") or {})
    instances[instance] = dict(instances.get(instance) or {}, **{name: value})
    state.write_json_atomic(path, dict(state.owner_record(), instances=instances))


def forget(runtime_dir: str, instance: str, name: str) -> None:
    """After it was put back."""
    path = _path(runtime_dir)
    current = state.read_json(path) or {}
    instances = dict(current.get("instances") or {})
    left = {k: v for k, v in dict(instances.pop(instance, None) or {}).items() if k != name}
    if left:
        instances[instance] = left
    if instances:
        state.write_json_atomic(path, dict(current, instances=instances))
    else:
        state.remove(path)
