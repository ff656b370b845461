"""A server in a mount namespace of its own, as in a container: its data volume (a loop
ext4) is mounted at its datadir inside the namespace only, while the same path on the host
holds a decoy copy of the datadir. quiesce runs on the host and reaches the server through
its socket.

The holder finds the server process (SO_PEERCRED) and reaches its files through
/proc/PID/root: the probe sees the volume's freeze and releases at its thaw, the drain and
the sync work on the volume, and check says where the volume is. Through a TCP proxy the
server process cannot be found, and check and freeze say what is then not guaranteed.

Podman is not used: it cannot run a container here without pulling an image, and an
image built locally would still need its storage driver and network set up; unshare gives
the same mount namespace, which is what matters to quiesce.

Driver: PyMySQL only; the server process is found from the connection's socket, which both
drivers hand over alike (db.Connection), and the rest does not involve the driver.
"""

import os
import socket
import threading
import time

import pytest

from . import loopfs
from .checks import assert_clean
from .mariadb import MariaDB, _build_template, copy_tree, free_port
from .runner import QuiesceEnv, wait_for
from .test_faults import _any_shared_mount
from .test_fsprobe_loop import _result

pytestmark = pytest.mark.skipif(loopfs.skip_reason() is not None, reason=str(loopfs.skip_reason()))


class NamespacedMariaDB(MariaDB):
    """Started by unshare in a private mount namespace that mounts `image` at the datadir's
    parent first: the host sees the (decoy) directory underneath, the server its volume."""

    image = ""

    def server_command(self, args):
        mount = 'mount -t ext4 -o loop "$0" "$1" && shift && exec "$@"'
        # In a chroot "/" is no mount point and cannot be made private; where no mount is
        # shared, leaving the propagation as it is keeps the volume's mount inside too.
        propagation = "private" if _any_shared_mount() else "unchanged"
        return ["unshare", "--mount", "--propagation", propagation, "--", "sh", "-c", mount, self.image,
                os.path.dirname(self.datadir), *super().server_command(args)]


@pytest.fixture
def namespaced(request, tmp_path):
    """The server, its volume's image and the mount point it is mounted at inside."""
    mnt = str(tmp_path / "volume")
    image = str(tmp_path / "volume.img")
    os.makedirs(mnt)
    loopfs.make_image(image, 256, eager=True)
    server = NamespacedMariaDB(name="inns", datadir=os.path.join(mnt, "data"))
    request.addfinalizer(server.cleanup)
    # The volume gets the real datadir; the host's directory under it gets the decoy that
    # start() copies (the same template: what differs is which files are the server's).
    staging = str(tmp_path / "staging")
    os.makedirs(staging)
    dev = loopfs.attach(image)
    try:
        loopfs.sh("mount", "-t", "ext4", dev, staging)
        try:
            copy_tree(os.path.join(_build_template(server), "data"), os.path.join(staging, "data"))
        finally:
            loopfs.unmount(staging)
    finally:
        loopfs.detach(dev)
    server.image = image
    server.start()
    server.create_probe_tables()
    env = QuiesceEnv(server, driver="pymysql")
    request.addfinalizer(env.cleanup)
    return server, env, image, mnt


def _in_namespace(server, *cmd):
    # --root: the server's root too (a chroot's, where the tests run in one).
    return loopfs.sh("nsenter", "-t", str(server.pid), "-m", "--root", *cmd)


def test_the_server_is_found_and_its_volume_probed_through_its_own_mounts(namespaced):
    server, env, _image, mnt = namespaced
    result = env.run("freeze", "--caller", "vmware-tools")
    assert result.rc == 0, result
    position = env.position()
    reach = "/proc/%d/root" % server.pid
    assert position["directories"] and all(d.startswith(reach) for d in position["directories"]), position
    assert position["directories"][0] == reach + server.datadir
    wait_for(lambda: any(n.startswith(".quiesce-fsprobe-") for n in os.listdir(reach + mnt)), 5,
             what="the probe file on the server's volume")
    assert not any(n.startswith(".quiesce-fsprobe-") for n in os.listdir(mnt)), "probing the host's directory"
    _in_namespace(server, "fsfreeze", "-f", mnt)
    try:
        time.sleep(0.5)
        assert _result(env) is None, "released while the volume was frozen"
    finally:
        _in_namespace(server, "fsfreeze", "-u", mnt)
    wait_for(lambda: _result(env), 5, what="the release at the volume's thaw")
    assert _result(env)["outcome"] == "released-at-fs-thaw", _result(env)
    assert env.run("thaw", "--caller", "vmware-tools").rc == 0
    assert_clean(env, server)


def test_check_says_where_the_volume_of_a_namespaced_server_is(namespaced):
    server, env, image, _mnt = namespaced
    result = env.run("check")
    assert result.rc == 0, result
    text = result.stdout + result.stderr
    assert "(pid %d) runs in another mount namespace" % server.pid in text, text
    assert "mounted nowhere on this host" in text and image in text, text


class Proxy:
    """A TCP port on 127.0.0.1 forwarding to a unix socket: the server's process is then
    not the one at the other end of quiesce's connection."""

    def __init__(self, target):
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = free_port()
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(8)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.listener.close()


def test_through_a_tcp_proxy_check_and_freeze_say_what_is_not_guaranteed(request, namespaced):
    server, env, _image, _mnt = namespaced
    proxy = Proxy(server.socket)
    request.addfinalizer(proxy.close)
    server.sql("CREATE USER IF NOT EXISTS 'viaproxy'@'localhost' IDENTIFIED BY 'proxy-secret'")
    server.sql("GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO 'viaproxy'@'localhost'")
    env.write_config(socket=None, host="127.0.0.1", port=proxy.port, user="viaproxy", password="proxy-secret",
                     allow_unverified_host="true")
    checked = env.run("check")
    text = checked.stdout + checked.stderr
    assert "cannot be found here" in text and "not synced under the lock" in text, text
    frozen = env.run("freeze", "--caller", "vmware-tools")
    assert frozen.rc == 0, frozen
    assert "cannot be found here" in frozen.stderr, frozen
    assert env.run("thaw", "--caller", "vmware-tools").rc == 0
    assert_clean(env, server)
