"""Building, installing and inspecting the real packages, for tests/packaging.

Everything here shells out to the distribution's own tools (dpkg-buildpackage, apt-get,
rpmbuild, rpm, dnf) with the system PATH and a clean environment: a pyenv Python or a
PYTHONPATH set for the unit tests must not leak into a package build or into the
installed program (snapshot agents start hooks with an almost empty environment too).
"""

import contextlib
import email.utils
import os
import re
import shutil
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MAINTAINER = "Quiesce Maintainers <maintainers@users.noreply.r-seed-e401b610.example>"

# What the package installs (the contract's paths).
HOOK = "/usr/lib/quiesce/hook"
# Each agent's own entry file (the file an agent executes carries its SELinux label).
VMWARE_HOOK = "/usr/lib/quiesce/vmware-hook"
QEMU_HOOK = "/usr/lib/quiesce/qemu-ga-hook"
LINK_NAME = "zz-quiesce"
VMWARE_DIR = "/etc/vmware-tools/backupScripts.d"
VMWARE_LINK = VMWARE_DIR + "/" + LINK_NAME
QEMU_DIR_DEBIAN = "/etc/qemu/fsfreeze-hook.d"
QEMU_DIR_RHEL = "/etc/qemu-ga/fsfreeze-hook.d"
CONFIG = "/etc/quiesce/quiesce.conf"
STATE_DIR = "/var/lib/quiesce"
RUNTIME_DIR = "/run/quiesce"
HOOK_RECORD = STATE_DIR + "/hooks"
POSITION_FILE = STATE_DIR + "/position.json"

# Paths that must not exist once the package is purged (Debian) or erased (RPM)
# on a machine where nothing else created them.
OURS_AFTER_PURGE = ("/etc/quiesce", STATE_DIR, RUNTIME_DIR, "/usr/lib/quiesce",
                    "/usr/sbin/quiesce", "/usr/lib/tmpfiles.d/quiesce.conf",
                    "/usr/share/man/man8/quiesce.8.gz", "/usr/share/man/man5/quiesce.conf.5.gz",
                    "/usr/share/doc/quiesce", VMWARE_DIR, "/etc/vmware-tools",
                    # metrics-file = auto: quiesce.prom in node_exporter's textfile directory.
                    "/var/lib/prometheus/node-exporter/quiesce.prom",
                    "/var/lib/node_exporter/textfile_collector/quiesce.prom")


def clean_env(**extra):
    """The environment a package tool or a hook runner gets: PATH, LANG, nothing else."""
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root",
           "DEBIAN_FRONTEND": "noninteractive", "TMPDIR": "/tmp"}
    env.update(extra)
    return env


class CommandFailed(AssertionError):
    pass


COMPLETION = "/usr/share/bash-completion/completions/quiesce"
EXAMPLES_DIR = "/usr/share/doc/quiesce/examples"


def example_files():
    """(installed path, executable) of every file under examples/ in the source tree."""
    found = []
    top = os.path.join(REPO, "examples")
    for directory, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(directory, name)
            found.append((EXAMPLES_DIR + "/" + os.path.relpath(path, top), os.access(path, os.X_OK)))
    return sorted(found)


def bash_completes(script, *words):
    """What bash offers, with the completion script sourced, for the last of quiesce's words."""
    program = ('source "$1"; shift; COMP_WORDS=(quiesce "$@"); COMP_CWORD=$#; _quiesce; '
               'printf "%s\\n" "${COMPREPLY[@]}"')
    out = run(["bash", "--norc", "--noprofile", "-c", program, "bash", script] + list(words),
              env=clean_env()).stdout
    return sorted(filter(None, out.split("\n")))


def assert_completion_works(script):
    """The shipped completion script completes commands, agents and option values."""
    assert bash_completes(script, "reg") == ["register"]
    assert "vmware" in bash_completes(script, "register", "")
    assert bash_completes(script, "status", "--j") == ["--json"]
    assert bash_completes(script, "freeze", "--on-failure", "c") == ["continue"]
    complete = run(["bash", "--norc", "--noprofile", "-c", 'source "$1"; complete -p quiesce', "bash", script],
                   env=clean_env()).stdout
    assert complete.strip() == "complete -F _quiesce quiesce"


