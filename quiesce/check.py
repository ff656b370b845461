"""quiesce check: the preflight a sysadmin runs after installing or changing the config."""

import configparser
import glob
import json
import os
import re
import stat
import subprocess
import sys
import time
from typing import Callable, List, Optional, Tuple

from . import agents, db, locking, paths, register, selinux, serverinfo, state
from .config import Settings
from .errors import ConfigError, ConnectError, Exit, PrivilegeError, QuiesceError


class _Report:
    def __init__(self) -> None:
        self.failure: Optional[QuiesceError] = None

    def ok(self, text: str) -> None:
        print("ok    %s" % text)

    def warn(self, text: str) -> None:
        print("WARN  %s" % text)

    def fail(self, error: QuiesceError) -> None:
        print("FAIL  %s" % error)
        if self.failure is None:
            self.failure = error


def hook_registrations(hook_dirs=paths.HOOK_DIRS, legacy=paths.LEGACY_HOOKS,
                       targets=(paths.HOOK, paths.QEMU_GA_HOOK, paths.VMWARE_HOOK, paths.FREEZE, paths.THAW)
                       ) -> List[Tuple[str, str]]:
    """(runner, path) of every hook entry that leads to our hook or scripts."""
    ours = {os.path.realpath(p) for p in targets}
    found = []
    for runner, directory in hook_dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            entry = os.path.join(directory, name)
            if os.path.realpath(entry) in ours:
                found.append((runner, entry))
    for runner, script in legacy:
        if os.path.lexists(script) and os.path.realpath(script) in ours:
            found.append((runner, script))
    return found


def hook_warnings(registrations: List[Tuple[str, str]], record: str = paths.HOOK_RECORD,
                  hook_dirs=paths.HOOK_DIRS) -> List[str]:
    """Things in the hook directories that will bite at the next snapshot."""
    warnings = []
    created = set()
    try:
        with open(record, encoding="utf-8") as handle:
            created = {line.split(" ", 1)[1].strip() for line in handle if line.startswith("link ")}
    except OSError:
        pass
    registered = {entry for _runner, entry in registrations}
    entry_files = {"vmware-tools": paths.VMWARE_HOOK, "qemu-guest-agent": paths.QEMU_GA_HOOK}
    for link in sorted(created - registered):
        if not os.path.lexists(link):
            target = next((entry_files.get(runner, paths.HOOK) for runner, directory in hook_dirs
                           if os.path.dirname(link) == directory), paths.HOOK)
            warnings.append("hook link %s was removed by the administrator; the package will not re-create it "
                            "(to register again: ln -s %s %s)" % (link, target, link))
    for runner, directory in hook_dirs:
        if runner != "vmware-tools" or not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            entry = os.path.join(directory, name)
            if name.endswith((".dpkg-old", ".dpkg-dist", ".dpkg-new", ".rpmsave", ".rpmnew", "~", ".bak")):
                warnings.append("%s: VMware Tools runs every file there, leftovers included; fix: remove it" % entry)
    runners = [runner for runner, _entry in registrations]
    if any(r.startswith("vmware-tools (legacy") for r in runners) and "vmware-tools" in runners:
        warnings.append("quiesce is registered both as a legacy pre-freeze script and in backupScripts.d: the "
                        "second freeze only joins the first one's lock; fix: keep one of them")
    return warnings


# ------------------------------------------------------------------ snapshot agents

SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
PACKAGE_QUERY_TIMEOUT = 10.0


def package_installed(name: str) -> bool:
    """Asks dpkg, else rpm; bounded in time."""
    for command in (["dpkg-query", "-W", "-f=${db:Status-Status}", name], ["rpm", "-q", "--quiet", name]):
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, timeout=PACKAGE_QUERY_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if command[0] == "dpkg-query":
            if done.stdout.strip() == b"installed":
                return True
        elif done.returncode == 0:
            return True
    return False


def detect_agent(agent: agents.Agent, root: str = "",
                 installed: Callable[[str], bool] = package_installed) -> List[str]:
    """The evidence that an agent is on this machine (packages, services, files)."""
    found = ["package %s" % name for name in agent.packages if installed(name)]
    for service in agent.services:
        if any(os.path.exists("%s%s/%s.service" % (root, d, service)) for d in SYSTEMD_UNIT_DIRS):
            found.append("service %s" % service)
    for marker in agent.markers:
        found.extend(path[len(root):] for path in sorted(glob.glob(root + marker)))
    return found


