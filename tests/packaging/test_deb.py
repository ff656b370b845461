"""The Debian package, proved as a distribution maintainer would.

Built with dpkg-buildpackage from a copy of the tree, checked by lintian (pedantic),
installed for real on this machine with apt (dependencies from Debian's archive),
exercised through the hook link against the distribution's own mariadb-server,
upgraded to a rebuilt newer version with an edited conffile, removed and purged;
with and without VMware Tools and the QEMU guest agent, installed before and after
quiesce. piuparts repeats install, upgrade and purge in a clean bookworm chroot.
Every test leaves the machine's package set, services and files as it found them.
"""

import json
import os
import shutil
import stat
import time

import pytest

from . import helpers
from .helpers import (CONFIG, HOOK, HOOK_RECORD, POSITION_FILE, QEMU_DIR_DEBIAN, QEMU_HOOK, RUNTIME_DIR,
                      STATE_DIR, VMWARE_DIR, VMWARE_HOOK, VMWARE_LINK, apt_get, clean_env, dpkg_status, run)

pytestmark = pytest.mark.slow

QEMU_LINK = QEMU_DIR_DEBIAN + "/zz-quiesce"
TEST_DB = "quiesce_pkgtest"
CONFOLD = ["-o", "Dpkg::Options::=--force-confold"]


def mode_of(path):
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def is_our_link(path):
    target = VMWARE_HOOK if path.startswith("/etc/vmware-tools/") else QEMU_HOOK
    return os.path.islink(path) and os.readlink(path) == target


def record():
    with open(HOOK_RECORD) as handle:
        return handle.read().split("\n")


def nothing_of_ours_left():
    left = [p for p in helpers.OURS_AFTER_PURGE if os.path.lexists(p)]
    assert not left, "left after purge: %s" % left


def hook(path, *args):
    """Run a hook exactly as vmtoolsd does: bash -c, cwd /, PATH and LANG only."""
    command = " ".join(['"%s"' % path] + list(args))
    return run(["bash", "-c", command], check=False, cwd="/", timeout=120,
               env={"PATH": helpers.SYSTEM_PATH, "LANG": "C.UTF-8"})


def insert_blocked():
    """True if a commit is held back now (lock wait times out after 2 s)."""
    proc = helpers.sql("SET SESSION lock_wait_timeout=2; INSERT INTO %s.t (v) VALUES (1)" % TEST_DB)
    if proc.returncode == 0:
        return False
    assert "Lock wait timeout" in proc.stdout, proc.stdout
    return True


def status_json():
    proc = run(["/usr/sbin/quiesce", "status", "--json"], check=False, env=clean_env())
    assert proc.returncode == 0, proc.stdout
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def freeze_thaw_through(path, freeze_args=("freeze",), thaw_args=("thaw",), thaw_path=None):
    """A real freeze and thaw of the system MariaDB through an installed executable."""
    freeze = hook(path, *freeze_args)
    assert freeze.returncode == 0, freeze.stdout
    try:
        assert status_json()["frozen"] is True
        with open(POSITION_FILE) as handle:
            position = json.load(handle)
        assert position["instance"] == "default" and position["flavour"] == "mariadb", position
        assert position["lock"] in ("backup-stage", "ftwrl")
        assert insert_blocked(), "a commit went through while frozen"
    finally:
        thaw = hook(thaw_path or path, *thaw_args)
    assert thaw.returncode == 0, thaw.stdout
    assert status_json()["frozen"] is False
    assert not insert_blocked()


@pytest.fixture
def test_database():
    with helpers.system_mariadb():
        helpers.sql("DROP DATABASE IF EXISTS %s; CREATE DATABASE %s; "
                    "CREATE TABLE %s.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB"
                    % (TEST_DB, TEST_DB, TEST_DB))
        try:
            yield
        finally:
            if os.path.exists("/usr/sbin/quiesce"):
                run(["/usr/sbin/quiesce", "thaw"], check=False, env=clean_env())
            helpers.sql("DROP DATABASE IF EXISTS %s" % TEST_DB)


