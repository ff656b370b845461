"""Checks of the packaging sources that need neither root nor a build.

Versions agree, the launchers hand over to the contract's entry points, the shipped
config documents (and parses with) every option, the man pages render without warnings
and carry the exit-status table, and the hook registration script keeps its promises
(idempotent, never touches a file it did not create, respects an administrator's
removal), run against a scratch directory tree. As root, the purge script runs in a
busybox chroot, at its real paths.
"""

import argparse
import ast
import os
import re
import shutil
import stat
import subprocess

import pytest

from . import helpers
from .helpers import REPO

# Every setting of the contract (config-file spelling).
CONTRACT_KEYS = (
    "defaults-file", "socket", "host", "port", "user", "password", "driver", "lock-method",
    "lock-timeout", "acquire-timeout", "connect-timeout", "on-failure", "runtime-dir",
    "position-file", "long-query-time", "long-query-wait", "long-query-type",
    "kill-long-selects", "stop-replica", "release-on-fs-thaw", "allow-cleartext-auth", "metrics-file",
    "metrics-dir-shared", "ssl-mode", "ssl-ca", "allow-unverified-host", "enabled",
)
# Set (uncommented) in the shipped file: the defaults admins tune most.
SET_IN_SHIPPED_CONFIG = {"lock-timeout": "300", "acquire-timeout": "5", "on-failure": "fail"}
LAUNCHERS = {
    "bin/quiesce": ("quiesce.hooks", "command_main"),
    "libexec/hook": ("quiesce.hooks", "hook_main"),
    "libexec/freeze": ("quiesce.hooks", "freeze_main"),
    "libexec/thaw": ("quiesce.hooks", "thaw_main"),
}
SHELL_SCRIPTS = ("libexec/register-hooks", "debian/postinst", "debian/prerm", "debian/postrm",
                 "examples/veeam-pre-freeze.sh", "examples/veeam-post-thaw.sh",
                 "examples/storage/btrfs-snapshot.sh", "examples/storage/lvm-snapshot.sh",
                 "examples/storage/zfs-snapshot.sh", "examples/storage/cloud-disk-snapshot.sh",
                 "examples/schedulers/zfs-autobackup.sh", "examples/schedulers/zrepl-hook",
                 "examples/schedulers/snapper-plugin")


def read(relpath):
    with open(os.path.join(REPO, relpath)) as handle:
        return handle.read()


def test_versions_agree():
    version = helpers.module_version()
    assert helpers.debian_version() == version, "debian/changelog"
    assert helpers.spec_field("Version") == version, "rpm/quiesce.spec"
    for page in ("man/quiesce.8", "man/quiesce.conf.5"):
        assert '"quiesce %s"' % version in read(page).splitlines()[0], page


def test_the_three_changelogs_list_the_same_releases():
    debian = re.findall(r"(?m)^quiesce \(([^)]+)\) ", read("debian/changelog"))
    rpm = re.findall(r"(?m)^\* .* - ([^-\s]+)-\d+$", read("rpm/quiesce.spec").split("%changelog", 1)[1])
    markdown = re.findall(r"(?m)^## ([0-9][^ ]*) \(", read("CHANGELOG.md"))
    assert debian == rpm == markdown and debian[0] == helpers.module_version(), (debian, rpm, markdown)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launcher_hands_over_to_contract_entry_point(launcher):
    module, function = LAUNCHERS[launcher]
    text = read(launcher)
    path = os.path.join(REPO, launcher)
    # One interpreter argument only: Linux passes "-sB" to python3 as a single word.
    assert text.splitlines()[0] == "#!/usr/bin/python3 -sB"
    assert os.stat(path).st_mode & stat.S_IXUSR
    tree = ast.parse(text)
    assert 'sys.path.insert(0, "/usr/lib/quiesce")' in text
    imports = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names]
    assert imports == [(module, function)]
    # The entry point is defined where the contract says.
    source = read(module.replace(".", "/") + ".py")
    assert function in {node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}


