"""The position file: the coordinates and identity a snapshot was taken at, as read back."""

from __future__ import annotations

from typing import Any, Dict

from quiesce.base.errors import QuiesceError, RestoreError
from quiesce.records import state


def load(path: str) -> Dict[str, Any]:
    try:
        position = state.read_json(path)
    except QuiesceError as exc:
        raise RestoreError("position file %s cannot be read (%s); fix: pass the file the snapshot holds "
                           "with --position-file" % (path, exc))
    if position is None:
        raise RestoreError("position file %s does not exist, so there is nothing to compare with: was this "
                           "server restored from a snapshot taken by quiesce? fix: pass the file with "
                           "--position-file" % path)
    if not isinstance(position, dict) or "binlog_file" not in position or "flavour" not in position:
        raise RestoreError("%s is not a quiesce position file; fix: pass the right one with --position-file" % path)
    return position
