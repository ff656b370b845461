"""What quiesce check says about snapshot agents: which are on this machine (packages,
services, their files), whether quiesce is wired into each, legacy scripts that lock
MySQL themselves, and waits that cannot fit an agent's timeout."""

import configparser
import glob
import json
import os
import re
import stat
import subprocess
from typing import Callable, List, Tuple

from quiesce.agents import catalog, register
from quiesce.base import budget, paths
from quiesce.base.config import Settings
from quiesce.base.errors import ConfigError

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


def detect_agent(agent: catalog.Agent, root: str = "",
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


def systemd_booted(root: str = "") -> bool:
    """sd_booted(3): this directory exists only while systemd is the init system."""
    return os.path.isdir(root + "/run/systemd/system")


def _unit_reads(root: str, unit: str, path: str) -> bool:
    """Whether a systemd unit (or a drop-in of it) names path as its EnvironmentFile."""
    files = []
    for directory in SYSTEMD_UNIT_DIRS:
        files.append("%s%s/%s" % (root, directory, unit))
        files.extend(sorted(glob.glob("%s%s/%s.d/*.conf" % (root, directory, unit))))
    pattern = re.compile(r"(?m)^\s*EnvironmentFile\s*=\s*-?%s\s*$" % re.escape(path))
    for name in files:
        try:
            with open(name, encoding="utf-8", errors="replace") as handle:
                if pattern.search(handle.read()):
                    return True
        except OSError:
            continue
    return False


def qemu_ga_runs_hooks(root: str = "") -> bool:
    """Whether qemu-ga, as it is really started, runs its fsfreeze hook (-F)."""
    for pattern, switch in catalog.QEMU_GA_HOOK_SWITCHES:
        # Debian's /etc/default file is read by the SysV script only; systemd's unit
        # ignores it unless a unit or drop-in names it.
        if pattern == catalog.QEMU_GA_SYSV_DEFAULTS and systemd_booted(root) and \
                not _unit_reads(root, catalog.QEMU_GA_UNIT, pattern):
            continue
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


def agent_wiring(agent: catalog.Agent, root: str = "") -> Tuple[bool, List[str]]:
    """(wired, problems): whether the agent will run quiesce, and what stops it."""
    problems: List[str] = []
    if agent is catalog.AWS:
        return False, ["configured in the AWS Data Lifecycle Manager policy, not here: use the SSM document "
                       "in /usr/share/doc/quiesce/examples (see quiesce(8), SNAPSHOT AGENTS)"]
    if agent is catalog.AZURE:
        return _azure_wiring(root)
    files = [h for h in agent.files if h.kind != "azure-config"]
    if agent.files and agent.files[0].kind == "link":
        directories = {os.path.dirname(h.path) for h in files}
        wired = any(_runs_quiesce(os.path.join(root + d, name)) for d in directories
                    if os.path.isdir(root + d) for name in os.listdir(root + d))
        if agent is catalog.QEMU_GA and wired and not qemu_ga_runs_hooks(root):
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
    if agent is catalog.GCE and wired:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(root + catalog.GCE_CONFIG, encoding="utf-8")
            enabled = parser.get("Snapshots", "enabled", fallback="false").strip().lower() == "true"
        except configparser.Error:
            enabled = False
        if not enabled:
            problems.append("the guest agent runs the scripts only with [Snapshots] enabled = true in %s "
                            "(and snapshots taken with --guest-flush)" % catalog.GCE_CONFIG)
    return wired, problems


def _azure_wiring(root: str) -> Tuple[bool, List[str]]:
    workload = register.azure_workload(register.Layout(root, paths.LIB_DIR))
    if workload:
        return False, ["%s names workload_name = %s: Azure bypasses the script plugin" %
                       (catalog.AZURE_WORKLOAD_CONF, workload)]
    path = root + catalog.AZURE_CONFIG
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        return False, []
    except (OSError, ValueError) as exc:
        return False, ["%s is unreadable (%s): Azure ignores it" % (catalog.AZURE_CONFIG, exc)]
    problems = []
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) not in (0o600, 0o400):
        problems.append("%s must be root-owned mode 0600 or 0400 (Azure silently ignores it otherwise)"
                        % catalog.AZURE_CONFIG)
    scripts = [config.get("preScriptLocation"), config.get("postScriptLocation")]
    for script in scripts:
        if not script or not _private_root_file(root + str(script)):
            problems.append("script %s must exist, root-owned, without group or other permissions" % script)
    wired = not problems and all(_runs_quiesce(root + str(s)) for s in scripts)
    return wired, problems


