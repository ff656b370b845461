"""Read a settings file only when its owner and mode show that nobody else can change it.

The checks look at the descriptor that is then read (fstat), so the file cannot be
swapped between the check and the read.
"""

from __future__ import annotations

import collections
import errno
import os
import stat

from .errors import ConfigError

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
