"""The RPM, proved on this Debian machine with rpm's own tools.

rpmbuild from a tarball of the tree; rpmlint with the project's settings (every accepted
finding has its reason in rpm/rpmlint.toml); install, upgrade, triggers and erase with
`rpm --root` in a scratch root, where the scriptlets really run (chrooted, with busybox
as the shell and core utilities); and dependency resolution by dnf, offline, against
local repositories of stand-in packages shaped like RHEL 9 + EPEL and like Fedora.
"""

import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

from . import helpers
from .helpers import (CONFIG, HOOK_RECORD, QEMU_DIR_RHEL, QEMU_HOOK, REPO, STATE_DIR, VMWARE_DIR, VMWARE_HOOK,
                      VMWARE_LINK, run)

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


def test_rpmlint_filters_each_have_a_reason():
    """Every finding accepted on purpose says why, right above it."""
    with open(os.path.join(REPO, "rpm", "rpmlint.toml")) as handle:
        lines = handle.read().split("Filters = [", 1)[1].splitlines()
    previous = ""
    for line in lines:
        if line.strip().startswith("'"):
            assert previous.startswith(("#", "'")), line
        previous = line.strip() or previous


def test_check_runs_the_unit_tests(rpms):
    log = rpms["current"]["log"]
    assert re.search(r"(?m)^\+ .*-m pytest tests/unit$|^\+ .*pytest.* tests/unit$", log), log[-3000:]
    assert re.search(r"=+ \d+ passed", log), log[-3000:]


def test_check_passes_as_an_unprivileged_build_user():
    """Fedora's mock runs %check as its build user, not root: the tests that need root say
    so and skip (tests/unit/privileges.py), none fails. The %check's command, as nobody."""
    top = tempfile.mkdtemp(prefix="quiesce-check-as-user-", dir="/tmp")   # pytest's tmp_path is root's only
    try:
        os.chmod(top, 0o755)
        tree = os.path.join(top, "tree")
        listed = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], capture_output=True, check=True).stdout
        for name in listed.decode().split("\0"):
            if name and os.path.isfile(os.path.join(REPO, name)):
                os.makedirs(os.path.join(tree, os.path.dirname(name)), exist_ok=True)
                shutil.copy2(os.path.join(REPO, name), os.path.join(tree, name))
        subprocess.run(["chmod", "-R", "a+rX", tree], check=True)
        nobody = pwd.getpwnam("nobody")
        done = subprocess.run(
            ["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid, "--clear-groups",
             "/usr/bin/python3", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "tests/unit"],
            cwd=tree, capture_output=True, text=True, timeout=600,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": top, "PYTHONPATH": tree,
                 "PYTHONDONTWRITEBYTECODE": "1", "QUIESCE_TESTS_WITHOUT_CONNECTOR": "1", "LANG": "C.UTF-8"})
    finally:
        shutil.rmtree(top)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "needs root (unprivileged package builds" in done.stdout, done.stdout[-4000:]


def rpm_files(db, rpm):
    """{path: (flags, perms, owner)} of the package's payload and ghosts."""
    files = {}
    fmt = "[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]"
    for line in rpm_q(db, "--qf", fmt, rpm).splitlines():
        parts = line.split()
        flags, perms, owner, path = (parts if len(parts) == 4 else [""] + parts)
        files[path] = (flags, perms, owner)
    return files


