"""A real container: Debian's podman runs MariaDB 11.8 from the Debian 13 root the other
tests build (podman run --rootfs: no image, no registry), its datadir on a loop ext4 that
the host mounted and passed in as a volume, its socket in a second volume. quiesce runs on
the host: the server's pid (SO_PEERCRED) leads to its files through /proc/PID/root, the
probe on the volume releases at the volume's thaw, and check says the server runs in
another mount namespace.

podman runs in a mount namespace of its own arranged for crun (PODMAN_NAMESPACE), with
explicit rlimits, no cgroups for the container and no network: the socket is the way in.

Driver: PyMySQL only, as in test_containers.py.
"""

import os
import subprocess
import time
import types
import uuid

import pytest

from . import chroot, loopfs, servers
from .checks import assert_no_holder
from .runner import QuiesceEnv, wait_for
from .test_faults import _any_shared_mount
from .test_fsprobe_loop import _result

pytestmark = pytest.mark.skipif(loopfs.skip_reason() is not None, reason=str(loopfs.skip_reason()))

IMAGE = servers.IMAGES[servers.MARIADB_LTS]
# Explicit: podman's defaults are above what a sandbox without CAP_SYS_RESOURCE may set.
LIMITS = ("--cgroups=disabled", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


# podman in a mount namespace of its own, made for crun, which refuses two things here:
# the host's hybrid cgroup layout (and, in a chroot, a /sys/fs/cgroup that is no cgroup
# at all), so the namespace gets a cgroup v1 view of its own and the containers none
# (--cgroups=disabled); and, in a chroot, a "/" that is no mount point, whose propagation
# it sets, so the namespace re-roots itself on a bind mount of "/". Where no mount is
# shared (a chroot) the namespace keeps the propagation it has: nothing reaches the host.
PODMAN_NAMESPACE = r"""
set -e
if ! mountpoint -q /; then
  mkdir -p /run/quiesce-test-root
  mount --rbind / /run/quiesce-test-root
  exec chroot /run/quiesce-test-root sh -c "$0" "$0" "$@"
fi
if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
  if mountpoint -q /sys/fs/cgroup; then umount -R /sys/fs/cgroup; fi
  mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
  awk 'NR > 1 && $2 > 0 && $4 == 1 { s[$2] = ($2 in s) ? s[$2] "," $1 : $1 } END { for (h in s) print s[h] }' \
    /proc/cgroups | while read -r set; do
    mkdir "/sys/fs/cgroup/$set"
    mount -t cgroup -o "$set" cgroup "/sys/fs/cgroup/$set"
  done
fi
exec podman --cgroup-manager=cgroupfs "$@"
"""


def _podman(*args, timeout=120, check=True):
    if not os.path.exists("/usr/bin/podman"):
        raise loopfs.MissingTool("podman is not installed: run 'make deps' (as root)")
    propagation = "private" if _any_shared_mount() else "unchanged"
    proc = subprocess.run(["unshare", "--mount", "--propagation", propagation, "--", "sh", "-c", PODMAN_NAMESPACE,
                           PODMAN_NAMESPACE, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env={"PATH": loopfs.SYSTEM_PATH, "LANG": "C"})
    if check and proc.returncode != 0:
        raise AssertionError("podman %s: %s" % (" ".join(args[:2]), (proc.stdout + proc.stderr)[-2000:]))
    return proc


def _connect(socket_path):
    import pymysql
    return pymysql.connect(unix_socket=socket_path, user="root", connect_timeout=5, read_timeout=30)


class Container:
    """mariadbd in a podman container; its volumes on the host under `tmp_path`."""

    def __init__(self, request, tmp_path):
        root = chroot.root_for("podman", IMAGE)
        self.name = "quiesce-test-" + uuid.uuid4().hex[:12]
        self.volume = str(tmp_path / "volume")
        self.run_dir = str(tmp_path / "run")
        os.makedirs(self.volume)
        os.makedirs(self.run_dir)
        os.chmod(self.run_dir, 0o755)
        image = str(tmp_path / "volume.img")
        loopfs.make_image(image, 256, eager=True)
        self.dev = loopfs.attach(image)
        request.addfinalizer(self._unmount)
        loopfs.sh("mount", "-t", "ext4", self.dev, self.volume)
        self.socket = os.path.join(self.run_dir, "mysqld.sock")
        mounts = ("-v", self.volume + ":/var/lib/mysql", "-v", self.run_dir + ":/run/mysqld")
        # As the official images' entrypoint does: the socket directory is the server's.
        _podman("run", "--rm", *LIMITS, "--network", "none", *mounts, "--rootfs", root.path,
                "sh", "-c", 'chown mysql:mysql /run/mysqld && exec "$@"', "sh",
                "mariadb-install-db", "--user=mysql", "--datadir=/var/lib/mysql/data",
                "--auth-root-authentication-method=socket", "--skip-test-db", timeout=300)
        request.addfinalizer(self.stop)
        _podman("run", "-d", "--name", self.name, *LIMITS, "--network", "none", *mounts, "--rootfs", root.path,
                "mariadbd", "--user=mysql", "--datadir=/var/lib/mysql/data", "--socket=/run/mysqld/mysqld.sock",
                "--skip-networking", "--log-bin=/var/lib/mysql/data/binlog", "--server-id=1",
                "--innodb-buffer-pool-size=64M")
        wait_for(self._answers, 60, what="mariadbd in the container")
        self.pid = int(_podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip())

    def _answers(self):
        try:
            _connect(self.socket).close()
            return True
        except Exception:
            return False

    def sql(self, statement):
        conn = _connect(self.socket)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        finally:
            conn.close()

    def stop(self):
        _podman("rm", "-f", "-t", "10", self.name, check=False)

    def _unmount(self):
        loopfs.unmount(self.volume)
        loopfs.detach(self.dev)


@pytest.fixture
def container(request, tmp_path):
    box = Container(request, tmp_path)
    env = QuiesceEnv(types.SimpleNamespace(socket=box.socket), driver="pymysql")
    request.addfinalizer(env.cleanup)
    return box, env


def test_a_podman_container_is_reached_through_proc_and_released_at_its_volume_thaw(container):
    box, env = container
    box.sql("CREATE DATABASE IF NOT EXISTS app")
    box.sql("CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY) ENGINE=InnoDB")
    result = env.run("freeze", "--caller", "vmware-tools")
    assert result.rc == 0, result
    reach = "/proc/%d/root" % box.pid
    position = env.position()
    assert position["directories"][0] == reach + "/var/lib/mysql/data", position
    assert position["binlog_file"].startswith("binlog."), position
    # The probe is on the volume, as the server sees it and as the host mounted it.
    wait_for(lambda: any(n.startswith(".quiesce-fsprobe-") for n in os.listdir(box.volume)), 5,
             what="the probe file on the container's volume")
    loopfs.sh("fsfreeze", "-f", box.volume)
    try:
        time.sleep(0.5)
        assert _result(env) is None, "released while the volume was frozen"
    finally:
        loopfs.sh("fsfreeze", "-u", box.volume)
    wait_for(lambda: _result(env), 5, what="the release at the volume's thaw")
    assert _result(env)["outcome"] == "released-at-fs-thaw", _result(env)
    assert env.run("thaw", "--caller", "vmware-tools").rc == 0
    assert_no_holder(env)
    box.sql("INSERT INTO app.t VALUES (1)")  # writable again


def test_check_says_the_podman_server_runs_in_another_mount_namespace(container):
    box, env = container
    result = env.run("check")
    assert result.rc == 0, result
    text = result.stdout + result.stderr
    assert "(pid %d) runs in another mount namespace" % box.pid in text, text
    assert box.volume in text, text