@pytest.fixture
def clean_machine(debs):
    """No quiesce installed before; everything the test installs is purged after."""
    for agent in ("open-vm-tools", "qemu-guest-agent"):
        if dpkg_status(agent):
            pytest.skip("%s is installed on this machine: the agent tests need it absent" % agent)
    with helpers.machine_restored(), helpers.services_not_started():
        if dpkg_status("quiesce"):
            apt_get("purge", "quiesce")
        helpers.remove_stale_registrations()
        nothing_of_ours_left()
        try:
            yield
        finally:
            # A test's stand-in for VMware Tools installed without a package.
            if os.path.isdir("/etc/vmware-tools") and \
                    run(["dpkg-query", "-S", "/etc/vmware-tools"], check=False).returncode != 0:
                shutil.rmtree("/etc/vmware-tools")


def test_lintian_pedantic_clean(debs):
    """Source and binary package: no tag at all, overrides (with reasons) aside."""
    proc = run(["lintian", "--pedantic", "--display-info", "--display-experimental",
                "--fail-on", "error,warning,info,pedantic,experimental", debs["current"]["changes"]],
               check=False, timeout=600)
    tags = [line for line in proc.stdout.splitlines() if not line.startswith("running with root")]
    assert proc.returncode == 0 and not tags, proc.stdout


def test_package_contents(debs, tmp_path):
    deb = debs["current"]["deb"]
    fields = {name: run(["dpkg-deb", "-f", deb, name]).stdout.strip()
              for name in ("Architecture", "Depends", "Recommends", "Suggests")}
    assert fields["Architecture"] == "all"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert "python3-configargparse" in depends
    # Connector/Python where a working one is packaged (Debian unstable); elsewhere PyMySQL:
    # Debian 12 and 13 have no mysql.connector, Ubuntu's is 8.0.15, and releases before
    # 8.0.30 break on current Pythons.
    assert "python3-mysql.connector (>= 8.0.30) | python3-pymysql" in depends
    assert any(d.split()[0] in ("python3", "python3:any") for d in depends), depends
    assert "mariadb-server" not in fields["Depends"] + fields["Recommends"]

    control = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    assert control == [CONFIG]
    triggers = run(["dpkg-deb", "-I", deb, "triggers"]).stdout
    assert "interest-noawait /etc/vmware-tools" in triggers

    listing = {}
    for line in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
        perms, owner, _size, _date, _time, path = line.split(None, 5)
        listing[path.split(" -> ")[0].lstrip(".").rstrip("/") or "/"] = (perms, owner)
    assert listing[CONFIG] == ("-rw-------", "root/root")
    # Made by postinst: a shipped directory that keeps files until purge makes every
    # `apt remove` warn that it is not empty.
    assert STATE_DIR not in listing
    for exe in ("/usr/sbin/quiesce", HOOK, VMWARE_HOOK, QEMU_HOOK, "/usr/lib/quiesce/freeze",
                "/usr/lib/quiesce/thaw", "/usr/lib/quiesce/register-hooks"):
        assert listing[exe] == ("-rwxr-xr-x", "root/root"), exe
    for module in ("__init__.py", "cli.py", "hooks.py"):
        assert "/usr/lib/quiesce/quiesce/" + module in listing
    assert "/usr/lib/tmpfiles.d/quiesce.conf" in listing
    assert "/usr/share/man/man8/quiesce.8.gz" in listing
    assert "/usr/share/man/man5/quiesce.conf.5.gz" in listing
    assert listing[helpers.COMPLETION] == ("-rw-r--r--", "root/root")
    # Every example (hooks that schedulers and agents run among them), scripts still runnable.
    for path, executable in helpers.example_files():
        if executable:
            assert listing.get(path) == ("-rwxr-xr-x", "root/root"), path
        else:
            assert path in listing or path + ".gz" in listing, path
    script = tmp_path / "quiesce.bash"
    run(["sh", "-c", "dpkg-deb --fsys-tarfile '%s' | tar -xOf - '.%s' > '%s'" % (deb, helpers.COMPLETION, script)])
    helpers.assert_completion_works(str(script))
    # Hook links are made by the maintainer scripts, never shipped; nothing in /run or
    # in the system's Python path.
    assert not [p for p in listing if p.startswith(("/etc/vmware-tools", "/etc/qemu", "/run",
                                                    "/usr/lib/python3"))]
    for exe in ("./usr/sbin/quiesce", "./usr/lib/quiesce/hook", "./usr/lib/quiesce/vmware-hook"):
        first = run(["sh", "-c", "dpkg-deb --fsys-tarfile '%s' | tar -xOf - '%s' | head -n1" % (deb, exe)]).stdout
        assert first.strip() == "#!/usr/bin/python3 -sB", (exe, first)