def run(cmd, check=True, timeout=600, env=None, cwd=None, input=None):
    """Run cmd; return the CompletedProcess (text, stdout and stderr merged)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env if env is not None else clean_env(),
                          stdin=subprocess.DEVNULL if input is None else None, input=input,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandFailed("%s exited %d:\n%s" % (" ".join(map(str, cmd)), proc.returncode,
                                                   proc.stdout[-6000:]))
    return proc


def is_root():
    return os.geteuid() == 0


def have(program):
    return shutil.which(program, path=SYSTEM_PATH) is not None


# ---------------------------------------------------------------------------
# Debian package state
# ---------------------------------------------------------------------------

def dpkg_status(package):
    """'installed', 'config-files', 'triggers-pending', ... or None if unknown."""
    proc = run(["dpkg-query", "-W", "-f=${db:Status-Status}", package], check=False)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() != "not-installed" else None


def installed_packages():
    out = run(["dpkg-query", "-W", "-f=${Package}:${Architecture} ${db:Status-Status}\n"]).stdout
    return {line.split()[0] for line in out.splitlines()
            if line.split()[1:] and line.split()[1] != "not-installed"}


# Wait for the dpkg lock rather than fail if another apt or dpkg is running.
APT_OPTIONS = ["-y", "-q", "-o", "Dpkg::Use-Pty=0", "-o", "DPkg::Lock::Timeout=300"]


def apt_get(*args, timeout=900):
    return run(["apt-get"] + APT_OPTIONS + list(args), timeout=timeout)


def apt_install(*args):
    """apt-get install; if that fails (no or stale package lists), update and retry once."""
    proc = run(["apt-get"] + APT_OPTIONS + ["install"] + list(args), check=False, timeout=900)
    if proc.returncode == 0:
        return proc
    run(["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "update"], timeout=600)
    return apt_get("install", *args)


def missing_apt_packages(packages):
    """The Debian packages of `packages` that are not installed."""
    return [p for p in packages if dpkg_status(p) != "installed"]


def apt_mirrors():
    """(main URI, security URI or None) of Debian 12 as this machine's apt is set up."""
    out = run(["apt-cache", "policy"]).stdout
    main = security = None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit():
            uri, dist = fields[1], fields[2]
            if dist == "bookworm/main" and main is None:
                main = uri
            elif dist == "bookworm-security/main" and security is None:
                security = uri
    return main, security


@contextlib.contextmanager
def services_not_started():
    """Keep package installs from starting services (vmtoolsd, qemu-ga) on this machine."""
    path = "/usr/sbin/policy-rc.d"
    if os.path.exists(path):
        yield
        return
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n# tests/packaging: no service starts during package tests\nexit 101\n")
    os.chmod(path, 0o755)
    try:
        yield
    finally:
        os.unlink(path)


@contextlib.contextmanager
def machine_restored(note=print):
    """Purge every package installed inside the block (and quiesce), as it was before."""
    before = installed_packages()
    try:
        yield
    finally:
        if dpkg_status("quiesce"):
            apt_get("purge", "quiesce")
        added = sorted(installed_packages() - before)
        if added:
            note("purging packages the tests installed: %s" % " ".join(added))
            apt_get("purge", *added)


# ---------------------------------------------------------------------------
# Source tree and versions
# ---------------------------------------------------------------------------

def copy_tree(dest):
    """Copy the work tree as git sees it (tracked and new files, nothing ignored)."""
    os.makedirs(dest)
    if os.path.isdir(os.path.join(REPO, ".git")) and have("git"):
        out = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
        names = sorted({n for n in out.split("\0") if n})
    else:
        names = []
        for top, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".deps", "build", ".pytest_cache")]
            names.extend(os.path.relpath(os.path.join(top, f), REPO) for f in files)
    for name in names:
        src = os.path.join(REPO, name)
        if not os.path.lexists(src):
            continue  # deleted in the work tree, not yet in git
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


def _sources(package_dir):
    for directory, dirs, files in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def modules_without_bytecode(package_dir):
    """The installed modules with no .pyc beside them (in their folder's __pycache__)."""
    missing = []
    for source in _sources(package_dir):
        directory, name = os.path.split(source[:-3])
        cache = os.path.join(directory, "__pycache__")
        if not any(p.startswith(name + ".cpython-") and p.endswith(".pyc")
                   for p in (os.listdir(cache) if os.path.isdir(cache) else ())):
            missing.append(source)
    return missing


def bytecode_mtimes(package_dir):
    """Every .pyc under package_dir (each layer's __pycache__) with its mtime."""
    found = {}
    for directory, _dirs, files in os.walk(package_dir):
        if os.path.basename(directory) == "__pycache__":
            for name in files:
                found[os.path.join(directory, name)] = os.stat(os.path.join(directory, name)).st_mtime_ns
    return found


