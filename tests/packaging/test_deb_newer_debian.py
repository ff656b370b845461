"""The .deb on today's Debian: piuparts (install, upgrade from the current version, purge)
in clean Debian 13 (trixie) and unstable chroots, and a zero-config freeze and thaw
through the VMware link against Debian 13's own MariaDB 11.8, in a Debian 13 root (see
tests/integration/chroot.py) with the package installed by apt.

These need network access to deb.debian.org (or QUIESCE_TEST_MIRROR): without it they
fail, saying so.
"""

import json
import os
import shutil

import pytest

from tests.integration import chroot

from .helpers import piuparts, run

MIRROR = chroot.MIRROR
NO_VALID_UNTIL = 'Acquire::Check-Valid-Until "false"'      # unstable's Release file may be past it


@pytest.mark.parametrize("suite", ["trixie", "unstable"])
def test_piuparts_install_upgrade_purge_on_newer_debian(debs, tmp_path, suite):
    base = str(tmp_path / ("%s.tar.gz" % suite))
    run(["mmdebstrap", "--quiet", "--variant=minbase", "--aptopt=" + NO_VALID_UNTIL, suite, base,
         "deb %s %s main" % (MIRROR, suite)], timeout=900)
    # Newer debconf leaves this directory; Debian 12's piuparts does not know it yet.
    text = piuparts(debs, tmp_path, suite, base, MIRROR, extra=("--ignore=/var/cache/debconf/tmp.ci/",))
    # The driver apt chose: Connector/Python where Debian packages it (unstable), else PyMySQL.
    driver = "python3-mysql.connector" if suite == "unstable" else "python3-pymysql"
    other = "python3-pymysql" if suite == "unstable" else "python3-mysql.connector"
    assert "Setting up %s " % driver in text and "Setting up %s " % other not in text, text[-6000:]


# In the root: the distribution's server as its package set it up (root logs in by
# unix_socket), the package installed with apt, the hook run as VMware Tools runs it.
ZERO_CONFIG = r"""
set -e
export DEBIAN_FRONTEND=noninteractive
# VMware Tools as its own installer leaves it: the package registers only where it is.
mkdir -p /etc/vmware-tools
apt-get install -y -q --no-install-recommends "$DEB" >"$OUT/apt.log" 2>&1
install -d -o mysql -g mysql /run/mysqld
/usr/sbin/mariadbd --user=mysql --skip-networking >"$OUT/mariadbd.log" 2>&1 &
server=$!
i=0; until [ -S /run/mysqld/mysqld.sock ] || [ $i -ge 300 ]; do sleep 0.1; i=$((i+1)); done
sleep 1
readlink /etc/vmware-tools/backupScripts.d/zz-quiesce >"$OUT/link"
rc=0; /etc/vmware-tools/backupScripts.d/zz-quiesce freeze >"$OUT/freeze.out" 2>&1 || rc=$?; echo $rc >"$OUT/freeze.rc"
cp /var/lib/quiesce/position.json "$OUT/position.json" || true
rc=0; /etc/vmware-tools/backupScripts.d/zz-quiesce thaw >"$OUT/thaw.out" 2>&1 || rc=$?; echo $rc >"$OUT/thaw.rc"
dpkg-query -W -f='${Version}' python3-pymysql python3-mysql.connector >"$OUT/drivers" 2>/dev/null || true
kill $server; wait $server || true
"""


def test_zero_config_freeze_and_thaw_on_debian_13(debs, tmp_path):
    image = chroot.Image("trixie", ("mariadb-server", "python3-pymysql", "python3-configargparse"))
    try:
        root = chroot.Root(image, "pkg-trixie")
    except chroot.ChrootError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        out = tmp_path / "out"          # under /tmp: the root sees it at the same path
        out.mkdir()
        deb = str(out / os.path.basename(debs["current"]["deb"]))
        shutil.copy(debs["current"]["deb"], deb)
        result = root.run(["env", "DEB=" + deb, "OUT=" + str(out), "sh", "-c", ZERO_CONFIG], timeout=600)
        said = result.stdout.decode("utf-8", "replace")
        files = {p.name: p.read_text(errors="replace") for p in out.iterdir() if p.is_file()}
        assert result.returncode == 0, (said, files.get("apt.log", "")[-3000:], files.get("mariadbd.log"))
        assert files["link"].strip() == "/usr/lib/quiesce/vmware-hook"
        assert files["freeze.rc"].strip() == "0", files["freeze.out"]
        assert files["thaw.rc"].strip() == "0", files["thaw.out"]
        position = json.loads(files["position.json"])
        assert position["flavour"] == "mariadb" and position["server_version"].startswith("11.8.")
        assert position["lock"] == "backup-stage" and position["binlog_file"] is None
    finally:
        root.remove()
