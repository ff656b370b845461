"""Runtime state in runtime-dir: the serialisation lock, state.json and result.json.

state.json exists exactly while a holder owns a lock (written before freeze returns);
result.json keeps the outcome of the last freeze until a thaw has reported it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import contextlib
import datetime
import errno
import fcntl
import json
import os
import stat
import time

from quiesce.base import paths, safefile
from quiesce.base.errors import Busy, ConfigError, StateError


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_at(epoch: float) -> str:
    return (datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def ensure_runtime_dir(path: str, create: bool = True) -> bool:
    """Create runtime-dir 0700 if missing; refuse one that others could tamper with.

    Returns False when it does not exist and create is False.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        parent = os.path.dirname(path.rstrip("/")) or "/"
        os.makedirs(parent, mode=0o755, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError("runtime-dir %s is a symlink; fix: remove it or set runtime-dir to a real directory" % path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("runtime-dir %s is not a directory; fix: remove it or choose another runtime-dir" % path)
    if st.st_uid not in (0, os.getuid()):
        raise ConfigError("runtime-dir %s belongs to uid %d; fix: chown root %s" % (path, st.st_uid, path))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError("runtime-dir %s is writable by group or others; fix: chmod 700 %s" % (path, path))
    return True


def write_json_atomic(path: str, data: dict[str, object], mode: int = 0o600) -> None:
    """The file is whole or absent, synced with its directory (safefile.write_atomic)."""
    safefile.write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


# Removing state.json while its holder lives would make thaw say "nothing is frozen" while
# the lock stays: the advice always puts stopping the holder first.
_BROKEN_FIX = "fix: end any quiesce holder still running ('pkill -f quiesce.holder' releases its lock), then remove it"


def read_json(path: str) -> dict[str, object] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError("cannot read %s: %s; %s" % (path, exc.strerror, _BROKEN_FIX))
    try:
        with os.fdopen(fd, encoding="utf-8") as handle:
            value = json.load(handle)
    except ValueError:
        raise StateError("%s is not valid JSON; %s" % (path, _BROKEN_FIX))
    if not isinstance(value, dict):
        raise StateError("%s does not hold a JSON object; %s" % (path, _BROKEN_FIX))
    return value


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class RuntimeFiles:
    def __init__(self, runtime_dir: str):
        self.dir = runtime_dir
        self.lock = os.path.join(runtime_dir, paths.LOCK_NAME)
        self.socket = os.path.join(runtime_dir, paths.SOCKET_NAME)
        self.state = os.path.join(runtime_dir, paths.STATE_NAME)
        self.result = os.path.join(runtime_dir, paths.RESULT_NAME)
        self.replicas = os.path.join(runtime_dir, paths.REPLICAS_NAME)
        self.cancel = os.path.join(runtime_dir, paths.CANCEL_NAME)

    def read_state(self) -> dict[str, object] | None:
        return read_json(self.state)

    def read_result(self) -> dict[str, object] | None:
        return read_json(self.result)

    def read_replicas(self) -> dict[str, object] | None:
        return read_json(self.replicas)

    def exclusive(self, timeout: float, what: str,
                  on_busy: Callable[[], None] | None = None) -> contextlib.AbstractContextManager[None]:
        """Serialise quiesce invocations. The wait is bounded; a stuck peer means exit BUSY.

        on_busy runs once if another command holds the lock when we first try.
        """
        return exclusive_lock(self.lock, timeout, what, on_busy)


@contextlib.contextmanager
def exclusive_lock(path: str, timeout: float, what: str,
                   on_busy: Callable[[], None] | None = None) -> Iterator[None]:
    """flock on path (created 0600), waited for at most timeout seconds, else Busy."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
            if on_busy is not None:
                on_busy()
                on_busy = None
            if time.monotonic() >= deadline:
                raise Busy("another quiesce command is still running (waited %.0f s for %s); "
                           "fix: wait for it, or check 'quiesce status'" % (timeout, what))
            # flock has no timed wait; 10 ms keeps this responsive without spinning.
            time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def touch(path: str) -> None:
    """Create an empty marker file (0600), if missing."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process, to tell our holder from a later process that reused its pid."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            # A killed holder nobody has reaped yet is as dead as a missing one.
            return None
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_record() -> dict[str, object]:
    """Identifies this process in a runtime file, so others can tell whether it still lives."""
    return {"holder_pid": os.getpid(), "holder_start_ticks": process_start_ticks(os.getpid())}


def wait_holder_gone(state: dict[str, object], timeout: float) -> bool:
    """Wait (bounded) for the process that wrote state to end; True once it has."""
    deadline = time.monotonic() + timeout
    while holder_alive(state):
        if time.monotonic() >= deadline:
            return False
        # Not our child, so nothing to wait on; 10 ms keeps thaw responsive.
        time.sleep(0.01)
    return True


def holder_alive(state: dict[str, object]) -> bool:
    pid = state.get("holder_pid")
    if not isinstance(pid, int):
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and ticks == state.get("holder_start_ticks")