def legacy_lock_scripts(root: str = "") -> List[str]:
    """VMware's legacy single scripts that are not ours but lock MySQL by themselves."""
    found = []
    for path in catalog.LEGACY_VMWARE:
        real = root + path
        if not os.path.isfile(real) or _runs_quiesce(real):
            continue
        try:
            with open(real, "rb") as handle:
                text = handle.read(1 << 20).decode("utf-8", "replace").lower()
        except OSError:
            continue
        if any(sign in text for sign in catalog.MYSQL_LOCK_SIGNS):
            found.append(path)
    return found


def budget_warnings(settings: Settings, detected: List[catalog.Agent], root: str = "") -> List[str]:
    """Agents whose timeout the configured waits cannot fit."""
    limit_s = budget.freeze_budget(settings)
    warnings = []
    for agent in detected:
        limit = agent.timeout
        if agent is catalog.AZURE:
            try:
                with open(root + catalog.AZURE_CONFIG, encoding="utf-8") as handle:
                    limit = int(json.load(handle).get("timeoutInSeconds", 10))
            except (OSError, ValueError, AttributeError):
                limit = 10
        if limit is not None and limit_s >= limit:
            warnings.append("%s gives freeze %d s, but its waits may take %.0f s (see quiesce(8), SNAPSHOT AGENTS, "
                            "for the sum); the agent then kills it or snapshots without the lock; fix: raise the "
                            "agent's timeout or lower connect-timeout, long-query-wait and acquire-timeout"
                            % (agent.title, limit, limit_s))
    return warnings


def check_agents(report, settings: Settings, root: str = "",
                 installed: Callable[[str], bool] = package_installed) -> None:
    detected = []
    for agent in catalog.ALL:
        evidence = detect_agent(agent, root, installed)
        if not evidence:
            continue
        detected.append(agent)
        wired, problems = agent_wiring(agent, root)
        if wired and not problems:
            report.ok("agent %s (%s): quiesce is wired in" % (agent.title, ", ".join(evidence)))
            continue
        if wired:
            text = "agent %s: quiesce is wired in, but %s" % (agent.title, "; ".join(problems))
        else:
            hint = ("fix: quiesce register %s" % agent.name) if agent.registerable else ""
            text = "agent %s (%s): quiesce is NOT wired in%s" % (
                agent.title, ", ".join(evidence), "".join("; " + p for p in problems + [hint] if p))
        # The next snapshot through this agent would not be application-consistent: that
        # is check's verdict. Where the wiring lives outside this machine, only a warning.
        if agent.registerable:
            report.fail(ConfigError(text))
        else:
            report.warn(text)
    for path in legacy_lock_scripts(root):
        report.warn("%s locks MySQL by itself (VMware Tools runs it before every quiesced snapshot, beside "
                    "quiesce): two locks, or a freeze that fails; fix: remove its MySQL part" % path)
    # Schedulers (sanoid, zrepl, Velero, ...) are configured by hand: their hook timeout
    # must be at least this, so say it even where no agent is detected.
    report.ok("freeze budget: a freeze answers within %.0f s with these settings (the least timeout a "
              "pre-snapshot hook needs)" % budget.freeze_budget(settings))
    for warning in budget_warnings(settings, detected, root):
        report.warn(warning)
