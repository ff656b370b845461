"""The RPM, proved on this Debian machine with rpm's own tools.

rpmbuild from a tarball of the tree; rpmlint with the project's settings (every accepted
finding has its reason in rpm/rpmlint.toml); install, upgrade, triggers and erase with
`rpm --root` in a scratch root, where the scriptlets really run (chrooted, with busybox
as the shell and core utilities); and dependency resolution by dnf, offline, against
local repositories of stand-in packages shaped like RHEL 9 + EPEL and like Fedora.
"""

import os
import re
import shutil
import stat

import pytest

from . import helpers
from .helpers import CONFIG, HOOK, HOOK_RECORD, QEMU_DIR_RHEL, REPO, STATE_DIR, VMWARE_DIR, VMWARE_LINK, run

pytestmark = pytest.mark.slow

QEMU_LINK = QEMU_DIR_RHEL + "/zz-quiesce"


def rpm_q(dbpath, *args):
    # A database of its own: rpm would otherwise create root's ~/.rpmdb (Debian's default).
    return run(["rpm", "--dbpath", str(dbpath), "-qp"] + list(args)).stdout


def test_rpmlint_clean(rpms, tmp_path):
    config = os.path.join(REPO, "rpm", "rpmlint.toml")
    current = rpms["current"]
    # HOME: Debian's rpm keeps its (here empty) database in ~/.rpmdb.
    proc = run(["rpmlint", "-c", config, current["rpm"], current["srpm"], current["spec"]],
               check=False, timeout=300, env=helpers.clean_env(HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout
    assert re.search(r"\b0 errors, 0 warnings\b", proc.stdout), proc.stdout


def test_package_metadata(rpms, tmp_path):
    rpm = rpms["current"]["rpm"]
    db = tmp_path / "rpmdb"
    assert rpm.endswith(".noarch.rpm")
    requires = [line.strip() for line in rpm_q(db, "--requires", rpm).splitlines()]
    assert "python3-configargparse" in requires
    assert "(python3-PyMySQL or mysql-connector-python3)" in requires
    assert "/usr/bin/python3" in requires or "python3" in requires
    # Nothing that ties the package to one distribution's Python, no database server.
    assert not [r for r in requires if r.startswith("python(abi)") or "mariadb" in r or "mysql-server" in r]

    files = {}
    fmt = "[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]"
    for line in rpm_q(db, "--qf", fmt, rpm).splitlines():
        parts = line.split()
        flags, perms, owner, path = (parts if len(parts) == 4 else [""] + parts)
        files[path] = (flags, perms, owner)
    assert files[CONFIG] == ("cn", "-rw-------", "root:root")  # %config(noreplace)
    assert files[STATE_DIR][1:] == ("drwx------", "root:root")
    assert files["/run/quiesce"][1:] == ("drwx------", "root:root")
    for exe in ("/usr/sbin/quiesce", "/usr/lib/quiesce/hook", "/usr/lib/quiesce/freeze",
                "/usr/lib/quiesce/thaw", "/usr/lib/quiesce/register-hooks"):
        assert files[exe][1] == "-rwxr-xr-x", exe
    for module in ("__init__.py", "cli.py", "hooks.py"):
        assert "/usr/lib/quiesce/quiesce/" + module in files
    assert "/usr/lib/tmpfiles.d/quiesce.conf" in files
    assert "/usr/share/man/man8/quiesce.8.gz" in files
    assert "/usr/share/man/man5/quiesce.conf.5.gz" in files
    assert not [p for p in files if p.endswith(".pyc") or "/site-packages/" in p
                or p.startswith(("/etc/vmware-tools", "/etc/qemu"))]

    triggers = rpm_q(db, "--triggers", rpm)
    assert "triggerin scriptlet (using /bin/sh) -- open-vm-tools" in triggers
    assert "triggerin scriptlet (using /bin/sh) -- qemu-guest-agent" in triggers


class ScratchRoot:
    """An empty root with busybox, in which rpm --root runs the scriptlets chrooted."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(os.path.join(self.path, "bin"))
        os.makedirs(os.path.join(self.path, "dev"))
        shutil.copy2("/bin/busybox", os.path.join(self.path, "bin", "busybox"))
        run(["chroot", self.path, "/bin/busybox", "--install", "-s", "/bin"])
        os.mknod(os.path.join(self.path, "dev", "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        self.rpm("--initdb")

    def rpm(self, *args, check=True):
        return run(["rpm", "--root", self.path, "--dbpath", "/var/lib/rpm"] + list(args), check=check)

    def install(self, *packages, upgrade=False, extra=()):
        mode = "-U" if upgrade else "-i"
        return self.rpm("--force-debian", mode, "--nodeps", *extra, *packages).stdout

    def erase(self, name):
        return self.rpm("--force-debian", "-e", "--nodeps", name).stdout

    def __call__(self, path):
        return os.path.join(self.path, path.lstrip("/"))

    def is_our_link(self, path):
        return os.path.islink(self(path)) and os.readlink(self(path)) == HOOK

    def record(self):
        with open(self(HOOK_RECORD)) as handle:
            return handle.read().split("\n")


@pytest.fixture
def stubs(build_tools, tmp_path):
    return helpers.build_stub_rpms(str(tmp_path), {
        # Real agents ship these directories (and files in them).
        "open-vm-tools": {"dirs": "/etc/vmware-tools/vgauth", "files": "/etc/vmware-tools"},
        "qemu-guest-agent": {"dirs": "/etc/qemu-ga/fsfreeze-hook.d", "files": "/etc/qemu-ga"},
        "python3": {"provides": "/usr/bin/python3"},
        "bash": {"provides": "/bin/sh"},
        "python3-configargparse": {},
        "python3-PyMySQL": {},
        "mysql-connector-python3": {},
    })


def test_scratch_root_install_triggers_upgrade_erase(rpms, stubs, tmp_path):
    root = ScratchRoot(tmp_path / "root")
    current, newer = rpms["current"]["rpm"], rpms["newer"]["rpm"]

    out = root.install(current)
    assert root.is_our_link(VMWARE_LINK), out
    assert not os.path.lexists(root(QEMU_LINK))
    assert "link " + VMWARE_LINK in root.record()
    st = os.stat(root(CONFIG))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0 and st.st_gid == 0
    assert stat.S_IMODE(os.stat(root(STATE_DIR)).st_mode) == 0o700
    assert root.rpm("-V", "--nodeps", "quiesce", check=False).stdout.strip() == ""

    # The agents installed after quiesce: %triggerin registers the QEMU hook.
    root.install(stubs["qemu-guest-agent"], stubs["open-vm-tools"])
    assert root.is_our_link(QEMU_LINK)
    assert root.is_our_link(VMWARE_LINK)

    # An edited config survives an upgrade whose config changed (.rpmnew beside it).
    with open(root(CONFIG)) as handle:
        text = handle.read()
    with open(root(CONFIG), "w") as handle:
        handle.write(text.replace("\nlock-timeout = 300\n", "\nlock-timeout = 120\n"))
    root.install(newer, upgrade=True)
    assert root.rpm("-q", "quiesce").stdout.strip().startswith("quiesce-%s-2" % helpers.spec_field("Version"))
    with open(root(CONFIG)) as handle:
        assert "\nlock-timeout = 120\n" in handle.read()
    assert os.path.exists(root(CONFIG + ".rpmnew"))
    assert stat.S_IMODE(os.stat(root(CONFIG)).st_mode) == 0o600
    assert root.is_our_link(VMWARE_LINK) and root.is_our_link(QEMU_LINK)

    # A link removed by the administrator stays removed: on reinstall, and when the
    # agent is upgraded (trigger).
    os.unlink(root(VMWARE_LINK))
    out = root.install(newer, upgrade=True, extra=("--replacepkgs",))
    root.install(stubs["open-vm-tools"], upgrade=True, extra=("--replacepkgs",))
    assert not os.path.lexists(root(VMWARE_LINK)), out
    assert root.is_our_link(QEMU_LINK)

    # Erase: our links and our empty directories go, the agents' directories stay.
    root.erase("quiesce")
    for path in (QEMU_LINK, VMWARE_DIR, CONFIG, STATE_DIR, "/run/quiesce", "/usr/lib/quiesce",
                 "/usr/sbin/quiesce", "/usr/lib/tmpfiles.d/quiesce.conf"):
        assert not os.path.lexists(root(path)), path
    assert os.path.isdir(root(QEMU_DIR_RHEL)) and not os.listdir(root(QEMU_DIR_RHEL))
    assert os.path.isdir(root("/etc/vmware-tools/vgauth"))
    # The edited config is kept as .rpmsave (and the unused .rpmnew stays), as rpm does.
    assert set(os.listdir(root("/etc/quiesce"))) <= {"quiesce.conf.rpmsave", "quiesce.conf.rpmnew"}
    assert os.path.exists(root(CONFIG + ".rpmsave"))


def test_erase_of_unmodified_install_leaves_nothing(rpms, tmp_path):
    root = ScratchRoot(tmp_path / "root")
    root.install(rpms["current"]["rpm"])
    # What a freeze and thaw leave behind: position file, runtime state.
    os.makedirs(root("/run/quiesce"), mode=0o700, exist_ok=True)
    for path in ("/run/quiesce/lock", "/run/quiesce/result.json", helpers.POSITION_FILE,
                 helpers.STATE_DIR + "/position-reports.json"):
        with open(root(path), "w") as handle:
            handle.write("{}")
    root.erase("quiesce")
    leftovers = []
    for top, dirs, files in os.walk(root.path):
        rel = os.path.relpath(top, root.path)
        if rel.split(os.sep)[0] in ("bin", "dev") or rel.startswith(os.path.join("var", "lib", "rpm")):
            continue
        leftovers.extend(os.path.join(rel, f) for f in files)
        leftovers.extend(os.path.join(rel, d) for d in dirs
                         if "quiesce" in d or "vmware" in d or "qemu" in d)
    assert not leftovers, leftovers


def dnf_install(repo_dir, rpm, installroot):
    run(["createrepo_c", "--quiet", repo_dir])
    return run(["dnf", "-y", "--installroot=" + installroot, "--releasever=9", "--noplugins",
                "--setopt=reposdir=/dev/null", "--setopt=install_weak_deps=False",
                "--setopt=tsflags=noscripts", "--setopt=cachedir=" + installroot + "-cache",
                "--repofrompath=stubs,file://" + repo_dir, "--setopt=stubs.gpgcheck=0",
                "install", rpm], check=False, timeout=300)


def installed_in(installroot):
    out = run(["rpm", "--root", installroot, "-qa", "--qf", "%{NAME}\n"]).stdout
    return set(out.split())


@pytest.mark.parametrize("flavour,repo,driver", [
    ("rhel9-epel", ("bash", "python3", "python3-configargparse", "python3-PyMySQL"), "python3-PyMySQL"),
    ("fedora", ("bash", "python3", "python3-configargparse", "python3-PyMySQL", "mysql-connector-python3"),
     "python3-PyMySQL"),
    ("connector-only", ("bash", "python3", "python3-configargparse", "mysql-connector-python3"),
     "mysql-connector-python3"),
])
def test_dnf_resolves_dependencies_offline(rpms, stubs, tmp_path, flavour, repo, driver):
    repo_dir = str(tmp_path / ("repo-" + flavour))
    os.makedirs(repo_dir)
    for name in repo:
        shutil.copy2(stubs[name], repo_dir)
    installroot = str(tmp_path / ("root-" + flavour))
    proc = dnf_install(repo_dir, rpms["current"]["rpm"], installroot)
    assert proc.returncode == 0, proc.stdout
    installed = installed_in(installroot)
    assert "quiesce" in installed and "python3-configargparse" in installed and driver in installed, installed
    assert not {"python3-PyMySQL", "mysql-connector-python3"} - {driver} & installed, installed


@pytest.mark.parametrize("missing", ["python3-configargparse", "driver"])
def test_dnf_refuses_unresolvable_dependencies(rpms, stubs, tmp_path, missing):
    names = {"bash", "python3", "python3-configargparse", "python3-PyMySQL", "mysql-connector-python3"}
    names -= {"python3-PyMySQL", "mysql-connector-python3"} if missing == "driver" else {missing}
    repo_dir = str(tmp_path / "repo")
    os.makedirs(repo_dir)
    for name in names:
        shutil.copy2(stubs[name], repo_dir)
    proc = dnf_install(repo_dir, rpms["current"]["rpm"], str(tmp_path / "root"))
    assert proc.returncode != 0, proc.stdout
    assert "nothing provides" in proc.stdout, proc.stdout