def _runs_quiesce(path: str) -> bool:
    """A hook file that is, or runs, one of our entry points."""
    if os.path.realpath(path).startswith(paths.LIB_DIR + "/"):
        return True
    try:
        with open(path, "rb") as handle:
            return paths.LIB_DIR.encode() in handle.read(65536)
    except OSError:
        return False


def qemu_ga_runs_hooks(root: str = "") -> bool:
    """Whether qemu-ga is configured to run its fsfreeze hook (-F) anywhere we know of."""
    for pattern, switch in agents.QEMU_GA_HOOK_SWITCHES:
        for path in glob.glob(root + pattern):
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    if re.search(switch, handle.read()):
                        return True
            except OSError:
                continue
    return False


def _private_root_file(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == 0 and not st.st_mode & 0o077


def agent_wiring(agent: agents.Agent, root: str = "") -> Tuple[bool, List[str]]:
    """(wired, problems): whether the agent will run quiesce, and what stops it."""
    problems: List[str] = []
    if agent is agents.AWS:
        return False, ["configured in the AWS Data Lifecycle Manager policy, not here: use the SSM document "
                       "in /usr/share/doc/quiesce/examples (see quiesce(8), SNAPSHOT AGENTS)"]
    if agent is agents.AZURE:
        return _azure_wiring(root)
    files = [h for h in agent.files if h.kind != "azure-config"]
    if agent.files and agent.files[0].kind == "link":
        directories = {os.path.dirname(h.path) for h in files}
        wired = any(_runs_quiesce(os.path.join(root + d, name)) for d in directories
                    if os.path.isdir(root + d) for name in os.listdir(root + d))
        if agent is agents.QEMU_GA and wired and not qemu_ga_runs_hooks(root):
            problems.append("qemu-ga runs hook scripts only when started with -F; fix: put '[general]' and "
                            "'fsfreeze-hook = /etc/qemu/fsfreeze-hook' in /etc/qemu/qemu-ga.conf (Fedora, RHEL: "
                            "FSFREEZE_HOOK_PATHNAME in /etc/sysconfig/qemu-ga), then restart it")
        return wired, problems
    present = [h for h in files if os.path.lexists(root + h.path)]
    wired = bool(files) and all(_runs_quiesce(root + h.path) for h in files)
    for hook in present:
        if not _runs_quiesce(root + hook.path):
            problems.append("%s exists and does not run quiesce" % hook.path)
        elif hook.mode and not _private_root_file(root + hook.path):
            problems.append("%s must be root-owned mode %04o; fix: quiesce unregister %s && quiesce register %s"
                            % (hook.path, hook.mode, agent.name, agent.name))
            wired = False
    if agent is agents.GCE and wired:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(root + agents.GCE_CONFIG, encoding="utf-8")
            enabled = parser.get("Snapshots", "enabled", fallback="false").strip().lower() == "true"
        except configparser.Error:
            enabled = False
        if not enabled:
            problems.append("the guest agent runs the scripts only with [Snapshots] enabled = true in %s "
                            "(and snapshots taken with --guest-flush)" % agents.GCE_CONFIG)
    return wired, problems


def _azure_wiring(root: str) -> Tuple[bool, List[str]]:
    workload = register.azure_workload(register.Layout(root, paths.LIB_DIR))
    if workload:
        return False, ["%s names workload_name = %s: Azure bypasses the script plugin" %
                       (agents.AZURE_WORKLOAD_CONF, workload)]
    path = root + agents.AZURE_CONFIG
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        return False, []
    except (OSError, ValueError) as exc:
        return False, ["%s is unreadable (%s): Azure ignores it" % (agents.AZURE_CONFIG, exc)]
    problems = []
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) not in (0o600, 0o400):
        problems.append("%s must be root-owned mode 0600 or 0400 (Azure silently ignores it otherwise)"
                        % agents.AZURE_CONFIG)
    scripts = [config.get("preScriptLocation"), config.get("postScriptLocation")]
    for script in scripts:
        if not script or not _private_root_file(root + str(script)):
            problems.append("script %s must exist, root-owned, without group or other permissions" % script)
    wired = not problems and all(_runs_quiesce(root + str(s)) for s in scripts)
    return wired, problems


