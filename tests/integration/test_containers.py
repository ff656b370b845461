"""A server in a mount namespace of its own, as in a container: its data volume (a loop
ext4) is mounted at its datadir inside the namespace only, while the same path on the host
holds a decoy copy of the datadir. quiesce runs on the host and reaches the server through
its socket.

The holder finds the server process (SO_PEERCRED) and reaches its files through
/proc/PID/root: the probe sees the volume's freeze and releases at its thaw, the drain and
the sync work on the volume, and check says where the volume is. Through a TCP proxy the
server process cannot be found, and check and freeze say what is then not guaranteed.

A real container runtime (Debian's podman, MariaDB 11.8 from a locally built root) is
test_podman.py; unshare gives the same mount namespace with the host's own MariaDB.

Driver: PyMySQL only; the server process is found from the connection's socket, which both
drivers hand over alike (db.Connection), and the rest does not involve the driver.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

from . import loopfs
from .checks import assert_clean, assert_frozen
from .mariadb import MariaDB, _build_template, copy_tree, free_port
from .runner import REPO, QuiesceEnv, wait_for
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


# ------------------------------------------------------------------ Kubernetes exec hooks

VELERO_EXAMPLE = os.path.join(REPO, "examples", "kubernetes", "mysql-velero.yaml")


def _duration(text):
    """A Velero hook timeout (Go duration: "2m", "90s")."""
    return float(text[:-1]) * {"s": 1, "m": 60}[text[-1]]


def _velero_hooks():
    with open(VELERO_EXAMPLE, encoding="utf-8") as handle:
        pod = yaml.safe_load(handle)
    notes = pod["metadata"]["annotations"]
    hooks = {}
    for phase in ("pre", "post"):
        prefix = phase + ".hook.backup.velero.io/"
        assert notes[prefix + "container"] == "quiesce"
        hooks[phase] = (json.loads(notes[prefix + "command"]), _duration(notes[prefix + "timeout"]))
    assert notes["pre.hook.backup.velero.io/on-error"] == "Fail"
    assert pod["spec"]["shareProcessNamespace"] is True
    return hooks


class Sidecar:
    """The quiesce container: its own mount, UTS and IPC namespaces, the pod's processes
    (here: the host's, where the server is), the server's volume mounted at the same
    place as in the server's container (the same loop device: one filesystem)."""

    def __init__(self, image, mnt):
        (line,) = loopfs.sh("losetup", "-j", image).stdout.splitlines()
        device = line.split(":", 1)[0]
        propagation = "private" if _any_shared_mount() else "unchanged"
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--ipc", "--propagation", propagation, "--", "sh", "-c",
             'mount -t ext4 "$0" "$1" && exec sleep 600', device, mnt],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self._mounted(mnt) or self.proc.poll() is not None, 10, what="the sidecar's volume mount")
        assert self.proc.poll() is None, self.proc.stderr.read()
        self.pid = self.proc.pid

    def _mounted(self, mnt):
        # Not os.path.ismount: its realpath() follows /proc/PID/root to a path that, in a
        # chroot, is outside it.
        inside = "/proc/%d/root%s" % (self.proc.pid, mnt)
        try:
            return os.lstat(inside).st_dev != os.lstat(inside + "/..").st_dev
        except OSError:
            return False

    def mount_namespace(self):
        return os.readlink("/proc/%d/ns/mnt" % self.pid)

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


def _exec(sidecar, argv, timeout, env):
    """As the kubelet's exec: into the container's namespaces, output read to its end; when
    it is over, whatever is left in the exec's session is killed (a runtime may do so)."""
    # --root, --wd: the container's own root, as an exec gets it (a chroot's, where the tests run in one).
    command = ["nsenter", "-t", str(sidecar.pid), "-m", "-u", "-i", "--root", "--wd", "--", *argv]
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("Velero would have failed the hook %s after %.0f s" % (argv, timeout))
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.returncode, out + err


def test_velero_exec_hooks_in_a_sidecar_hold_the_lock_between_the_two_execs(request, namespaced):
    server, env, image, mnt = namespaced
    hooks = _velero_hooks()
    sidecar = Sidecar(image, mnt)
    request.addfinalizer(sidecar.stop)
    launcher = [sys.executable, "-sB", "-m", "quiesce"]
    environ = env.env({"QUIESCE_CONFIG": env.conf})
    argv, timeout = hooks["pre"]
    assert argv[0] == "/usr/sbin/quiesce"
    rc, said = _exec(sidecar, launcher + argv[1:], timeout, environ)
    assert rc == 0, said
    # The exec is over and its session gone; the holder lives on in the sidecar.
    (holder,) = env.holder_pids()
    assert os.readlink("/proc/%d/ns/mnt" % holder) == sidecar.mount_namespace()
    assert_frozen(server)
    assert env.status()["callers"] == ["velero"], env.status()
    argv, timeout = hooks["post"]
    rc, said = _exec(sidecar, launcher + argv[1:], timeout, environ)
    assert rc == 0, said
    with open(env.history_file, encoding="utf-8") as handle:
        entry = json.loads(handle.read().splitlines()[-1])
    assert entry["agent"] == "velero" and entry["ok"], entry
    assert_clean(env, server)