def debian_version(tree=REPO):
    with open(os.path.join(tree, "debian", "changelog")) as handle:
        return re.match(r"^quiesce \(([^)]+)\)", handle.readline()).group(1)


def spec_field(field, tree=REPO):
    with open(os.path.join(tree, "rpm", "quiesce.spec")) as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise LookupError(field)


def module_version(tree=REPO):
    with open(os.path.join(tree, "quiesce", "__init__.py")) as handle:
        return re.search(r"__version__\s*=\s*['\"]([^'\"]+)", handle.read()).group(1)


def add_changelog_entry(tree, version, text):
    path = os.path.join(tree, "debian", "changelog")
    with open(path) as handle:
        old = handle.read()
    entry = "quiesce (%s) unstable; urgency=medium\n\n  * %s\n\n -- %s  %s\n\n" % (
        version, text, MAINTAINER, email.utils.formatdate(usegmt=False))
    with open(path, "w") as handle:
        handle.write(entry + old)


# ---------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------

def build_deb_of_commit(workdir, commit):
    """The .deb of an earlier release, built from its commit (git archive) as it was."""
    src = os.path.join(workdir, "src")
    os.makedirs(src)
    run(["sh", "-c", "git -C '%s' archive --format=tar '%s' | tar -x -C '%s'" % (REPO, commit, src)])
    return build_deb(workdir, src=src)


def build_deb(workdir, version=None, config_append=None, src=None):
    """dpkg-buildpackage (source and binary) from a copy of the tree; paths of the results."""
    src = src or copy_tree(os.path.join(workdir, "src"))
    if version:
        add_changelog_entry(src, version, "Rebuild for the upgrade test.")
    if config_append:
        with open(os.path.join(src, "etc", "quiesce.conf"), "a") as handle:
            handle.write(config_append)
    version = debian_version(src)
    log = run(["dpkg-buildpackage", "-us", "-uc"], cwd=src, timeout=600).stdout
    results = {
        "deb": os.path.join(workdir, "quiesce_%s_all.deb" % version),
        "changes": [os.path.join(workdir, f) for f in os.listdir(workdir) if f.endswith(".changes")][0],
        "dsc": os.path.join(workdir, "quiesce_%s.dsc" % version),
        "version": version,
        "log": log,
    }
    assert os.path.isfile(results["deb"]), log[-3000:]
    return results


def build_rpm(workdir, release=None, config_append=None):
    """rpmbuild -ba from a tarball of a copy of the tree, as a distribution would."""
    version = spec_field("Version")
    name = "quiesce-%s" % version
    src = copy_tree(os.path.join(workdir, name))
    spec = os.path.join(src, "rpm", "quiesce.spec")
    if release:
        with open(spec) as handle:
            text = handle.read()
        text = re.sub(r"(?m)^Release:.*$", "Release:        %s%%{?dist}" % release, text)
        with open(spec, "w") as handle:
            handle.write(text)
    if config_append:
        with open(os.path.join(src, "etc", "quiesce.conf"), "a") as handle:
            handle.write(config_append)
    top = os.path.join(workdir, "rpmbuild")
    os.makedirs(os.path.join(top, "SOURCES"))
    run(["tar", "-C", workdir, "--owner=0", "--group=0", "-czf",
         os.path.join(top, "SOURCES", name + ".tar.gz"), name])
    # --nodeps: the BuildRequires are Fedora's package names; Debian's rpm database is
    # empty (the tools they stand for are Debian packages here, from `make deps`).
    log = run(["rpmbuild", "-ba", "--nodeps", "--define", "_topdir " + top,
               "--define", "_dbpath " + top + "/rpmdb", spec], timeout=600).stdout
    rpms = [os.path.join(top, "RPMS", "noarch", f) for f in os.listdir(os.path.join(top, "RPMS", "noarch"))]
    srpms = [os.path.join(top, "SRPMS", f) for f in os.listdir(os.path.join(top, "SRPMS"))]
    assert len(rpms) == 1 and len(srpms) == 1, log[-3000:]
    return {"rpm": rpms[0], "srpm": srpms[0], "spec": spec, "log": log}


STUB_SPEC = """\
Name:           %{stub_name}
Version:        %{?stub_version}%{!?stub_version:1}
Release:        1
Summary:        Stand-in for %{stub_name}
License:        MIT
BuildArch:      noarch
%{?stub_provides:Provides: %{stub_provides}}

%description
Stand-in package for the quiesce packaging tests.

%install
for d in %{?stub_dirs}; do mkdir -p %{buildroot}$d; done

%files
%{?stub_files}
"""