def test_package_metadata(rpms, tmp_path):
    rpm = rpms["current"]["rpm"]
    db = tmp_path / "rpmdb"
    assert rpm.endswith(".noarch.rpm")
    requires = [line.strip() for line in rpm_q(db, "--requires", rpm).splitlines()]
    # Python distribution names, not one distribution's package names; a Connector/Python
    # that works on current Pythons; the interpreter from the launchers' shebangs only.
    assert "python3dist(configargparse)" in requires
    assert "(python3dist(pymysql) or python3dist(mysql-connector-python) >= 8.0.30)" in requires
    assert "/usr/bin/python3" in requires and "python3" not in requires
    for tool in ("coreutils", "grep", "sed"):
        assert requires.count(tool) == 2, tool  # Requires(post) and Requires(preun)
    # Nothing that ties the package to one distribution's Python, no database server.
    assert not [r for r in requires if r.startswith("python(abi)") or "mariadb" in r or "mysql-server" in r]

    files = rpm_files(db, rpm)
    assert files[CONFIG] == ("cn", "-rw-------", "root:root")  # %config(noreplace)
    assert files[STATE_DIR][1:] == ("drwx------", "root:root")
    assert files["/run/quiesce"][1:] == ("drwx------", "root:root")
    # Owned, not shipped: created only where VMware Tools is installed.
    assert files[VMWARE_DIR] == ("g", "drwxr-xr-x", "root:root")
    for exe in ("/usr/sbin/quiesce", helpers.HOOK, VMWARE_HOOK, QEMU_HOOK, "/usr/lib/quiesce/freeze",
                "/usr/lib/quiesce/thaw", "/usr/lib/quiesce/register-hooks"):
        assert files[exe][1] == "-rwxr-xr-x", exe
    modules = sorted(os.path.basename(p) for p in files
                     if p.startswith("/usr/lib/quiesce/quiesce/") and p.endswith(".py"))
    assert {"__init__.py", "cli.py", "hooks.py", "selinux.py"} <= set(modules)
    # Bytecode of every module of every layer, for the build host's Python, in the private directory.
    sources = [p for p in files if p.startswith("/usr/lib/quiesce/quiesce/") and p.endswith(".py")]
    assert len({os.path.dirname(p) for p in sources}) > 1, sources  # the layers' folders are shipped
    for source in sources:
        cache = "%s/__pycache__/%s.cpython-" % os.path.split(source[:-3])
        assert [p for p in files if p.startswith(cache) and p.endswith(".pyc")], source
    assert "/usr/lib/tmpfiles.d/quiesce.conf" in files
    assert "/usr/share/man/man8/quiesce.8.gz" in files
    assert "/usr/share/man/man5/quiesce.conf.5.gz" in files
    assert files[helpers.COMPLETION][1:] == ("-rw-r--r--", "root:root")
    for path, executable in helpers.example_files():
        assert files[path][1] == ("-rwxr-xr-x" if executable else "-rw-r--r--"), path
    assert not [p for p in files if "/site-packages/" in p or p.startswith("/usr/lib/python")
                or p.startswith("/etc/qemu") or (p.startswith("/etc/vmware-tools") and p != VMWARE_DIR)]

    triggers = rpm_q(db, "--triggers", rpm)
    for kind in ("triggerin", "triggerun"):
        for agent in ("open-vm-tools", "qemu-guest-agent"):
            assert "%s scriptlet (using /bin/sh) -- %s" % (kind, agent) in triggers
    scripts = rpm_q(db, "--scripts", rpm)
    assert "register-hooks -q register" in scripts and "register-hooks register" not in scripts


def test_payload_bytecode_is_used_by_the_launchers(rpms, tmp_path):
    """The shipped .pyc are read under the launchers' -B (which only stops writing them)."""
    run(["sh", "-c", "rpm2cpio '%s' | cpio -idm --quiet" % rpms["current"]["rpm"]], cwd=str(tmp_path))
    with open(tmp_path / "usr/lib/quiesce/hook") as handle:
        shebang = handle.readline().split()
    assert shebang[0] == "#!/usr/bin/python3" and "B" in shebang[1] and "s" in shebang[1]
    lib = str(tmp_path / "usr/lib/quiesce")
    before = helpers.bytecode_mtimes(os.path.join(lib, "quiesce"))
    proc = run(["/usr/bin/python3", shebang[1], "-v", "-c",
                "import sys; sys.path.insert(0, %r); import quiesce.cli, quiesce.hooks" % lib])
    loaded = re.findall(r"code object from '([^']+)'", proc.stdout)
    for module in ("__pycache__/cli", "__pycache__/hooks", "base/__pycache__/config"):
        assert [p for p in loaded if p.startswith(lib) and "/quiesce/%s.cpython-" % module in p], proc.stdout[-3000:]
    assert "bytecode is stale" not in proc.stdout
    after = helpers.bytecode_mtimes(os.path.join(lib, "quiesce"))
    assert after == before


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

    def erase(self, *names):
        return self.rpm("--force-debian", "-e", "--nodeps", *names).stdout

    def __call__(self, path):
        return os.path.join(self.path, path.lstrip("/"))

    def is_our_link(self, path):
        target = VMWARE_HOOK if path.startswith("/etc/vmware-tools/") else QEMU_HOOK
        return os.path.islink(self(path)) and os.readlink(self(path)) == target

    def leftovers(self):
        """Files, and directories of ours or the agents', that no package left installed owns."""
        found = []
        for top, dirs, files in os.walk(self.path):
            rel = os.path.relpath(top, self.path)
            if rel.split(os.sep)[0] in ("bin", "dev") or rel.startswith(os.path.join("var", "lib", "rpm")):
                continue
            found.extend(os.path.join(rel, f) for f in files)
            found.extend(os.path.join(rel, d) for d in dirs
                         if "quiesce" in d or "vmware" in d or "qemu" in d or "fsfreeze" in d
                         or "backupScripts" in d)
        stubs = {"usr/sbin/selinuxenabled", "usr/sbin/semanage", "usr/sbin/restorecon", "selinux.log"}
        return [p for p in found if p not in stubs]

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
        "coreutils": {}, "grep": {}, "sed": {},
        "python3-configargparse": {"provides": "python3dist(configargparse) = 1.5.3"},
        "python3-PyMySQL": {"provides": "python3dist(pymysql) = 1.0.2"},
        "mysql-connector-python3": {"provides": "python3dist(mysql-connector-python) = 8.0.33"},
        # Ubuntu-era Connector/Python, broken on current Pythons.
        "old-connector": {"name": "mysql-connector-python3", "version": "8.0.15",
                          "provides": "python3dist(mysql-connector-python) = 8.0.15"},
    })