def legacy_lock_scripts(root: str = "") -> List[str]:
    """VMware's legacy single scripts that are not ours but lock MySQL by themselves."""
    found = []
    for path in agents.LEGACY_VMWARE:
        real = root + path
        if not os.path.isfile(real) or _runs_quiesce(real):
            continue
        try:
            with open(real, "rb") as handle:
                text = handle.read(1 << 20).decode("utf-8", "replace").lower()
        except OSError:
            continue
        if any(sign in text for sign in agents.MYSQL_LOCK_SIGNS):
            found.append(path)
    return found


def budget_warnings(settings: Settings, detected: List[agents.Agent], root: str = "") -> List[str]:
    """Agents whose timeout the configured waits cannot fit."""
    budget = register.freeze_budget(settings)
    warnings = []
    for agent in detected:
        limit = agent.timeout
        if agent is agents.AZURE:
            try:
                with open(root + agents.AZURE_CONFIG, encoding="utf-8") as handle:
                    limit = int(json.load(handle).get("timeoutInSeconds", 10))
            except (OSError, ValueError, AttributeError):
                limit = 10
        if limit is not None and budget >= limit:
            warnings.append("%s gives freeze %d s, but the configured waits may take %.0f s (2 x connect-timeout "
                            "+ long-query-wait + acquire-timeout + 2, per server); the agent then kills it or "
                            "snapshots without the lock; fix: lower those settings (see quiesce(8), SNAPSHOT "
                            "AGENTS)" % (agent.title, limit, budget))
    return warnings


def check_agents(report: "_Report", settings: Settings, root: str = "",
                 installed: Callable[[str], bool] = package_installed) -> None:
    detected = []
    for agent in agents.ALL:
        evidence = detect_agent(agent, root, installed)
        if not evidence:
            continue
        detected.append(agent)
        wired, problems = agent_wiring(agent, root)
        if wired and not problems:
            report.ok("agent %s (%s): quiesce is wired in" % (agent.title, ", ".join(evidence)))
        elif wired:
            report.warn("agent %s: quiesce is wired in, but %s" % (agent.title, "; ".join(problems)))
        else:
            hint = ("fix: quiesce register %s" % agent.name) if agent.registerable else ""
            report.warn("agent %s (%s): quiesce is NOT wired in%s" % (
                agent.title, ", ".join(evidence), "".join("; " + p for p in problems + [hint] if p)))
    for path in legacy_lock_scripts(root):
        report.warn("%s locks MySQL by itself (VMware Tools runs it before every quiesced snapshot, beside "
                    "quiesce): two locks, or a freeze that fails; fix: remove its MySQL part" % path)
    for warning in budget_warnings(settings, detected, root):
        report.warn(warning)