def build_stub_rpms(workdir, stubs):
    """Empty noarch packages: {name: {"provides": "...", "dirs": "...", "files": "..."}} -> {name: path}.

    "dirs" are created in the package, "files" (default: "dirs") are listed in %files;
    "name" (default: the key) is the package's name.
    """
    top = os.path.join(workdir, "stubs")
    os.makedirs(top, exist_ok=True)
    spec = os.path.join(top, "stub.spec")
    with open(spec, "w") as handle:
        handle.write(STUB_SPEC)
    paths = {}
    for name, opts in stubs.items():
        package = opts.get("name", name)
        cmd = ["rpmbuild", "-bb", "--quiet", "--define", "_topdir " + top, "--define", "_dbpath " + top + "/rpmdb",
               "--define", "stub_name " + package]
        if opts.get("provides"):
            cmd += ["--define", "stub_provides " + opts["provides"]]
        if opts.get("dirs"):
            cmd += ["--define", "stub_dirs " + opts["dirs"],
                    "--define", "stub_files " + opts.get("files", opts["dirs"])]
        if opts.get("version"):
            cmd += ["--define", "stub_version " + opts["version"]]
        run(cmd + [spec])
        paths[name] = os.path.join(top, "RPMS", "noarch", "%s-%s-1.noarch.rpm" % (package, opts.get("version", "1")))
        assert os.path.isfile(paths[name])
    return paths


# ---------------------------------------------------------------------------
# The distribution's MariaDB server
# ---------------------------------------------------------------------------

def piuparts(debs, tmp_path, suite, base, mirror, extra=()):
    """piuparts install, upgrade from the current version (served from a local repository,
    so apt installs it) to the newer one, and purge, in the chroot tarball `base`; its log."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["cp", debs["current"]["deb"], str(repo)])
    run(["sh", "-c", "dpkg-scanpackages --multiversion . >Packages"], cwd=str(repo))
    log = str(tmp_path / "piuparts.log")
    proc = run(["piuparts", "--distribution=%s" % suite, "--mirror=%s main" % mirror,
                "--basetgz=" + base, "--bindmount=" + str(repo),
                "--extra-repo=deb [trusted=yes] file://%s ./" % repo, *extra,
                "--log-file=" + log, debs["newer"]["deb"]], check=False, timeout=1200)
    with open(log) as handle:
        text = handle.read()
    assert proc.returncode == 0, text[-6000:]
    assert "PASS: Installation and purging test." in text
    assert "PASS: Installation, upgrade and purging tests." in text
    return text


def _mariadb(sql, timeout=30):
    return run(["mariadb", "--batch", "--skip-column-names", "-e", sql], check=False, timeout=timeout)


def mariadb_alive():
    return _mariadb("SELECT 1").returncode == 0


@contextlib.contextmanager
def system_mariadb(note=print):
    """The distribution's mariadb-server on its default socket; stopped again if we started it."""
    started = False
    if not mariadb_alive():
        run(["service", "mariadb", "start"], timeout=120)
        started = True
        deadline = time.monotonic() + 60
        while not mariadb_alive():
            assert time.monotonic() < deadline, "mariadb did not come up"
            time.sleep(0.5)
    try:
        yield
    finally:
        if started:
            proc = run(["service", "mariadb", "stop"], check=False, timeout=120)
            if proc.returncode != 0:
                note("could not stop mariadb: %s" % proc.stdout)


def sql(statement, timeout=30):
    """Run SQL as root over the socket; CompletedProcess (check it yourself)."""
    return _mariadb(statement, timeout=timeout)


# What `quiesce register` writes for the opt-in agents starts with this line; a run of the
# packaging tests cut short between register and remove leaves such files behind with the
# package (and its record of them) already gone.
REGISTERED_MARK = b"# Created by 'quiesce register "
OPT_IN_FILES = ("/etc/google/snapshots/pre.sh", "/etc/google/snapshots/post.sh",
                "/usr/local/sbin/pre_freeze", "/usr/local/sbin/post_thaw")


def remove_stale_registrations(note=print):
    """Remove our own opt-in agent files an interrupted earlier run left; never anyone else's."""
    for path in OPT_IN_FILES:
        try:
            with open(path, "rb") as handle:
                head = handle.read(512)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if head.startswith(b"#!/bin/sh\n" + REGISTERED_MARK):
            note("removing %s, left by an interrupted earlier run" % path)
            os.unlink(path)
    for directory in ("/etc/google/snapshots", "/etc/google"):
        if os.path.isdir(directory) and not os.listdir(directory):
            os.rmdir(directory)
