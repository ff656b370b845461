"""Making what the server wrote durable, without syncing anybody else's data under the lock.

Agents that snapshot without freezing the filesystems (pre/post scripts, cloud snapshot
agents) need what the server wrote to be on disk before the snapshot, even with relaxed
settings (innodb_flush_log_at_trx_commit 0 or 2, sync_binlog 0, MyISAM). A syncfs()
under the lock would do it, but it writes out everything dirty on the filesystem -- a
download, a backup being written -- while every writer waits. So the work is split:

- drain(), before the lock: an unlocked syncfs() of each filesystem the server uses.
  Nobody waits for it, and afterwards little is left dirty.
- sync(), under the lock: fdatasync() of the server's own files that changed since the
  drain began (its data directory, binary and relay logs, redo/undo and Aria logs, and
  whatever else the local server process has open there), then fsync() of their
  directories. Files the drain already made durable are left alone: a write updates
  the file's mtime before it dirties a page, so a file whose mtime and ctime are older
  than the start of a completed drain has nothing left to write.

Both steps are bounded; a step that overruns is reported, never waited for forever.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

from quiesce.base import budget
from quiesce.base import paths
from quiesce.server import serverproc, serverview

DRAIN_LIMIT = budget.DRAIN_LIMIT
# File timestamps come from a coarse clock and are whole seconds on ext4 with 128-byte
# inodes: a file counts as changed since the drain if stamped up to this long before it.
STAMP_MARGIN = 2.0
# How far the wall clock may have moved against the monotonic one between the drain and
# the lock before the timestamps above can no longer be trusted.
CLOCK_STEP_LIMIT = 0.5
# fdatasync()s under the lock run this many at a time.
SYNC_THREADS = 4

# Variables naming where the server keeps data and logs (relative ones are relative to
# the datadir). Those not given are simply missing from the row.
_DIR_VARIABLES = ("innodb_data_home_dir", "innodb_log_group_home_dir", "innodb_undo_directory",
                  "aria_log_dir_path")
_FILE_VARIABLES = ("log_bin_basename", "log_bin_index", "relay_log_basename", "relay_log_index")


class ServerFiles(NamedTuple):
    """What the server writes to, as seen from here."""

    datadir: Optional[str]
    directories: Tuple[str, ...]    # data and log directories, absolute and existing
    open_files: Tuple[str, ...]     # regular files the local server process had open
    pids: Tuple[int, ...]           # the server processes found (none for a remote server)


class Drained(NamedTuple):
    files: ServerFiles
    since_wall: Optional[float]     # every change before this is durable; None: drain incomplete
    clock_offset: float             # time.time() - time.monotonic() when the drain began
    devices: FrozenSet[int]         # filesystems the completed drain covered
    ms: float


class Synced(NamedTuple):
    files: int                      # files fdatasync()ed
    directories: int                # directories fsync()ed
    scanned: int                    # files looked at
    complete: bool                  # False: the limit passed first (the sync goes on unwatched)
    problems: Tuple[str, ...]
    ms: float


# --- finding the server's files ----------------------------------------------------------

def _absolute(path: str, datadir: str) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(datadir, path))


def server_directories(info: Dict[str, Any], view: serverview.ServerView = serverview.UNKNOWN) -> Tuple[str, ...]:
    """The data directory and every log directory the server's variables name, as reached
    from here (view: see serverview.py)."""
    datadir = str(info.get("datadir") or "")
    if not datadir:
        return ()
    found = [os.path.normpath(datadir)]
    for name in _DIR_VARIABLES:
        value = info.get(name)
        if value not in (None, ""):
            found.append(_absolute(str(value), datadir))
    for name in _FILE_VARIABLES:
        value = info.get(name)
        if value not in (None, ""):
            found.append(os.path.dirname(_absolute(str(value), datadir)))
    unique = []
    for path in (view.path(p) for p in found):
        if path not in unique and os.path.isdir(path):
            unique.append(path)
    return tuple(unique)


def find_server_pids(datadir: str) -> Tuple[int, ...]:
    """Server processes of our mount namespace working in this datadir (the server chdir()s
    into it); one elsewhere naming the same path works in another directory."""
    try:
        want = os.path.realpath(datadir)
    except OSError:
        return ()
    return tuple(p.pid for p in serverproc.servers() or ()
                 if serverproc.cwd(p.pid) == want and serverview.in_our_namespace(p.pid))


def open_files(pid: int, skip: Sequence[str] = (),
               view: serverview.ServerView = serverview.UNKNOWN) -> List[str]:
    """Regular files the process has open, but deleted ones and those under skip (paths as
    the process names them), as reached from here."""
    found = []
    base = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(base)
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(os.path.join(base, fd))
        except OSError:
            continue
        # Sockets, pipes and anonymous files read "socket:[...]" and the like.
        if not target.startswith("/") or target.endswith(" (deleted)") or target in found:
            continue
        if any(paths.inside(target, top) for top in skip):
            continue
        target = view.path(target)
        try:
            if not stat.S_ISREG(os.stat(target).st_mode):
                continue
        except OSError:
            continue
        found.append(target)
    return found


def server_files(info: Dict[str, Any], view: Optional[serverview.ServerView] = None) -> ServerFiles:
    """The server's own files: from its variables and, if it runs here, what it has open.

    info is the DURABILITY_STATEMENT row; view: the process behind the connection and how
    its paths are reached. An empty result means the server's directories are not visible
    here (another machine): there is nothing to sync.
    """
    view = view or serverview.UNKNOWN
    directories = server_directories(info, view)
    if not directories:
        return ServerFiles(None, (), (), ())
    datadir = directories[0]
    pids = (view.pid,) if view.pid else find_server_pids(datadir)
    skip = ["/dev", "/proc", "/sys"]
    if info.get("tmpdir"):
        skip.extend(str(info["tmpdir"]).split(":"))
    files: List[str] = []
    for pid in pids:
        files.extend(f for f in open_files(pid, skip, view) if f not in files)
    return ServerFiles(datadir, directories, tuple(files), pids)


def _candidate_dirs(files: ServerFiles) -> List[str]:
    """Directories to look through under the lock: the data and log directories, and the
    databases' directories inside the datadir (where MyISAM and Aria tables live)."""
    dirs = list(files.directories)
    if files.datadir:
        try:
            with os.scandir(files.datadir) as entries:
                for entry in entries:
                    # MySQL's temporary tablespaces: nothing in them outlives a restart.
                    if entry.is_dir(follow_symlinks=False) and entry.name != "#innodb_temp":
                        path = os.path.join(files.datadir, entry.name)
                        if path not in dirs:
                            dirs.append(path)
        except OSError:
            pass
    return dirs


