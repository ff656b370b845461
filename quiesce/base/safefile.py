"""Files handled so that nobody else can swap them under quiesce.

Reading: a settings file only when its owner and mode show that nobody else can change
it. Writing: every file quiesce writes goes through write_atomic. The checks look at the
descriptors that are then used (fstat, fchmod), so nothing can be swapped between a
check and what follows it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
from collections.abc import Callable

from quiesce.base.errors import ConfigError

# Settings files are a few kilobytes; anything this big is not one.
MAX_SIZE = 1 << 20


class TrustedText(collections.namedtuple("TrustedText", "path text mode")):
    """A file's text and the permission bits it had when it was read."""

    __slots__ = ()

    @property
    def shared(self) -> bool:
        """Readable by group or others."""
        return bool(self.mode & (stat.S_IRGRP | stat.S_IROTH))


def _not_root_hint() -> str:
    return "; quiesce must run as root" if os.geteuid() != 0 else ""


def check_owner_and_mode(st: os.stat_result, path: str, what: str) -> None:
    """Owned by root or by whoever runs quiesce, and writable by nobody else."""
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError("%s %s belongs to uid %d, so that user could change what quiesce does; "
                          "fix: chown root %s" % (what, path, st.st_uid, path))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError("%s %s is writable by group or others; fix: chmod go-w %s" % (what, path, path))


def read_trusted(path: str, what: str) -> TrustedText:
    """The UTF-8 text of a regular file that passes check_owner_and_mode.

    Raises FileNotFoundError for a missing file (callers decide whether that is fine)
    and ConfigError for everything else.
    """
    try:
        # O_NONBLOCK: a FIFO planted in the file's place must not hang the hook.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        hint = _not_root_hint() if exc.errno in (errno.EACCES, errno.EPERM) else ""
        raise ConfigError("cannot read %s %s: %s%s" % (what, path, exc.strerror, hint))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("%s %s is not a regular file; fix: point it at a file" % (what, path))
        check_owner_and_mode(st, path, what)
        data = os.read(fd, MAX_SIZE + 1)
        chunk = data
        while chunk and len(data) <= MAX_SIZE:
            chunk = os.read(fd, MAX_SIZE + 1 - len(data))
            data += chunk
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s" % (what, path, exc.strerror))
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise ConfigError("%s %s is larger than %d bytes; fix: point it at the right file" % (what, path, MAX_SIZE))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError("%s %s: line %d is not valid UTF-8; fix: save the file as UTF-8" % (what, path, line))
    return TrustedText(path, text, st.st_mode)


def refuse_shared_secret(path: str, shared: bool, what: str) -> None:
    """A file that holds a password must be readable by its owner only."""
    if shared:
        raise ConfigError("%s %s holds a password and is readable by group or others; fix: chmod 600 %s"
                          % (what, path, path))


# ---------------------------------------------------------------- writing

_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
           # O_EXCL never opens what is already at the name, so a planted FIFO cannot
           # block the open; O_NONBLOCK is the second guard against that.
           | os.O_NONBLOCK)


def temp_name(name: str) -> str:
    """The temporary name write_atomic uses next to name (packages remove leftovers: .NAME.*.tmp)."""
    return ".%s.%d.tmp" % (name, os.getpid())


def write_atomic(path: str, data: bytes | str, mode: int, replace: bool = True,
                 owner: tuple[int, int] | None = None,
                 check_dir: Callable[[os.stat_result, str], None] | None = None) -> None:
    """Write a whole file with exactly mode (and owner); readers see the old file or the new one.

    A fresh temporary file is created with O_EXCL in the directory opened once, changed
    only through its descriptor, synced, then renamed into place and the directory
    synced. Whatever someone plants at the temporary name (a symlink, a hard link to a
    root file, a FIFO) is unlinked, never opened, and cannot make this wait.
    replace=False links the file into place instead: FileExistsError if anything is
    there, so nothing is ever overwritten. check_dir sees the directory's fstat first.
    """
    directory, name = os.path.split(path)
    directory = directory or "."
    if isinstance(data, str):
        data = data.encode("utf-8")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if check_dir is not None:
            check_dir(os.fstat(dir_fd), directory)
        temp = temp_name(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)  # left by a crash (or planted)
        fd = os.open(temp, _CREATE, 0o600, dir_fd=dir_fd)
        placed = False
        try:
            ours = os.fstat(fd)
            if not stat.S_ISREG(ours.st_mode) or ours.st_nlink != 1:
                raise ConfigError("%s/%s is not a new regular file; fix: make %s writable by root only"
                                  % (directory, temp, directory))
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)  # exact, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            there = os.stat(temp, dir_fd=dir_fd, follow_symlinks=False)
            if (there.st_dev, there.st_ino) != (ours.st_dev, ours.st_ino):
                raise ConfigError("%s/%s was replaced while quiesce wrote it, so someone else can write to %s; "
                                  "fix: make it writable by root only" % (directory, temp, directory))
            if replace:
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            placed = replace
        finally:
            os.close(fd)
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def refuse_shared_directory(st: os.stat_result, directory: str, what: str, allow: str) -> None:
    """A directory that someone other than root (or whoever runs quiesce) can write.

    allow: the setting that says the sharing is intended.
    """
    if st.st_uid not in (0, os.geteuid()):
        who = "its owner, uid %d" % st.st_uid
        fix = "chown root %s" % directory
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "group or others"
        fix = "chmod go-w %s" % directory
    else:
        return
    raise ConfigError("%s %s is writable by %s, who could then replace what quiesce writes there; "
                      "fix: %s, or set %s if that is intended" % (what, directory, who, fix, allow))
