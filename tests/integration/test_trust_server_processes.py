"""A process a user names mysqld is not a running server: with no socket, freeze has nothing
to quiesce and succeeds (a failed freeze would cost the snapshot).

The freeze runs in a PID namespace of its own (other servers on the machine, and other tests'
servers, are invisible there) together with the impostor, run by nobody.
"""

import os
import pwd
import sys

import pytest

from .checks import assert_no_holder, assert_one_line
from .test_faults import _private_pid_namespace

NOBODY = pwd.getpwnam("nobody")
RENAME = "import ctypes, time; ctypes.CDLL(None).prctl(15, b'mysqld', 0, 0, 0); time.sleep(60)"
NO_IMPOSTOR = 99
# Start the impostor, wait (at most 10 s) until it carries the name, then run quiesce.
SCRIPT = ("setpriv --reuid=%d --regid=%d --clear-groups %s -c \"$0\" & "
          "for i in $(seq 200); do grep -qx mysqld /proc/[0-9]*/comm 2>/dev/null && break; sleep 0.05; done; "
          "grep -qx mysqld /proc/[0-9]*/comm 2>/dev/null || exit %d; \"$@\""
          % (NOBODY.pw_uid, NOBODY.pw_gid, sys.executable, NO_IMPOSTOR))


def _namespace_prefix():
    prefix = _private_pid_namespace()   # also in a chroot
    if prefix is None:
        pytest.fail("this test needs root and unshare --pid (the other servers must be hidden)")
    return prefix + ["/bin/sh", "-c", SCRIPT, RENAME]


def test_a_process_renamed_mysqld_is_no_server_and_freeze_succeeds(mariadb, quiesce_env):
    env = quiesce_env
    mariadb.kill()
    if os.path.exists(mariadb.socket):
        os.unlink(mariadb.socket)
    result = env.run("freeze", prefix=_namespace_prefix())
    assert result.rc == 0, result
    line = assert_one_line(result)
    assert "no mysql/mariadb server is running" in line.lower() and "freeze succeeds" in line, line
    assert_no_holder(env)
    assert env.status()["frozen"] is False