# --- before the lock ---------------------------------------------------------------------

def _syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        import ctypes  # the holder only: kept off thaw's path
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), path)
    finally:
        os.close(fd)


def _bounded(work, limit: float, name: str, problems: List[str]) -> bool:
    """Run work() in a daemon thread; True if it finished within limit seconds.

    A sync cannot be interrupted: one that overruns goes on by itself and is reported.
    An unexpected error is added to problems (and the work counts as not done).
    """
    done = threading.Event()
    failed: List[str] = []

    def run() -> None:
        try:
            work()
        except Exception as exc:  # reported by the caller; a thread has nobody else to tell
            failed.append("%s: %s" % (type(exc).__name__, exc))
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    finished = done.wait(limit)
    problems.extend(failed)
    return finished and not failed


def drain(files: ServerFiles, limit: float = DRAIN_LIMIT) -> Drained:
    """syncfs() each filesystem the server uses, before the lock; waits at most limit seconds."""
    began = time.monotonic()
    offset = time.time() - began
    by_device: Dict[int, str] = {}
    for path in list(files.directories) + [os.path.dirname(f) for f in files.open_files]:
        try:
            by_device.setdefault(os.stat(path).st_dev, path)
        except OSError:
            continue
    synced: List[int] = []

    def work() -> None:
        for device, path in by_device.items():
            try:
                _syncfs(path)
            except OSError:
                continue        # that filesystem's files are all synced under the lock
            synced.append(device)

    complete = _bounded(work, limit, "quiesce-drain", []) if by_device else True
    devices = frozenset(synced) if complete else frozenset()
    return Drained(files, began + offset - STAMP_MARGIN if complete else None, offset, devices,
                   (time.monotonic() - began) * 1000.0)