def test_shebang_flags_take_effect(tmp_path):
    script = tmp_path / "probe"
    script.write_text("#!/usr/bin/python3 -sB\nimport sys\n"
                      "print(sys.flags.no_user_site, sys.flags.dont_write_bytecode)\n")
    script.chmod(0o755)
    out = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, check=True,
                         env=helpers.clean_env()).stdout
    assert out.split() == ["1", "1"]


def test_config_file_documents_every_option():
    text = read("etc/quiesce.conf")
    for key in CONTRACT_KEYS:
        if key in SET_IN_SHIPPED_CONFIG:
            assert re.search(r"(?m)^%s = %s$" % (key, SET_IN_SHIPPED_CONFIG[key]), text), key
        else:
            assert re.search(r"(?m)^#%s = " % key, text), key
    assert re.search(r"(?m)^#\[instance:\w+\]$", text)
    # Credentials are commented out and the zero-config default is explained.
    assert not re.search(r"(?m)^(user|password|socket|host|defaults-file)\s*=", text)
    assert "unix_socket" in text


def test_man_pages_document_every_option():
    page5, page8 = read("man/quiesce.conf.5"), read("man/quiesce.8")
    for key in CONTRACT_KEYS:
        assert re.search(r"(?m)^\.BI %s " % re.escape(key.replace("-", r"\-")), page5), key
        if key != "password":
            assert "\\-\\-" + key.replace("-", "\\-") in page8, key
    # Command-line only: in quiesce(8), never in the configuration file.
    for option in ("json", "cycle", "all", "caller"):
        assert re.search(r"(?m)^\.B[I]? \\-\\-%s\b" % option, page8), option
        assert not re.search(r"(?m)^#?%s = " % option, read("etc/quiesce.conf")), option


def test_config_options_match_the_parser():
    config = pytest.importorskip("quiesce.base.config")
    file_keys = {}
    for command, parser in config.all_parsers().items():
        keys = config._file_keys(parser)
        # One config file serves every command: each accepts the same keys.
        assert set(keys) == set(file_keys or keys), command
        file_keys = keys
    # The password has no option: it comes only from a file.
    assert set(file_keys) == {key for key in CONTRACT_KEYS if key != "password"}


def parser_defaults():
    """{config key: (type, default)} of every setting with a built-in default the parser applies."""
    config = pytest.importorskip("quiesce.base.config")
    keys = config._file_keys(config.build_parser("freeze"))
    return {key: (action.type, action.default) for key, action in keys.items() if action.default is not None}


def roff_items(page, opener):
    """{key: text} of the items of a man page that open with .BI OPENERkey, formatting removed."""
    items = {}
    for block in re.split(r"(?m)^\.(?:TP|SH|SS|PP)\b.*$", read(page)):
        lines = block.strip("\n").split("\n")
        match = re.match(r"^\.BI? %s([a-z\\-]+)" % re.escape(opener), lines[0])
        if match:
            body = " ".join(re.sub(r"^\.(?:B|I|BR|IR|RB|BI)\s+", "", line) for line in lines[1:])
            items.setdefault(match.group(1).replace("\\-", "-"),
                             re.sub(r"\\f[BIPR]", "", body).replace("\\-", "-").replace('"', ""))
    return items