def _check_target(report: _Report, target, settings: Settings) -> None:
    try:
        conn = locking.connect(target, settings)
    except QuiesceError as exc:
        report.fail(exc)
        return
    try:
        row = conn.query("SELECT VERSION() AS version, @@version_comment AS comment")[0]
        server = serverinfo.identify(str(row["version"]), str(row["comment"] or ""))
        method = serverinfo.choose_lock_method(server, settings.lock_method)
        report.ok("%s: connected to %s at %s as %s (driver %s); lock method %s"
                  % (target.name, server.label, target.address, target.user, conn.driver, method))
        info = conn.query(serverinfo.DURABILITY_STATEMENT)[0]
        binlog_on = str(info.get("log_bin")) in ("1", "ON")
        replica = False
        try:
            replica = bool(conn.query(serverinfo.replica_status_statement(server)))
        except db.DbError:
            pass
        grants = [str(list(r.values())[0]) for r in conn.query("SHOW GRANTS FOR CURRENT_USER()")]
        required, recommended = serverinfo.missing_privileges(
            server, serverinfo.global_privileges(grants), method, binlog_on, replica,
            settings.kill_long_selects > 0, settings.stop_replica != "never")
        if required:
            report.fail(PrivilegeError("%s: user %r lacks %s; fix: GRANT %s ON *.* TO the account"
                                       % (target.name, target.user, ", ".join(required), ", ".join(required))))
        else:
            report.ok("%s: privileges suffice for %s" % (target.name, method))
        if recommended:
            report.warn("%s: also useful: GRANT %s ON *.* (process list, replica control, killing long SELECTs)"
                        % (target.name, ", ".join(recommended)))
        if binlog_on:
            try:
                rows = conn.query(serverinfo.binlog_status_statement(server))
                coordinates = serverinfo.binlog_coordinates(rows)
                report.ok("%s: binary log on, now at %s:%s" % (target.name, coordinates["binlog_file"],
                                                               coordinates["binlog_position"]))
            except db.DbError as exc:
                report.warn("%s: binary log on, but coordinates unreadable: %s" % (target.name, exc.message))
        else:
            report.ok("%s: binary log off (positions will be recorded as null)" % target.name)
        if replica:
            report.ok("%s: this server is a replica; its source coordinates are recorded too" % target.name)
        for warning in serverinfo.durability_warnings(info):
            report.warn("%s: %s" % (target.name, warning))
    except db.DbError as exc:
        report.fail(ConnectError("%s: %s" % (target.name, exc)))
    finally:
        conn.close()


def _cycle(report: _Report, settings: Settings) -> None:
    from . import freeze, thaw
    files = state.RuntimeFiles(settings.runtime_dir)
    started = time.monotonic()
    try:
        freeze.run(settings)
        frozen = time.monotonic()
        holder = files.read_state()
        thaw.run(settings)
    except QuiesceError as exc:
        report.fail(exc)
        return
    done = time.monotonic()
    # thaw is answered before the holder records its result: wait for the holder to end.
    if holder is not None and not state.wait_holder_gone(holder, 10.0):
        report.warn("freeze/thaw cycle: the holder did not end within 10 s after thaw")
    result = files.read_result() or {}
    report.ok("freeze/thaw cycle: freeze took %.0f ms, thaw %.0f ms; writes were blocked for %s ms"
              % ((frozen - started) * 1000, (done - frozen) * 1000, result.get("held_ms")))


def _tool_output(argv: List[str]) -> str:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def check_selinux(report: "_Report", registrations: List[Tuple[str, str]]) -> None:
    """Will the agents' confined domains be allowed to run the entry files our links lead to?"""
    entries = sorted({os.path.realpath(entry) for _runner, entry in registrations} & set(selinux.ENTRY_TYPES))
    enforce = _tool_output(["getenforce"]) if entries else ""
    mode = selinux.parse_getenforce(enforce)
    if mode in (None, selinux.DISABLED):
        return
    found = selinux.report(enforce, _tool_output(["ls", "-Z", "--", *entries]),
                           _tool_output(["getsebool", selinux.QEMU_GA_BOOLEAN]), entries)
    for finding in found:
        if finding.ok:
            report.ok(finding.text)
        elif mode == selinux.ENFORCING:
            report.fail(ConfigError(finding.text))
        else:
            report.warn(finding.text)


def run(settings: Settings) -> int:
    report = _Report()
    report.ok("config: %s" % (settings.config_file or "no config file, built-in defaults"))
    try:
        present = state.ensure_runtime_dir(settings.runtime_dir, create=False)
        report.ok("runtime-dir %s %s" % (settings.runtime_dir, "is safe" if present else "will be created"))
    except QuiesceError as exc:
        report.fail(exc)
    registrations = hook_registrations()
    if registrations:
        for runner, entry in registrations:
            report.ok("hook registered with %s: %s" % (runner, entry))
    else:
        report.warn("hook not registered with any hook runner (%s)"
                    % ", ".join(sorted({d for _r, d in paths.HOOK_DIRS})))
    for warning in hook_warnings(registrations):
        report.warn(warning)
    check_agents(report, settings, settings.root.rstrip("/"))
    check_selinux(report, registrations)
    for target in settings.targets:
        _check_target(report, target, settings)
    if settings.cycle and report.failure is None:
        _cycle(report, settings)
    sys.stdout.flush()
    if report.failure is not None:
        return int(report.failure.exit_code)
    return int(Exit.OK)