def test_scratch_root_install_triggers_upgrade_erase(rpms, stubs, tmp_path):
    root = ScratchRoot(tmp_path / "root")
    current, newer = rpms["current"]["rpm"], rpms["newer"]["rpm"]

    # No agent installed: nothing is created in /etc for one, and nothing is said.
    out = root.install(current)
    assert out.strip() == "", out
    assert not os.path.lexists(root("/etc/vmware-tools")) and not os.path.lexists(root("/etc/qemu-ga"))
    st = os.stat(root(CONFIG))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0 and st.st_gid == 0
    assert stat.S_IMODE(os.stat(root(STATE_DIR)).st_mode) == 0o700
    assert root.rpm("-V", "--nodeps", "quiesce", check=False).stdout.strip() == ""
    helpers.assert_completion_works(root(helpers.COMPLETION))

    # The agents installed after quiesce: %triggerin registers each with its own entry file.
    out = root.install(stubs["qemu-guest-agent"], stubs["open-vm-tools"])
    assert out.strip() == "", out
    assert root.is_our_link(QEMU_LINK)
    assert root.is_our_link(VMWARE_LINK)
    assert {"link " + VMWARE_LINK, "link " + QEMU_LINK, "dir " + VMWARE_DIR} <= set(root.record())
    assert root.rpm("-qf", "--qf", "%{NAME}\\n", VMWARE_DIR).stdout.split() == ["quiesce"]

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
    # agent is upgraded (trigger); quietly.
    os.unlink(root(VMWARE_LINK))
    out = root.install(newer, upgrade=True, extra=("--replacepkgs",))
    out += root.install(stubs["open-vm-tools"], upgrade=True, extra=("--replacepkgs",))
    assert not os.path.lexists(root(VMWARE_LINK)) and out.strip() == "", out
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


def test_agents_erased_while_quiesce_stays(rpms, stubs, tmp_path):
    """%triggerun: nothing of the agents is left unowned because of our links."""
    root = ScratchRoot(tmp_path / "root")
    root.install(stubs["qemu-guest-agent"], stubs["open-vm-tools"])
    root.install(rpms["current"]["rpm"])
    assert root.is_our_link(VMWARE_LINK) and root.is_our_link(QEMU_LINK)
    os.unlink(root(QEMU_LINK))  # an administrator's removal is forgotten with the agent

    out = root.erase("open-vm-tools", "qemu-guest-agent")
    assert out.strip() == "", out
    for path in ("/etc/vmware-tools", "/etc/qemu-ga"):
        assert not os.path.lexists(root(path)), (path, root.leftovers())
    assert not [line for line in root.record() if line]

    # Reinstalled: registered again; an upgrade of an agent ($2 = 1) unregisters nothing.
    root.install(stubs["qemu-guest-agent"], stubs["open-vm-tools"])
    assert root.is_our_link(VMWARE_LINK) and root.is_our_link(QEMU_LINK)
    root.install(stubs["qemu-guest-agent"], stubs["open-vm-tools"], upgrade=True, extra=("--replacepkgs",))
    assert root.is_our_link(VMWARE_LINK) and root.is_our_link(QEMU_LINK)

    root.erase("quiesce")
    assert os.listdir(root(QEMU_DIR_RHEL)) == [] and not os.path.lexists(root(VMWARE_DIR))
    root.erase("open-vm-tools", "qemu-guest-agent")
    assert root.leftovers() == []