def test_install_freeze_upgrade_remove_purge(debs, clean_machine, test_database):
    current, newer = debs["current"], debs["newer"]
    # VMware Tools installed by its own installer (no package): its directory exists.
    os.mkdir("/etc/vmware-tools")

    # Install with apt: the dependencies come from Debian's archive alone.
    out = helpers.apt_install(current["deb"]).stdout
    assert dpkg_status("quiesce") == "installed", out
    assert mode_of(CONFIG) == (0o600, 0, 0)
    assert mode_of(STATE_DIR) == (0o700, 0, 0)
    if helpers.have("systemd-tmpfiles"):
        assert mode_of(RUNTIME_DIR) == (0o700, 0, 0)
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "quiesce"]).stdout.split()
    assert CONFIG in conffiles
    assert is_our_link(VMWARE_LINK)
    assert "registered hook %s" % VMWARE_LINK in out
    assert "link " + VMWARE_LINK in record()
    assert run(["/usr/sbin/quiesce", "--version"], env=clean_env()).stdout.strip().endswith(
        helpers.module_version())
    # Every module of every layer is byte-compiled at install (py3compile, from dh_python3).
    assert helpers.modules_without_bytecode("/usr/lib/quiesce/quiesce") == []

    # A real freeze and thaw through the registered link, zero configuration.
    freeze_thaw_through(VMWARE_LINK)
    # freezeFail in another case, with VMware's extra (empty) argument: a thaw, exit 0.
    assert hook(VMWARE_LINK, "FREEZEFAIL", '""').returncode == 0

    # The administrator edits the config; the upgrade's conffile changed too: the edit
    # stays (confold, as unattended upgrades do) and the new version lands beside it.
    with open(CONFIG) as handle:
        text = handle.read()
    assert "\nlock-timeout = 300\n" in text
    with open(CONFIG, "w") as handle:
        handle.write(text.replace("\nlock-timeout = 300\n", "\nlock-timeout = 120\n"))
    out = apt_get(*CONFOLD, "install", newer["deb"]).stdout
    assert run(["dpkg-query", "-W", "-f=${Version}", "quiesce"]).stdout == newer["version"], out
    with open(CONFIG) as handle:
        assert "\nlock-timeout = 120\n" in handle.read()
    assert mode_of(CONFIG) == (0o600, 0, 0)
    assert os.path.exists(CONFIG + ".dpkg-dist")
    assert is_our_link(VMWARE_LINK)
    # The standalone executables of single-script agents (no arguments).
    freeze_thaw_through("/usr/lib/quiesce/freeze", freeze_args=(), thaw_args=(),
                        thaw_path="/usr/lib/quiesce/thaw")

    # An administrator removes the link on purpose: neither a reinstall nor a trigger
    # (VMware Tools being installed) brings it back.
    os.unlink(VMWARE_LINK)
    out = apt_get(*CONFOLD, "install", "--reinstall", newer["deb"]).stdout
    assert not os.path.lexists(VMWARE_LINK), out
    assert "removed by the administrator" in out
    run(["dpkg-trigger", "--no-await", "/etc/vmware-tools"])
    run(["dpkg", "--triggers-only", "--pending"])
    assert dpkg_status("quiesce") == "installed"
    assert not os.path.lexists(VMWARE_LINK)

    # A file of our name that is not our link is never replaced nor removed.
    with open(VMWARE_LINK, "w") as handle:
        handle.write("#!/bin/sh\nexit 0\n")
    apt_get(*CONFOLD, "install", "--reinstall", newer["deb"])
    with open(VMWARE_LINK) as handle:
        assert handle.read() == "#!/bin/sh\nexit 0\n"
    os.unlink(VMWARE_LINK)
    os.symlink(HOOK, VMWARE_LINK)  # registered again by hand, as quiesce(8) says

    # Opt-in agents, registered by the administrator: the files work as the agents run them
    # (Nutanix execs them as root) and removing the package takes them away again.
    nutanix = ("/usr/local/sbin/pre_freeze", "/usr/local/sbin/post_thaw")
    for agent in ("nutanix", "gce"):
        run(["/usr/sbin/quiesce", "register", agent], env=clean_env())
    assert all(mode_of(path) == (0o700, 0, 0) for path in nutanix)
    assert mode_of("/etc/google/snapshots/pre.sh") == (0o700, 0, 0)
    freeze_thaw_through(nutanix[0], freeze_args=(), thaw_args=(), thaw_path=nutanix[1])

    # Remove: our link, the files 'register' made and the directories we created go, the
    # conffile and the state (position file, hook record) stay, and dpkg has nothing to
    # complain about.
    out = apt_get("remove", "quiesce").stdout
    assert not any(os.path.lexists(path) for path in nutanix), out
    assert not os.path.lexists("/etc/google"), out
    assert dpkg_status("quiesce") == "config-files"
    assert "not empty" not in out and "warning" not in out.lower(), out
    assert not os.path.lexists(VMWARE_LINK)
    assert os.listdir("/etc/vmware-tools") == []
    assert os.path.exists(CONFIG) and os.path.exists(POSITION_FILE)
    assert not os.path.exists("/usr/sbin/quiesce")

    # Purge: nothing of ours is left.
    out = apt_get("purge", "quiesce").stdout
    assert dpkg_status("quiesce") is None
    assert "warning" not in out.lower(), out
    os.rmdir("/etc/vmware-tools")
    nothing_of_ours_left()