def prepare(info: Dict[str, Any], view: Optional[serverview.ServerView] = None,
            limit: float = DRAIN_LIMIT) -> Drained:
    """server_files() and drain() in one: what locking does right before the lock."""
    return drain(server_files(info, view), limit)


# --- under the lock ----------------------------------------------------------------------

def _changed(st: os.stat_result, drained: Drained, since: Optional[float]) -> bool:
    if since is None or st.st_dev not in drained.devices:
        return True
    return max(st.st_mtime, st.st_ctime) >= since


def _sync_path(path: str, directory: bool) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if directory else os.O_NONBLOCK)
    fd = os.open(path, flags)
    try:
        if directory:
            os.fsync(fd)
        else:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def sync(drained: Drained, limit: float) -> Synced:
    """fdatasync() the server's files changed since the drain, then fsync() their directories.

    Runs under the lock, so it waits at most limit seconds.
    """
    began = time.monotonic()
    files = drained.files
    since = drained.since_wall
    if since is not None and abs((time.time() - time.monotonic()) - drained.clock_offset) > CLOCK_STEP_LIMIT:
        since = None            # the wall clock was stepped: timestamps prove nothing now
    done: Dict[str, List[str]] = {"files": [], "directories": [], "scanned": []}   # appends are atomic
    problems: List[str] = []

    def attempt(path: str, directory: bool) -> None:
        try:
            _sync_path(path, directory)
            done["directories" if directory else "files"].append(path)
        except OSError as exc:
            problems.append("%s: %s" % (path, exc.strerror))

    def work() -> None:
        dirs = _candidate_dirs(files)
        seen = set()
        changed_dirs = []
        for directory in dirs:
            try:
                st = os.stat(directory)
                with os.scandir(directory) as entries:
                    names = [e.path for e in entries if not e.is_dir()]
            except OSError as exc:
                problems.append("%s: %s" % (directory, exc.strerror))
                continue
            if _changed(st, drained, since):
                changed_dirs.append(directory)
            seen.update(names)
        for path in list(files.open_files):
            if path not in seen:
                seen.add(path)
                parent = os.path.dirname(path)
                if parent not in dirs and parent not in changed_dirs:
                    try:
                        if _changed(os.stat(parent), drained, since):
                            changed_dirs.append(parent)
                    except OSError:
                        pass
        changed = []
        for path in sorted(seen):
            try:
                st = os.stat(path)
            except OSError:
                continue        # removed meanwhile, or a dangling link
            done["scanned"].append(path)
            if stat.S_ISREG(st.st_mode) and _changed(st, drained, since):
                changed.append(path)
        # In parallel: the filesystem commits its journal once for syncs that wait together,
        # and the block layer merges their cache flushes.
        workers = [threading.Thread(target=lambda part=part: [attempt(p, directory=False) for p in part],
                                    name="quiesce-sync-file", daemon=True)
                   for part in (changed[i::SYNC_THREADS] for i in range(SYNC_THREADS)) if part]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        # Directories last: new and renamed files are then reachable through durable entries.
        for directory in changed_dirs:
            attempt(directory, directory=True)

    complete = _bounded(work, limit, "quiesce-sync", problems) if files.directories else True
    return Synced(len(done["files"]), len(done["directories"]), len(done["scanned"]), complete, tuple(problems[:5]),
                  (time.monotonic() - began) * 1000.0)
