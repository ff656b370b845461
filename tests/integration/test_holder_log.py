"""The holder sends nothing to the system log while it holds the lock: journald's files may
sit on a frozen filesystem, and a blocking send would hang the holder past its deadline.
What it logged meanwhile goes out at the release.

The holder runs in a private mount namespace (unshare -m) whose system-log sockets
(/dev/log where the host has one, /run/systemd/journal/dev-log) are a datagram socket
this test binds and reads.
"""

import os
import socket
import time

from .checks import assert_clean, assert_frozen
from .test_faults import _any_shared_mount

SCRIPT = """set -e
log=$1; shift
if [ -e /dev/log ]; then mount --bind "$log" /dev/log; fi
mount -t tmpfs quiesce-test /run
mkdir -p /run/systemd/journal
touch /run/systemd/journal/dev-log
mount --bind "$log" /run/systemd/journal/dev-log
exec "$@"
"""


def _drain(sock):
    lines = []
    while True:
        try:
            lines.append(sock.recv(65536).decode("utf-8", "replace"))
        except BlockingIOError:
            return lines


def test_nothing_reaches_the_system_log_between_the_lock_and_the_release(mariadb, quiesce_env):
    env = quiesce_env
    path = os.path.join(env.root, "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.setblocking(False)
        # In a chroot "/" is no mount point and cannot be made private; where no mount is
        # shared, the mounts made in the new namespace stay there anyway.
        propagation = "private" if _any_shared_mount() else "unchanged"
        prefix = ["unshare", "--mount", "--propagation", propagation, "--", "/bin/sh", "-c", SCRIPT, "sh", path]
        frozen = env.run("freeze", "--caller", "veeam", prefix=prefix)
        assert frozen.rc == 0, frozen
        assert_frozen(mariadb)
        time.sleep(0.5)             # anything the holder sent would be here by now
        before = _drain(sock)
        assert before, "the test's log socket got nothing: the namespace did not take effect"
        # Before the lock: the freeze's own lines. Not the holder's "locked ..." line.
        assert not [line for line in before if " locked " in line], before
        assert env.run("thaw", "--caller", "veeam").rc == 0
        assert_clean(env, mariadb)
        after = _drain(sock)
        assert [line for line in after if " locked " in line], after
    finally:
        sock.close()