# The last release before several callers were counted (0.1.0): its holder speaks the
# older protocol and writes the older result.
PREVIOUS_RELEASE = "8dfbcf1"


def test_upgrade_while_frozen_the_new_thaw_releases_the_old_holder(debs, clean_machine, test_database, tmp_path):
    """An unattended upgrade can land while a snapshot holds the lock: the old holder keeps
    running from memory, and the new package's thaw must release it and say truthfully
    how the lock ended."""
    old = helpers.build_deb_of_commit(str(tmp_path / "previous"), PREVIOUS_RELEASE)
    assert old["version"] != debs["current"]["version"]
    helpers.apt_install(old["deb"])
    freeze = run(["/usr/sbin/quiesce", "freeze"], check=False, env=clean_env())
    assert freeze.returncode == 0, freeze.stdout
    holder = status_json()["holder_pid"]
    try:
        assert insert_blocked(), "not frozen by the previous release"
        out = apt_get(*CONFOLD, "install", debs["current"]["deb"]).stdout
        assert run(["dpkg-query", "-W", "-f=${Version}", "quiesce"]).stdout == debs["current"]["version"], out
        # The upgrade itself leaves the lock alone: the snapshot may still be being taken.
        assert insert_blocked(), "the upgrade released the lock"
    finally:
        thaw = run(["/usr/sbin/quiesce", "thaw"], check=False, env=clean_env())
    assert thaw.returncode == 0, thaw.stdout
    assert not insert_blocked()
    # The old holder records its result after the release, with its own code in memory.
    deadline = time.monotonic() + 30
    while os.path.exists("/proc/%d" % holder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists("/proc/%d" % holder), "the old holder is still running 30 s after thaw"
    status = status_json()
    # The old holder cannot record its result with the new package's modules on disk, so
    # the new thaw records the hold as lost: pessimistic, never a false "consistent".
    assert status["frozen"] is False and status["last_result"]["outcome"] in ("released", "lost"), status
    apt_get("purge", "quiesce")


def test_snapshot_agents_installed_after_and_before(debs, clean_machine, test_database):
    current = debs["current"]
    qemu_log = "/var/log/qga-fsfreeze-hook.log"
    qemu_log_existed = os.path.exists(qemu_log)
    agents = ("open-vm-tools", "qemu-guest-agent")
    try:
        # quiesce first: no agent, nothing made in /etc for one.
        helpers.apt_install(current["deb"])
        assert not os.path.exists("/etc/vmware-tools") and not os.path.exists("/etc/qemu")
        # Then VMware Tools and the QEMU guest agent: the file trigger registers the
        # hook with each, pointing at the agent's own entry file.
        out = helpers.apt_install("--no-install-recommends", *agents).stdout
        assert dpkg_status("quiesce") == "installed", out  # trigger processed
        assert is_our_link(VMWARE_LINK), out
        assert is_our_link(QEMU_LINK), out
        assert {"link " + QEMU_LINK, "link " + VMWARE_LINK, "dir " + VMWARE_DIR} <= set(record())
        # The guest agent's own hook script runs ours (freeze, then thaw).
        freeze_thaw_through("/etc/qemu/fsfreeze-hook")

        # The agents purged while quiesce stays: our links no longer keep their
        # directories on the machine, unowned.
        out = apt_get("purge", *agents).stdout
        assert dpkg_status("quiesce") == "installed", out
        assert not os.path.lexists("/etc/vmware-tools") and not os.path.lexists("/etc/qemu"), out
        assert not [line for line in record() if line.startswith("link ")]
        # Installed again: registered again.
        helpers.apt_install("--no-install-recommends", *agents)
        assert is_our_link(VMWARE_LINK) and is_our_link(QEMU_LINK)

        # Removing quiesce leaves the agents' files and directories alone.
        out = apt_get("remove", "quiesce").stdout
        assert "warning" not in out.lower(), out
        assert not os.path.lexists(VMWARE_LINK) and not os.path.lexists(QEMU_LINK)
        assert not os.path.exists(VMWARE_DIR)
        assert os.path.isfile("/etc/vmware-tools/tools.conf")
        assert os.path.isdir(QEMU_DIR_DEBIAN)  # shipped by qemu-guest-agent
        apt_get("purge", "quiesce")

        # Agents first, then quiesce.
        helpers.apt_install(current["deb"])
        assert is_our_link(VMWARE_LINK) and is_our_link(QEMU_LINK)
        assert "dir /etc/vmware-tools" not in record()  # VMware Tools' directory, not ours
        assert "dir " + VMWARE_DIR in record()
        freeze_thaw_through(VMWARE_LINK)

        apt_get("purge", "quiesce")
        assert dpkg_status("quiesce") is None
        assert not os.path.lexists(VMWARE_LINK) and not os.path.lexists(QEMU_LINK)
        assert not os.path.exists(VMWARE_DIR)
        assert os.path.isfile("/etc/vmware-tools/tools.conf")
        assert os.path.isdir(QEMU_DIR_DEBIAN) and not os.listdir(QEMU_DIR_DEBIAN)
        for path in ("/etc/quiesce", STATE_DIR, "/usr/lib/quiesce"):
            assert not os.path.exists(path), path
    finally:
        if not qemu_log_existed and os.path.exists(qemu_log):
            os.unlink(qemu_log)


def test_piuparts_install_upgrade_purge(debs, tmp_path):
    """Install, upgrade from the current version and purge in a clean bookworm chroot."""
    main, security = helpers.apt_mirrors()
    if not main:
        pytest.skip("apt on this machine has no bookworm main source for the chroot")
    base = str(tmp_path / "bookworm.tar.gz")
    sources = ["deb %s bookworm main" % main]
    if security:
        sources.append("deb %s bookworm-security main" % security)
    run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", base] + sources, timeout=900)

    helpers.piuparts(debs, tmp_path, "bookworm", base, main)
