"""quiesce check: the preflight a sysadmin runs after installing or changing the config."""

import os
import subprocess
import sys
import time
from typing import List, Tuple

from quiesce.agents import selinux
from quiesce.agents.survey import check_agents
from quiesce.base import paths
from quiesce.base.config import Settings
from quiesce.base.errors import Busy, ConfigError, ConnectError, Exit, PrivilegeError, QuiesceError
from quiesce.base.report import Report
from quiesce.records import history, state
from quiesce.server import crashsafe, db, durable, locking, serverinfo, serverview


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


def _needed_by_freeze(recommended: List[str], settings: Settings, server) -> List[str]:
    """The lacking privileges without which the next freeze fails or cannot see what it must."""
    needed = [p for p in recommended if p == "PROCESS"]
    if settings.stop_replica == "always":
        needed += [p for p in recommended if p == serverinfo.replica_admin_privilege(server) and p not in needed]
    return needed


def _report_commit_block(report: Report, target, conn, server, settings: Settings) -> None:
    """Whether this server's snapshots would be consistent without blocking commits."""
    try:
        facts = crashsafe.read_facts(conn, server)
    except db.DbError as exc:
        report.warn("%s: cannot tell whether snapshots need the commit block: %s" % (target.name, exc.message))
        return
    frozen = crashsafe.reasons_against(facts, freezes_filesystems=True)
    unfrozen = crashsafe.reasons_against(facts, freezes_filesystems=False)
    saved = crashsafe.saved_ms(history.backups(history.recent(settings, 50)))
    gain = ""
    if saved:
        gain = " (the lock blocked commits for a median %.0f ms over the last %s)" % (
            saved[0], "snapshot" if saved[1] == 1 else "%d snapshots" % saved[1])
    if not unfrozen:
        report.ok("%s: crash-safe: a snapshot would be consistent without blocking commits, for every agent%s"
                  % (target.name, gain))
    elif not frozen:
        report.ok("%s: crash-safe for agents that freeze the filesystems (VMware Tools, qemu-ga, Azure): their "
                  "snapshots would be consistent without blocking commits%s; for the others not: %s"
                  % (target.name, gain, "; ".join(unfrozen)))
    else:
        report.ok("%s: snapshots need the commit block: %s" % (target.name, "; ".join(frozen)))


def _check_target(report: Report, target, settings: Settings) -> None:
    try:
        conn = locking.connect(target, settings)
    except QuiesceError as exc:
        report.fail(exc)
        return
    try:
        server = locking.identify_server(conn)
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
        needed = _needed_by_freeze(recommended, settings, server)
        if needed:
            report.fail(PrivilegeError("%s: user %r lacks %s, which freeze needs here (PROCESS: without it the "
                                       "long-statement check sees only its own sessions; replica control: "
                                       "stop-replica = always); fix: GRANT %s ON *.* TO the account"
                                       % (target.name, target.user, ", ".join(needed), ", ".join(needed))))
            recommended = [p for p in recommended if p not in needed]
        granted = serverinfo.global_privileges(grants)
        if server.flavour == serverinfo.MARIADB and str(info.get("innodb_flush_log_at_trx_commit")) == "0" and \
                not {"SUPER", "ALL"} & granted:
            report.fail(PrivilegeError("%s: %s" % (target.name, locking.trx_commit_0_problem("no SUPER"))))
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
        _report_commit_block(report, target, conn, server, settings)
        if target.is_local:
            _report_server_view(report, target, conn, info)
    except db.DbError as exc:
        report.fail(ConnectError("%s: %s" % (target.name, exc)))
    except QuiesceError as exc:
        # e.g. a lock-method this server cannot use: say so, and go on with the others.
        report.fail(type(exc)("%s: %s" % (target.name, exc)))
    except ValueError as exc:
        report.fail(ConnectError("%s: the server's answer was not understood (%s); fix: check that it is "
                                 "MySQL or MariaDB" % (target.name, exc)))
    finally:
        conn.close()


def _report_server_view(report: Report, target, conn, info) -> None:
    """Where the local server's files are, as freeze will drain, sync and probe them."""
    view = serverview.view_of(conn.peer_pid())
    files = durable.server_files(info, view)
    unseen = locking.unseen_server(target, view, files)
    if unseen:
        report.warn("%s: %s" % (target.name, unseen))
    elif view.foreign and any(d.startswith(view.root + "/") for d in files.directories):
        datadir = str(info.get("datadir"))
        report.ok("%s: the server (pid %d) runs in another mount namespace (a container); its data directory %s "
                  "is on this host at %s; freeze reaches its files through %s"
                  % (target.name, view.pid, datadir, serverview.host_location(view, datadir), view.root))


# The name check --cycle freezes and thaws under: never an agent's, so it can share nothing.
CYCLE_CALLER = "check-cycle"


def _cycle(report: Report, settings: Settings) -> None:
    from quiesce.commands import freeze, thaw
    files = state.RuntimeFiles(settings.runtime_dir)
    current = files.read_state() if state.ensure_runtime_dir(settings.runtime_dir, create=False) else None
    if current is not None and state.holder_alive(current):
        # Joining would end in a thaw inside someone's snapshot window.
        report.fail(Busy("freeze/thaw cycle not run: the server is frozen now (since %s, holder pid %s, for %s); "
                         "fix: run check --cycle again when no snapshot is being taken"
                         % (current.get("since"), current.get("holder_pid"),
                            ", ".join(str(c) for c in current.get("callers") or []) or "a snapshot")))
        return
    cycle = settings._replace(caller=CYCLE_CALLER, all_agents=False)
    started = time.monotonic()
    try:
        freeze.run(cycle, test=True)
        frozen = time.monotonic()
        holder = files.read_state()
        thaw.run(cycle)
    except QuiesceError as exc:
        report.fail(exc)
        return
    done = time.monotonic()
    # thaw is answered before the holder records its result: wait for the holder to end.
    if holder is not None and not state.wait_holder_gone(holder, 10.0):
        report.warn("freeze/thaw cycle: the holder did not end within 10 s after thaw")
    result = files.read_result() or {}
    report.ok("freeze/thaw cycle: freeze took %.0f ms, thaw %.0f ms; writes were blocked for %s ms (recorded as a "
              "test, not as a backup)" % ((frozen - started) * 1000, (done - frozen) * 1000, result.get("held_ms")))


def _tool_output(argv: List[str]) -> str:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def check_selinux(report: Report, registrations: List[Tuple[str, str]]) -> None:
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
    report = Report()
    report.ok("config: %s" % (", ".join(settings.config_files) or "no config file, built-in defaults"))

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
        _cycle(report, settings)        # also while disabled: the cycle is how to try it out
    if not settings.enabled:
        # Intended while rolling out, but the next snapshot through an agent is not quiesced.
        report.fail(ConfigError("quiesce is disabled (enabled = false): the snapshot agents' hooks do nothing; "
                                "fix: set enabled = true once the rest of this check passes"))
    sys.stdout.flush()
    if report.failure is not None:
        return int(report.failure.exit_code)
    return int(Exit.OK)