def documented_default(text):
    """The default an item names: "(default X", "Default X:", "X (the default)"."""
    for pattern in (r"\b[Dd]efault:?\s+([^\s):;,]+)", r"(\S+)\s+\((?:the )?default\)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1).rstrip(".")
    return None


def test_shipped_config_shows_the_parser_defaults():
    shipped = dict(re.findall(r"(?m)^#?([a-z-]+) = (.*)$", read("etc/quiesce.conf")))
    for key, (kind, default) in parser_defaults().items():
        assert key in shipped, key
        assert kind(shipped[key]) == default, "etc/quiesce.conf: %s = %s, the built-in default is %s" % (
            key, shipped[key], default)


@pytest.mark.parametrize("page,opener", [("man/quiesce.conf.5", ""), ("man/quiesce.8", "\\-\\-")])
def test_man_pages_give_the_parser_defaults(page, opener):
    items = roff_items(page, opener)
    for key, (kind, default) in parser_defaults().items():
        named = documented_default(items.get(key, ""))
        assert named is not None, "%s: %s names no default" % (page, key)
        assert kind(named) == default, "%s: %s default %s, the built-in default is %s" % (page, key, named, default)


def test_shipped_config_parses(tmp_path):
    config = pytest.importorskip("quiesce.base.config")
    shipped = tmp_path / "quiesce.conf"
    shutil.copy(os.path.join(REPO, "etc", "quiesce.conf"), str(shipped))
    shipped.chmod(0o600)
    settings = config.parse(["--config", str(shipped), "status"])
    assert (settings.lock_timeout, settings.acquire_timeout, settings.on_failure) == (300, 5, "fail")
    assert [t.name for t in settings.targets] == ["default"]
    assert settings.targets[0].user == "root" and settings.targets[0].password is None

    # Every documented setting, uncommented as shown, is valid too.
    lines = []
    for line in shipped.read_text().splitlines():
        match = re.match(r"^#(\[instance:\w+\]|[a-z-]+ = .*)$", line)
        # Files that must exist are left commented.
        lines.append(match.group(1) if match and not line.startswith(("#defaults-file", "#ssl-ca")) else line)
    shipped.write_text("\n".join(lines) + "\n")
    settings = config.parse(["--config", str(shipped), "status"])
    assert [t.name for t in settings.targets] == ["main", "reports"]


def test_exit_status_table_matches_the_code():
    errors = pytest.importorskip("quiesce.base.errors")
    page = read("man/quiesce.8")
    section = page.split(".SH EXIT STATUS", 1)[1].split("\n.SH ", 1)[0]
    codes = [int(c) for c in re.findall(r"(?m)^\.TP\n\.B (\d+)$", section)]
    assert codes == sorted(int(code) for code in errors.Exit)


def test_tmpfiles_entry():
    entries = [line.split() for line in read("etc/tmpfiles.d/quiesce.conf").splitlines()
               if line.strip() and not line.startswith("#")]
    assert entries == [["d", "/run/quiesce", "0700", "root", "root", "-"]]


@pytest.mark.parametrize("page", ["man/quiesce.8", "man/quiesce.conf.5"])
def test_man_page_renders_without_warnings(page):
    if not helpers.have("man") or not helpers.have("groff"):
        pytest.fail("man and groff are missing: run 'make deps' (man-db, groff-base)", pytrace=False)
    proc = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z",
                           os.path.join(REPO, page)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=helpers.clean_env(MANWIDTH="80"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_are_posix(script):
    path = os.path.join(REPO, script)
    subprocess.run(["sh", "-n", path], check=True)
    if not helpers.have("checkbashisms"):
        pytest.fail("checkbashisms is missing: run 'make deps' (devscripts)", pytrace=False)
    proc = subprocess.run(["checkbashisms", path], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout


def test_make_deps_installs_every_tool_the_tests_use():
    """A tool the tests need and `make deps` does not install would fail on a fresh machine."""
    from tests.integration import loopfs

    from .conftest import BUILD_TOOLS
    proc = subprocess.run(["make", "-s", "-C", REPO, "--no-print-directory", "print-deb-packages"],
                          stdout=subprocess.PIPE, text=True, check=True, env=helpers.clean_env())
    deps = set(proc.stdout.split())
    assert set(BUILD_TOOLS) - deps == set()
    # The loop-filesystem tools (chattr: the power-cut tests): the packages shipping them.
    for tool in loopfs.TOOLS + ("chattr",):
        path = shutil.which(tool, path=helpers.SYSTEM_PATH)
        assert path, "%s is missing: run 'make deps'" % tool
        # By pattern: with merged /usr, dpkg knows /sbin/losetup, not /usr/sbin/losetup.
        owners = helpers.run(["dpkg-query", "-S", "bin/" + tool]).stdout
        assert any(line.split(":")[0] in deps for line in owners.splitlines()), (tool, owners)


# ---------------------------------------------------------------------------
# libexec/register-hooks in a scratch tree
# ---------------------------------------------------------------------------

class Tree:
    def __init__(self, root, vmware=True):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, "etc"))
        if vmware:  # VMware Tools installed
            os.makedirs(self(helpers.VMWARE_DIR.rsplit("/", 1)[0]))

    def __call__(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def hooks(self, *args):
        env = helpers.clean_env(QUIESCE_HOOKS_ROOT=self.root)
        return subprocess.run(["sh", os.path.join(REPO, "libexec", "register-hooks")] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def ours(self, path, target=None):
        if target is None:
            target = helpers.VMWARE_HOOK if path.startswith("/etc/vmware-tools/") else helpers.QEMU_HOOK
        return os.path.islink(self(path)) and os.readlink(self(path)) == target

    def record(self):
        try:
            with open(self(helpers.HOOK_RECORD)) as handle:
                return handle.read().splitlines()
        except FileNotFoundError:
            return []

    def snapshot(self):
        found = {}
        for top, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = os.path.join(top, name)
                found[os.path.relpath(path, self.root)] = (
                    os.readlink(path) if os.path.islink(path) else open(path).read()
                    if os.path.isfile(path) else "dir")
        return found


VMW = helpers.VMWARE_LINK
QEMU = helpers.QEMU_DIR_DEBIAN + "/zz-quiesce"
QEMU_RHEL = helpers.QEMU_DIR_RHEL + "/zz-quiesce"


def test_register_is_idempotent(tmp_path):
    tree = Tree(tmp_path)
    first = tree.hooks("register")
    assert first.returncode == 0 and "registered hook " + VMW in first.stdout
    assert tree.ours(VMW)
    assert tree.record() == ["dir /etc/vmware-tools/backupScripts.d", "link " + VMW]
    before = tree.snapshot()
    again = tree.hooks("register")
    assert again.returncode == 0 and again.stdout == ""
    assert tree.snapshot() == before


def test_no_vmware_directory_without_vmware_tools(tmp_path):
    tree = Tree(tmp_path, vmware=False)
    proc = tree.hooks("register")
    assert proc.returncode == 0 and proc.stdout == ""
    assert os.listdir(tree("/etc")) == []
    # VMware Tools installed later (the package trigger runs register again).
    os.makedirs(tree("/etc/vmware-tools"))
    tree.hooks("register")
    assert tree.ours(VMW)


def test_each_agent_runs_its_own_entry_file(tmp_path):
    tree = Tree(tmp_path)
    os.makedirs(tree(helpers.QEMU_DIR_RHEL))
    tree.hooks("register")
    assert os.readlink(tree(VMW)) == helpers.VMWARE_HOOK
    assert os.readlink(tree(QEMU_RHEL)) == helpers.QEMU_HOOK


def test_links_of_older_versions_are_repointed(tmp_path):
    tree = Tree(tmp_path)
    os.makedirs(tree(helpers.VMWARE_DIR))
    os.makedirs(tree(helpers.QEMU_DIR_DEBIAN))
    os.symlink(helpers.HOOK, tree(VMW))
    os.symlink(helpers.HOOK, tree(QEMU))
    proc = tree.hooks("-q", "register")
    assert proc.returncode == 0 and proc.stdout == ""
    assert tree.ours(VMW) and tree.ours(QEMU)
    tree.hooks("unregister")
    assert not os.path.lexists(tree(VMW)) and not os.path.lexists(tree(QEMU))


def test_qemu_hook_dir_used_only_where_the_agent_made_it(tmp_path):
    tree = Tree(tmp_path, vmware=False)
    tree.hooks("register")
    assert not os.path.lexists(tree("/etc/qemu")) and not os.path.lexists(tree("/etc/qemu-ga"))
    os.makedirs(tree(helpers.QEMU_DIR_RHEL))
    tree.hooks("register")
    assert tree.ours(QEMU_RHEL) and not os.path.lexists(tree("/etc/qemu"))
    os.makedirs(tree(helpers.QEMU_DIR_DEBIAN))
    tree.hooks("register")
    assert tree.ours(QEMU)
    assert "dir " + helpers.QEMU_DIR_DEBIAN not in tree.record()
    tree.hooks("purge")
    # The agents' directories are theirs: emptied of our links, not removed.
    assert os.listdir(tree(helpers.QEMU_DIR_DEBIAN)) == [] and os.listdir(tree(helpers.QEMU_DIR_RHEL)) == []
    assert not os.path.lexists(tree("/etc/vmware-tools"))


@pytest.mark.parametrize("foreign", ["file", "other-link", "dangling-link"])
def test_never_replaces_what_is_not_ours(tmp_path, foreign):
    tree = Tree(tmp_path)
    os.makedirs(tree(helpers.VMWARE_DIR))
    if foreign == "file":
        with open(tree(VMW), "w") as handle:
            handle.write("#!/bin/sh\n")
    else:
        os.symlink("/usr/local/bin/other" if foreign == "other-link" else "/nonexistent", tree(VMW))
    before = tree.snapshot()
    proc = tree.hooks("-q", "register")
    assert proc.returncode == 0 and "not a link to /usr/lib/quiesce/vmware-hook" in proc.stdout
    assert "link " + VMW not in tree.record()
    tree.hooks("unregister")
    tree.hooks("agent-removed", "vmware")
    tree.hooks("purge")
    after = tree.snapshot()
    after.pop(os.path.relpath(tree(helpers.STATE_DIR), tree.root), None)
    assert after == before


def test_administrator_removal_is_respected_until_purge(tmp_path):
    tree = Tree(tmp_path)
    tree.hooks("register")
    os.unlink(tree(VMW))
    proc = tree.hooks("register")
    assert "removed by the administrator" in proc.stdout
    assert tree.hooks("-q", "register").stdout == ""  # package scriptlets stay quiet
    assert not os.path.lexists(tree(VMW))
    # Removal of the package keeps that memory (a reinstall does not re-create it)...
    tree.hooks("unregister")
    tree.hooks("register")
    assert not os.path.lexists(tree(VMW))
    # ...purge forgets it.
    tree.hooks("purge")
    tree.hooks("register")
    assert tree.ours(VMW)


def test_unregister_removes_only_ours(tmp_path):
    tree = Tree(tmp_path)
    tree.hooks("register")
    assert tree.record() == ["dir /etc/vmware-tools/backupScripts.d", "link " + VMW]
    other = tree(helpers.VMWARE_DIR + "/50-app-flush")
    with open(other, "w") as handle:
        handle.write("#!/bin/sh\n")
    tree.hooks("unregister")
    assert not os.path.lexists(tree(VMW))
    assert os.path.exists(other)  # the administrator's hook, and so its directory, stay
    assert tree.record() == ["dir /etc/vmware-tools/backupScripts.d"]
    os.unlink(other)
    tree.hooks("purge")
    assert not os.path.exists(tree(helpers.VMWARE_DIR))
    assert os.path.isdir(tree("/etc/vmware-tools"))
    assert not os.path.exists(tree(helpers.HOOK_RECORD))


def test_unregister_then_register_again(tmp_path):
    tree = Tree(tmp_path)
    tree.hooks("register")
    tree.hooks("unregister")  # package removed (not purged): we removed the link ourselves
    assert os.listdir(tree("/etc/vmware-tools")) == []
    tree.hooks("register")  # installed again
    assert tree.ours(VMW)


@pytest.mark.parametrize("agent", ["vmware", "qemu-ga"])
def test_agent_removed_drops_our_link_and_record(tmp_path, agent):
    """RPM %triggerun: the agent's package is erased while quiesce stays."""
    tree = Tree(tmp_path)
    os.makedirs(tree(helpers.QEMU_DIR_RHEL))
    tree.hooks("register")
    os.unlink(tree(QEMU_RHEL))  # removed by the administrator: forgotten with the agent too
    proc = tree.hooks("-q", "agent-removed", agent)
    assert proc.returncode == 0 and proc.stdout == ""
    if agent == "vmware":
        # Nothing of ours keeps the package manager from removing /etc/vmware-tools.
        assert os.listdir(tree("/etc/vmware-tools")) == []
        assert tree.record() == ["link " + QEMU_RHEL]
    else:
        assert os.listdir(tree(helpers.QEMU_DIR_RHEL)) == []
        assert tree.ours(VMW) and tree.record() == ["dir " + helpers.VMWARE_DIR, "link " + VMW]
    # The agent installed again: registered again (the other agent's link stays removed).
    tree.hooks("register")
    assert tree.ours(VMW) and tree.ours(QEMU_RHEL) == (agent == "qemu-ga")


def test_usage_error(tmp_path):
    for args in (["bogus"], ["agent-removed", "nutanix"]):
        proc = Tree(tmp_path / args[-1]).hooks(*args)
        assert proc.returncode == 2 and "usage" in proc.stdout


class BusyboxRoot:
    """A scratch root with busybox only (root needed: chroot), where a maintainer script runs
    at its real paths without touching this machine."""

    def __init__(self, path):
        if os.geteuid() != 0 or not os.path.exists("/bin/busybox"):
            pytest.skip("needs root and /bin/busybox (busybox-static) for a chroot")
        self.root = str(path)
        os.makedirs(self("/bin"))
        shutil.copy2("/bin/busybox", self("/bin/busybox"))
        subprocess.run(["chroot", self.root, "/bin/busybox", "--install", "-s", "/bin"], check=True)

    def __call__(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def write(self, path, text, mode=0o644):
        os.makedirs(os.path.dirname(self(path)), exist_ok=True)
        with open(self(path), "w") as handle:
            handle.write(text)
        os.chmod(self(path), mode)

    def run(self, script, *args, text=None):
        if text is None:
            shutil.copy2(os.path.join(REPO, script), self("/maintainer-script"))
        else:
            self.write("/maintainer-script", text, 0o755)
        return subprocess.run(["chroot", self.root, "/bin/sh", "/maintainer-script"] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=helpers.clean_env(), check=True).stdout


def test_purge_removes_unchanged_registered_files_even_if_unregister_failed(tmp_path):
    """prerm's 'quiesce unregister --all' may have failed: postrm purge removes the files
    'quiesce register' created, but only those nobody changed, and never through a link."""
    import hashlib
    box = BusyboxRoot(tmp_path / "root")
    script = "#!/bin/sh\nexec /usr/lib/quiesce/freeze\n"
    box.write("/etc/google/snapshots/pre.sh", script, 0o700)
    box.write("/etc/google/snapshots/post.sh", "#!/bin/sh\necho edited by the administrator\n", 0o700)
    box.write("/srv/theirs", script)
    os.makedirs(box("/usr/local/sbin"))
    os.symlink("/srv/theirs", box("/usr/local/sbin/pre_freeze"))
    digest = hashlib.sha256(script.encode()).hexdigest()
    box.write(helpers.HOOK_RECORD, "dir /etc/google\ndir /etc/google/snapshots\n"
              "file /etc/google/snapshots/pre.sh %s\nfile /etc/google/snapshots/post.sh %s\n"
              "file /usr/local/sbin/pre_freeze %s\n" % (digest, digest, digest))
    box.run("debian/postrm", "purge")
    assert not os.path.lexists(box("/etc/google/snapshots/pre.sh"))
    assert os.path.isfile(box("/etc/google/snapshots/post.sh")), "a changed file was removed"
    assert os.path.islink(box("/usr/local/sbin/pre_freeze")) and os.path.isfile(box("/srv/theirs"))
    assert not os.path.lexists(box(helpers.STATE_DIR))


def _plant_metrics_and_state(box):
    """What freezes leave in the state directory and node_exporter's textfile directories,
    beside files that are not quiesce's; returns the paths that must stay."""
    debian_dir, fedora_dir = pytest.importorskip("quiesce.base.paths").METRICS_DIRS
    box.write(debian_dir + "/quiesce.prom", "quiesce_last_success 1\n")
    box.write(debian_dir + "/.quiesce.prom.4242.tmp", "quiesce_last")
    box.write(debian_dir + "/other.prom", "theirs 1\n")
    box.write("/srv/elsewhere.prom", "theirs 1\n")
    os.makedirs(box(fedora_dir))
    os.symlink("/srv/elsewhere.prom", box(fedora_dir + "/quiesce.prom"))
    for name in ("position.json", "position-reports.json", "history.jsonl", "history.lock", "lock",
                 ".history.jsonl.4242.tmp", ".position.json.4242.tmp", ".quiesce-fsprobe-1081-25d3"):
        box.write(helpers.STATE_DIR + "/" + name, "{}")
    return [debian_dir + "/other.prom", fedora_dir + "/quiesce.prom", "/srv/elsewhere.prom"]


def _left_in(box, *directories):
    return sorted(os.path.join(top, name)[len(box.root):] for d in directories
                  for top, _dirs, files in os.walk(box(d)) for name in files)


def test_purge_removes_the_state_and_our_metrics_textfile_only(tmp_path):
    box = BusyboxRoot(tmp_path / "root")
    keep = _plant_metrics_and_state(box)
    box.run("debian/postrm", "purge")
    assert not os.path.lexists(box(helpers.STATE_DIR))
    assert _left_in(box, "/var/lib", "/srv") == sorted(keep)


def test_rpm_erase_removes_the_state_and_our_metrics_textfile_only(tmp_path):
    if not shutil.which("rpmspec"):
        pytest.skip("rpmspec (rpm) is not installed")
    box = BusyboxRoot(tmp_path / "root")
    keep = _plant_metrics_and_state(box)
    spec = subprocess.run(["rpmspec", "-P", os.path.join(REPO, "rpm", "quiesce.spec")], stdout=subprocess.PIPE,
                          text=True, check=True, env=helpers.clean_env()).stdout
    # The erase scriptlets ($1 = 0), as rpm runs them; the package's own files are gone by %postun.
    for section in ("preun", "postun"):
        body = spec.split("\n%%%s\n" % section, 1)[1].split("\n%", 1)[0]
        box.run(None, "0", text="#!/bin/sh\n" + body + "\n")
    assert _left_in(box, "/var/lib", "/srv") == sorted(keep)


def test_every_auto_textfile_directory_is_cleaned_by_both_packages():
    for script in ("debian/postrm", "rpm/quiesce.spec"):
        text = read(script).replace("%{_localstatedir}", "/var")
        for directory in pytest.importorskip("quiesce.base.paths").METRICS_DIRS:
            assert directory in text, (script, directory)


def test_code_parses_as_python_3_9():
    """The one noarch RPM runs on RHEL 9's Python 3.9 as well as on newer ones."""
    for top, _dirs, files in os.walk(os.path.join(REPO, "quiesce")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(top, name)
                with open(path) as handle:
                    ast.parse(handle.read(), path, feature_version=(3, 9))


def test_both_packages_ship_the_bash_completion():
    assert "completion/quiesce usr/share/bash-completion/completions\n" in read("debian/quiesce.install")
    spec = read("rpm/quiesce.spec")
    assert "install -D -p -m 0644 completion/quiesce %{buildroot}%{bash_completions_dir}/quiesce\n" in spec
    assert re.search(r"(?m)^%\{bash_completions_dir\}/quiesce$", spec)
    # Where neither rpm nor the distribution defines the macro: the standard directory.
    assert "%{!?bash_completions_dir:%global bash_completions_dir %{_datadir}/bash-completion/completions}" in spec
    # What the package tests check of the installed file, here on the source.
    helpers.assert_completion_works(os.path.join(REPO, "completion", "quiesce"))


def test_quiesce_8_names_every_option_and_environment_variable_of_the_parsers():
    config = pytest.importorskip("quiesce.base.config")
    page8 = read("man/quiesce.8")
    environment = page8[page8.index(".SH ENVIRONMENT"):page8.index(".SH FILES")]
    for option in config.OPTIONS:
        if option.kwargs.get("help") == argparse.SUPPRESS:
            continue  # --root, --instance: for the tests
        assert "\\-\\-" + option.key.replace("-", "\\-") in page8, option.key
        name = config.env_var(option)
        if name and option.sources == config._ENV_ONLY:
            # Read from the environment but not a config-file key: each has its own entry.
            assert re.search(r"(?m)^\.B %s$" % name, environment), name
        if option.sources == config._COMMAND_LINE:
            assert "QUIESCE_" + option.key.upper().replace("-", "_") not in page8, option.key
    named = set(re.findall(r"(?m)^\.B (QUIESCE_[A-Z_]+)$", environment))
    assert named == {config.env_var(o) for o in config.OPTIONS if o.sources == config._ENV_ONLY}
