"""The fleet playbook (examples/ansible/quiesce.yml) run for real: Debian 12's ansible-core,
`ansible-playbook -c local`, in a fresh Debian 12 root (tests/integration/chroot.py) against
that root's own MariaDB, installing the .deb of the tree.

One server, three runs: the first makes the account, the files and the install and ends
with a passing check and an armed hook (a real freeze and thaw then work as the account);
the second changes nothing; the third, with a password the account does not have, fails
the play with quiesce's error and leaves the hook disarmed.

Needs root and network access to deb.debian.org (or QUIESCE_TEST_MIRROR) for the first
build of the root image, which is cached under /var/tmp/quiesce-chroots.
"""

import json
import os
import re
import shutil
import stat
import warnings

import pytest

from tests.integration import chroot

from .helpers import REPO, VMWARE_LINK, build_deb

pytestmark = pytest.mark.slow

IMAGE = chroot.Image("bookworm", ("ansible-core", "mariadb-server", "mariadb-client", "python3-apt",
                                  "python3-configargparse", "python3-pymysql"))
# A quote, a double quote, a backslash and a hash: each quoting layer (SQL, option file) is hit.
PASSWORD = "Fleet'pa\"ss\\w#rd"
WRONG_PASSWORD = "not-the-account's"
DISARM_FILE = "/etc/quiesce/conf.d/00-disarmed.conf"
SITE_FILE = "/etc/quiesce/conf.d/50-site.conf"
CLIENT_CNF = "/etc/quiesce/client.cnf"
RECAP = re.compile(r"^localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

START_SERVER = r"""
set -e
mkdir -p /etc/vmware-tools      # VMware Tools as its installer leaves it: the package links the hook
# What the drop-ins say whenever dpkg starts (the package's install among them).
echo "pre-invoke=cat /etc/quiesce/conf.d/*.conf >>$OUT/at-install 2>&1 || true" >/etc/dpkg/dpkg.cfg.d/quiesce-test
install -d -o mysql -g mysql /run/mysqld
/usr/sbin/mariadbd --user=mysql --skip-networking </dev/null >"$OUT/mariadbd.log" 2>&1 &
i=0; until [ -S /run/mysqld/mysqld.sock ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
mariadb -e 'SELECT 1' >/dev/null
"""

# While the lock is held: who holds it (the account from the defaults-file, not root).
FREEZE_AND_THAW = r"""
quiesce freeze || exit 11
mariadb -N -e "SELECT user FROM information_schema.processlist WHERE user NOT IN ('root', 'system user', 'event_scheduler')" >"$OUT/holders"
cp /var/lib/quiesce/position.json "$OUT/position.json"
quiesce thaw || exit 12
"$HOOK" freeze || exit 13
"$HOOK" thaw || exit 14
"""


@pytest.fixture(scope="module")
def deb(build_tools, tmp_path_factory):
    return build_deb(str(tmp_path_factory.mktemp("deb-ansible")))["deb"]


@pytest.fixture
def fleet_root(deb):
    try:
        made = chroot.Root(IMAGE, "ansible")
    except chroot.ChrootError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield made
    finally:
        try:
            made.run(["mariadb-admin", "shutdown"], timeout=120)
        finally:
            made.remove()


def in_root(root, script, timeout=600, **env):
    argv = ["env", "HOME=/root"] + ["%s=%s" % item for item in env.items()] + ["sh", "-c", script]
    result = root.run(argv, timeout=timeout)
    return result.returncode, result.stdout.decode("utf-8", "replace")


def playbook(root, out, name, extra_args=(), **variables):
    """ansible-playbook -c local in the root; (exit status, output)."""
    path = out / ("%s.json" % name)
    path.write_text(json.dumps(variables))
    argv = ["ansible-playbook", "-c", "local", "-i", "localhost,", str(out / "ansible" / "quiesce.yml"),
            "-e", "@" + str(path)] + list(extra_args)
    return in_root(root, " ".join("'%s'" % a for a in argv), ANSIBLE_NOCOLOR="1")


def recap(output):
    found = RECAP.findall(output)
    assert len(found) == 1, output[-3000:]
    return tuple(int(n) for n in found[0])


def privileges(line, account):
    """A GRANT statement's privileges (a set) and the level they are on."""
    match = re.match(r"GRANT (.*) ON (\S+) TO %s" % re.escape(account), line)
    assert match, line
    return frozenset(p.strip() for p in match.group(1).split(",")), match.group(2)


def granted(root):
    """The account's grants, as the server shows them."""
    rc, said = in_root(root, "mariadb -N -e \"SHOW GRANTS FOR 'quiesce'@'localhost'\"")
    assert rc == 0, said
    return [privileges(line, "`quiesce`@`localhost`") for line in said.splitlines()]


def readme_privileges():
    # The README parser lives with the account tests, whose server marks are registered by
    # tests/integration/conftest.py, not loaded here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        from tests.integration.test_accounts import readme_grants
    return [privileges(s, "'quiesce'@'localhost'") for s in readme_grants("mariadb", replica=False)
            if s.startswith("GRANT ")]


def test_fleet_playbook_installs_checks_and_fails_on_a_failing_check(deb, fleet_root, tmp_path):
    root = fleet_root
    out = tmp_path / "out"              # under /tmp: the root sees it at the same path
    out.mkdir()
    shutil.copytree(os.path.join(REPO, "examples", "ansible"), str(out / "ansible"))
    package = str(out / os.path.basename(deb))
    shutil.copy(deb, package)
    rc, said = in_root(root, START_SERVER, OUT=str(out))
    assert rc == 0, (said, (out / "mariadbd.log").read_text(errors="replace"))

    # First run: everything is made, check passes as the new account.
    rc, first = playbook(root, out, "first", quiesce_package=package, quiesce_db_password=PASSWORD)
    assert rc == 0, first[-6000:]
    assert recap(first)[1:] == (0, 0), first[-3000:]
    assert "privileges suffice" in first and " as quiesce " in first, first[-3000:]
    # The hook was disarmed when the package went in.
    assert "enabled = false" in (out / "at-install").read_text(), first[-3000:]
    assert PASSWORD not in first and json.dumps(PASSWORD)[1:-1] not in first
    assert granted(root) == readme_privileges()
    cnf = os.stat(root.path + CLIENT_CNF)
    assert (cnf.st_uid, cnf.st_gid, stat.S_IMODE(cnf.st_mode)) == (0, 0, 0o600)
    # Armed: no disarming drop-in left, the hook linked for VMware Tools.
    assert not os.path.lexists(root.path + DISARM_FILE)
    # The site's drop-in sorts after the disarming one: an enabled line there would arm a
    # host whose check failed.
    assert not re.search(r"(?m)^\s*enabled\s*=", open(root.path + SITE_FILE).read())
    assert os.readlink(root.path + VMWARE_LINK) == "/usr/lib/quiesce/vmware-hook"
    rc, said = in_root(root, FREEZE_AND_THAW, OUT=str(out), HOOK=VMWARE_LINK)
    assert rc == 0, said
    holders = (out / "holders").read_text().split()
    assert holders and set(holders) == {"quiesce"}, (holders, said)
    assert json.loads((out / "position.json").read_text())["lock"] == "backup-stage"

    # Second run, with the freeze-and-thaw cycle asked for: nothing changes.
    rc, second = playbook(root, out, "second", ["--tags", "all,cycle"], quiesce_package=package,
                          quiesce_db_password=PASSWORD)
    assert rc == 0, second[-6000:]
    assert recap(second) == (0, 0, 0), second[-3000:]
    assert "TASK [quiesce : Run quiesce check --cycle]" in second
    assert granted(root) == readme_privileges()

    # Third run: the credentials no longer match the account; the play fails saying why
    # and the hook is disarmed (snapshots go on without the lock rather than fail).
    rc, third = playbook(root, out, "third", quiesce_package=package, quiesce_db_password=WRONG_PASSWORD)
    assert rc != 0 and recap(third)[2] == 1, third[-6000:]
    failed = [line for line in third.splitlines() if "quiesce check exited" in line]
    assert len(failed) == 1 and "refused user 'quiesce': Access denied" in failed[0], third[-3000:]
    assert WRONG_PASSWORD not in third
    assert "enabled = false" in open(root.path + DISARM_FILE).read()
    assert granted(root) == readme_privileges()
    # Disarmed, the hook lets a snapshot go on: it exits 0 without taking the lock.
    rc, said = in_root(root, '"$HOOK" freeze && "$HOOK" thaw', HOOK=VMWARE_LINK)
    assert rc == 0, said
