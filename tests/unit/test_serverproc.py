"""Which processes count as MySQL/MariaDB servers (quiesce/server/serverproc.py).

Real processes: a program renamed mysqld with prctl, and copies of sleep named mysqld,
owned by nobody or by root. The suite runs as root.
"""

import ctypes
import os
import pwd
import re
import shutil
import subprocess
import sys
import time

import pytest

from quiesce.server import serverproc
from .privileges import needs_root

NOBODY = pwd.getpwnam("nobody")
RENAME = "import ctypes, time; ctypes.CDLL(None).prctl(15, b'mysqld', 0, 0, 0); time.sleep(60)"


def _as_nobody(*command):
    return ["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid, "--clear-groups", *command]


def _named_mysqld(proc):
    for _ in range(200):    # up to 10 s for the interpreter to start on a busy machine
        try:
            with open("/proc/%d/comm" % proc.pid) as handle:
                if handle.read().strip() == "mysqld":
                    return proc.pid
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail("the process never took the name mysqld")


@pytest.fixture
def started():
    """start(command, **popen) -> pid, once the process is named mysqld; all are killed afterwards."""
    running = []

    def start(command, **popen):
        proc = subprocess.Popen(command, cwd="/", **popen)
        running.append(proc)
        return _named_mysqld(proc)
    yield start
    for proc in running:
        proc.kill()
        proc.wait()


@pytest.fixture
def sleep_named_mysqld(tmp_path):
    """copy(owner uid) -> path of a copy of sleep called mysqld, in a directory anyone can enter."""
    def copy(uid):
        directory = tmp_path / ("bin-%d" % uid)
        directory.mkdir()
        os.chmod(str(tmp_path), 0o755)
        os.chmod(str(directory), 0o755)
        path = str(directory / "mysqld")
        shutil.copy(shutil.which("sleep"), path)
        os.chown(path, uid, -1)
        os.chmod(path, 0o755)
        return path
    return copy


def _pids(found):
    return [p.pid for p in found]


@needs_root
def test_a_program_renamed_mysqld_is_not_a_server(started):
    pid = started(_as_nobody(sys.executable, "-c", RENAME))
    assert pid in _pids(serverproc.scan())
    assert pid not in _pids(serverproc.servers())


@needs_root
def test_a_copy_named_mysqld_that_a_user_owns_is_not_a_server(started, sleep_named_mysqld):
    pid = started(_as_nobody(sleep_named_mysqld(NOBODY.pw_uid), "60"))
    assert pid not in _pids(serverproc.servers())


@needs_root
def test_a_root_owned_server_binary_counts_whoever_runs_it(started, sleep_named_mysqld):
    pid = started(_as_nobody(sleep_named_mysqld(0), "60"))
    assert [(p.uid, p.genuine) for p in serverproc.servers() if p.pid == pid] == [(NOBODY.pw_uid, True)]


@needs_root
def test_a_server_binary_the_server_account_owns_counts(started, sleep_named_mysqld):
    # MySQL's binary tarballs are often chowned to mysql as a whole; that account is trusted anyway.
    mysql = pwd.getpwnam(serverproc.SERVER_ACCOUNT).pw_uid
    pid = started(_as_nobody(sleep_named_mysqld(mysql), "60"))
    assert pid in _pids(serverproc.servers())


def _sleep_rooted_in(root):
    """sleep as root/mysqld, with the shared libraries it needs under root."""
    program = shutil.which("sleep")
    shutil.copy(program, os.path.join(root, "mysqld"))
    os.chmod(os.path.join(root, "mysqld"), 0o755)
    listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    for path in re.findall(r"(/\S+) \(0x", listed):
        os.makedirs(root + os.path.dirname(path), exist_ok=True)
        shutil.copy(path, root + path)


@pytest.fixture
def rooted_elsewhere(tmp_path, started):
    """start(user_namespace) -> pid of a root-owned server binary (a copy of sleep named
    mysqld) under a root directory of its own."""
    root = tmp_path / "root"
    root.mkdir()
    _sleep_rooted_in(str(root))

    def start(user_namespace):
        def enter():
            here = os.open(str(root), os.O_RDONLY | os.O_DIRECTORY)
            if user_namespace:  # what an unprivileged user's unshare -Ur --root does
                # No user namespace from inside a chroot (the suite may run in one): first
                # out of it, to the root of this mount namespace (root may: chroot into a
                # subdirectory with the working directory left above it, then climb).
                os.chdir("/")
                os.chroot(str(root))
                for _ in range(64):
                    os.chdir("..")
                os.chroot(".")
                if ctypes.CDLL(None, use_errno=True).unshare(0x10000000 | 0x00020000) != 0:  # NEWUSER | NEWNS
                    raise OSError(ctypes.get_errno(), "unshare")
            os.fchdir(here)
            os.chroot(".")
        return started(["sleep", "60"], executable="/mysqld", preexec_fn=enter)
    return start


@needs_root
def test_a_server_that_root_put_under_another_root_is_contained(rooted_elsewhere):
    pid = rooted_elsewhere(user_namespace=False)
    assert [(p.genuine, p.contained) for p in serverproc.servers() if p.pid == pid] == [(True, True)]


@needs_root
def test_a_server_under_another_root_in_a_user_namespace_is_not_contained(rooted_elsewhere):
    # An unprivileged user can make such a root, in a user namespace of their own.
    pid = rooted_elsewhere(user_namespace=True)
    assert [p.contained for p in serverproc.scan() if p.pid == pid] == [False]


def test_our_own_processes_are_not_contained():
    assert serverproc.contained(os.getpid()) is False