def test_erase_of_unmodified_install_leaves_nothing(rpms, tmp_path):
    root = ScratchRoot(tmp_path / "root")
    os.makedirs(root("/etc/vmware-tools"))  # VMware Tools not from a package (its own installer)
    root.install(rpms["current"]["rpm"])
    assert root.is_our_link(VMWARE_LINK)
    # What a freeze and thaw leave behind: position file, history, runtime state (and the
    # probe and temporary files of a command that was killed), the node_exporter textfile.
    textfile_dir = "/var/lib/node_exporter/textfile_collector"
    for directory in ("/run/quiesce", textfile_dir):
        os.makedirs(root(directory), mode=0o700, exist_ok=True)
    for path in ("/run/quiesce/lock", "/run/quiesce/result.json", helpers.POSITION_FILE,
                 helpers.STATE_DIR + "/position-reports.json", helpers.STATE_DIR + "/.quiesce-fsprobe-1081-25d3",
                 helpers.STATE_DIR + "/history.jsonl", helpers.STATE_DIR + "/history.lock",
                 helpers.STATE_DIR + "/lock", helpers.STATE_DIR + "/.history.jsonl.1081.tmp",
                 textfile_dir + "/quiesce.prom"):
        with open(root(path), "w") as handle:
            handle.write("{}")
    root.erase("quiesce")
    os.rmdir(root("/etc/vmware-tools"))
    os.rmdir(root(textfile_dir))  # node_exporter's: only our file in it goes
    assert root.leftovers() == []


SELINUX_LOG = "/selinux.log"


def selinux_stubs(root, enabled):
    """selinuxenabled, semanage and restorecon that record how they were called."""
    os.makedirs(root("/usr/sbin"), exist_ok=True)
    for tool in ("selinuxenabled", "semanage", "restorecon"):
        with open(root("/usr/sbin/" + tool), "w") as handle:
            handle.write("#!/bin/sh\necho \"%s $*\" >>%s\n%s\n"
                         % (tool, SELINUX_LOG, "exit 0" if enabled or tool != "selinuxenabled" else "exit 1"))
        os.chmod(root("/usr/sbin/" + tool), 0o755)


def selinux_calls(root):
    try:
        with open(root(SELINUX_LOG)) as handle:
            calls = [line.strip() for line in handle if not line.startswith("selinuxenabled")]
    except FileNotFoundError:
        return []
    os.unlink(root(SELINUX_LOG))
    return calls


def test_selinux_file_contexts_in_scriptlets(rpms, stubs, tmp_path):
    root = ScratchRoot(tmp_path / "root")
    selinux_stubs(root, enabled=True)
    root.install(stubs["qemu-guest-agent"])
    root.install(rpms["current"]["rpm"])
    calls = selinux_calls(root)
    for entry, selinux_type in ((QEMU_HOOK, "virt_qemu_ga_unconfined_exec_t"),
                                (VMWARE_HOOK, "vmtools_unconfined_exec_t")):
        assert "semanage fcontext -a -t %s %s" % (selinux_type, entry) in calls, calls
        assert calls.index("restorecon " + entry) > calls.index("semanage fcontext -a -t %s %s"
                                                                % (selinux_type, entry)), calls
    assert root.is_our_link(QEMU_LINK)
    # The link is registered after its target is labelled.
    assert calls.index("restorecon " + QEMU_LINK) > calls.index("restorecon " + QEMU_HOOK), calls

    root.erase("quiesce")
    calls = selinux_calls(root)
    assert sorted(c for c in calls if c.startswith("semanage")) == [
        "semanage fcontext -d " + QEMU_HOOK, "semanage fcontext -d " + VMWARE_HOOK], calls

    # SELinux disabled: no policy change at all.
    selinux_stubs(root, enabled=False)
    root.install(rpms["current"]["rpm"])
    root.erase("quiesce")
    assert selinux_calls(root) == []


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


BASE = ("bash", "coreutils", "grep", "sed", "python3", "python3-configargparse")


@pytest.mark.parametrize("flavour,repo,driver", [
    ("rhel9-epel", BASE + ("python3-PyMySQL",), "python3-PyMySQL"),
    ("fedora", BASE + ("python3-PyMySQL", "mysql-connector-python3"), "python3-PyMySQL"),
    ("connector-only", BASE + ("mysql-connector-python3",), "mysql-connector-python3"),
    ("old-connector-and-pymysql", BASE + ("python3-PyMySQL", "old-connector"), "python3-PyMySQL"),
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


@pytest.mark.parametrize("missing", ["python3-configargparse", "driver", "working-connector"])
def test_dnf_refuses_unresolvable_dependencies(rpms, stubs, tmp_path, missing):
    names = set(BASE) | {"python3-PyMySQL", "mysql-connector-python3"}
    if missing == "working-connector":  # only a Connector/Python older than 8.0.30
        names = names - {"python3-PyMySQL", "mysql-connector-python3"} | {"old-connector"}
    else:
        names -= {"python3-PyMySQL", "mysql-connector-python3"} if missing == "driver" else {missing}
    repo_dir = str(tmp_path / "repo")
    os.makedirs(repo_dir)
    for name in names:
        shutil.copy2(stubs[name], repo_dir)
    proc = dnf_install(repo_dir, rpms["current"]["rpm"], str(tmp_path / "root"))
    assert proc.returncode != 0, proc.stdout
    assert "nothing provides" in proc.stdout, proc.stdout
