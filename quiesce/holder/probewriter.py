"""The filesystem probe's writer process, from the holder's side: start it, hand it one
probe call at a time, read its answer, let it go.

The writer (fsprobe_writer.py) is a child process, not a thread of the holder: a process
cannot finish exiting while one of its threads sleeps in a frozen write, and until it
has, its descriptors stay open -- the database connection, and with it the lock, would
outlive even a SIGKILL of the holder until the thaw. It is started with nothing but the
probe file, so the holder never touches the probed filesystem after start() and can
always exit or be killed.
"""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
from typing import List, Optional

from quiesce.base import budget
from quiesce.holder import fsprobe_writer, probedir


def close_quietly(fd: Optional[int]) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def writer_command() -> List[str]:
    """argv of the writer, without its five arguments."""
    return [sys.executable, "-I", "-S", "-B", os.path.abspath(fsprobe_writer.__file__)]


class WriterProcess:
    """A started writer: its probe file's name, its pid, and the two pipes to it."""

    def __init__(self, name: str, child: subprocess.Popen, cmd_w: int, rep_r: int) -> None:
        self.name = name
        self.child = child
        self.cmd_w: Optional[int] = cmd_w
        self.reply_fd: Optional[int] = rep_r

    @property
    def pid(self) -> int:
        return self.child.pid

    def send(self, phase: str) -> None:
        """Ask for one probe call ("write" or "sync"); OSError when the writer is gone."""
        if self.cmd_w is None:
            raise OSError("the writer's command pipe is closed")
        os.write(self.cmd_w, fsprobe_writer.COMMANDS[phase])

    def read_reply(self) -> Optional[int]:
        """The answer to the last call, once reply_fd is readable: errno (0: success),
        None if the writer died."""
        data = os.read(self.reply_fd, 64)
        try:
            return int(data) if data else None
        except ValueError:
            return None

    def finish(self) -> None:
        """Closing the command pipe tells the writer to remove its file and exit; one stuck
        in a frozen write does so after the thaw, and this waits for that in waitpid(),
        which, unlike the write, never holds up our own exit."""
        close_quietly(self.cmd_w)
        self.cmd_w = None
        try:
            self.child.wait()
        except Exception:
            pass
        close_quietly(self.reply_fd)
        self.reply_fd = None


def start(directory: str, token: str, command: List[str]) -> WriterProcess:
    """Make the probe file in directory and start the writer on it.

    Raises OSError (and leaves nothing behind) if the directory is a symlink, the file
    cannot be created exclusively, its first write fails, or the writer does not say
    hello within budget.WRITER_START_LIMIT.
    """
    if not command or not command[0]:
        raise OSError("no interpreter path to start the probe writer with")
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    fd = cmd_r = cmd_w = rep_r = rep_w = None
    name = probedir.probe_name(token)
    created = False
    try:
        try:
            probedir.sweep_stale(directory, dir_fd=dfd)
        except OSError:
            pass
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        created = True
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise OSError("probe file %s is not a fresh regular file" % name)
        os.fchmod(fd, 0o600)
        # The block is allocated now, before any freeze; later writes only overwrite it.
        os.pwrite(fd, b"\0", 0)
        os.fdatasync(fd)
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for p in (cmd_w, rep_r):
            os.set_inheritable(p, False)
        child = subprocess.Popen(
            command + [str(dfd), str(fd), str(cmd_r), str(rep_w), name],
            pass_fds=(dfd, fd, cmd_r, rep_w), close_fds=True, cwd="/",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for mine in (fd, cmd_r, rep_w):
            os.close(mine)
        fd = cmd_r = rep_w = None
        ready, _, _ = select.select([rep_r], [], [], budget.WRITER_START_LIMIT)
        hello = os.read(rep_r, 64) if ready else b""
        if hello != b"0\n":
            os.close(cmd_w)
            cmd_w = None
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise OSError("the probe writer did not start (%r)" % (hello,))
        # From here on the writer owns the file: it unlinks it when it exits.
        created = False
        os.close(dfd)
        dfd = None
    except BaseException:
        if created and dfd is not None:
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
        for p in (fd, dfd, cmd_r, cmd_w, rep_r, rep_w):
            close_quietly(p)
        raise
    return WriterProcess(name, child, cmd_w, rep_r)
