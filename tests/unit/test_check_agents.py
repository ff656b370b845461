"""quiesce check: which snapshot agents are here, whether quiesce is wired in, and time budgets."""

import os

import pytest

from quiesce.agents import survey, catalog, register
from quiesce.base import budget, config
from quiesce.commands import check
from .privileges import needs_root


def _settings(conf, *options):
    return config.parse(["--config", conf, *options, "check"])


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _report(settings, root, installed=lambda name: False):
    report = check.Report()
    survey.check_agents(report, settings, root, installed)
    return report


def test_agents_are_detected_by_package_service_and_files(root):
    assert survey.detect_agent(catalog.GCE, root, lambda name: False) == []
    assert survey.detect_agent(catalog.VMWARE, root, lambda name: name == "open-vm-tools") == ["package open-vm-tools"]
    _write(root + "/lib/systemd/system/amazon-ssm-agent.service", "[Unit]\n")
    assert survey.detect_agent(catalog.AWS, root, lambda name: False) == ["service amazon-ssm-agent"]
    os.makedirs(root + "/var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9225.0")
    assert survey.detect_agent(catalog.AZURE, root, lambda name: False) == [
        "/var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9225.0"]


@needs_root
def test_each_agent_reports_whether_quiesce_is_wired_in(conf, root, capsys):
    settings = _settings(conf)
    layout = register.Layout(root, "/usr/lib/quiesce")
    os.makedirs(root + "/var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0")
    _write(root + catalog.GCE_CONFIG, "[Snapshots]\nenabled = false\n")
    _report(settings, root, lambda name: name == "nutanix-guest-agent")
    out = capsys.readouterr().out
    for title in (catalog.AZURE.title, catalog.GCE.title, catalog.NUTANIX.title):
        assert "agent %s" % title in out and "NOT wired in" in out, out
    assert "fix: quiesce register nutanix" in out

    for agent in (catalog.GCE, catalog.AZURE, catalog.NUTANIX):
        register.register(agent, layout, settings)
    assert survey.agent_wiring(catalog.AZURE, root) == (True, [])
    assert survey.agent_wiring(catalog.NUTANIX, root) == (True, [])
    wired, problems = survey.agent_wiring(catalog.GCE, root)
    assert wired and "[Snapshots] enabled = true" in problems[0], problems
    _write(root + catalog.GCE_CONFIG, "[Snapshots]\nenabled = true\n")
    assert survey.agent_wiring(catalog.GCE, root) == (True, [])

    # What Azure silently refuses, check says.
    os.chmod(root + catalog.AZURE_CONFIG, 0o644)
    wired, problems = survey.agent_wiring(catalog.AZURE, root)
    assert not wired and "0600 or 0400" in problems[0], problems
    os.chmod(root + catalog.AZURE_CONFIG, 0o600)
    os.chmod(root + "/etc/azure/quiesce-pre.sh", 0o750)
    assert survey.agent_wiring(catalog.AZURE, root)[0] is False
    os.chmod(root + "/etc/azure/quiesce-pre.sh", 0o700)
    _write(root + catalog.AZURE_WORKLOAD_CONF, "[workload]\nworkload_name = mysql\n")
    wired, problems = survey.agent_wiring(catalog.AZURE, root)
    assert not wired and "workload_name = mysql" in problems[0]


def test_vmware_link_counts_whatever_its_name(conf, root):
    os.makedirs(root + "/etc/vmware-tools/backupScripts.d")
    assert survey.agent_wiring(catalog.VMWARE, root) == (False, [])
    os.symlink("/usr/lib/quiesce/hook", root + "/etc/vmware-tools/backupScripts.d/50-mysql")
    assert survey.agent_wiring(catalog.VMWARE, root) == (True, [])


def test_legacy_vmware_script_that_locks_mysql_is_flagged(conf, root, capsys):
    _write(root + "/usr/sbin/pre-freeze-script",
           "#!/bin/sh\nmysql -e 'FLUSH TABLES WITH READ LOCK; SELECT SLEEP(600)' &\n", 0o755)
    _write(root + "/usr/sbin/post-thaw-script", "#!/bin/sh\nlogger thawed\n", 0o755)
    assert survey.legacy_lock_scripts(root) == ["/usr/sbin/pre-freeze-script"]
    _report(_settings(conf), root)
    assert "/usr/sbin/pre-freeze-script locks MySQL by itself" in capsys.readouterr().out
    os.unlink(root + "/usr/sbin/pre-freeze-script")
    os.symlink("/usr/lib/quiesce/freeze", root + "/usr/sbin/pre-freeze-script")
    assert survey.legacy_lock_scripts(root) == []


@needs_root
def test_budget_warns_when_the_waits_cannot_fit_the_agents_timeout(conf, root):
    # The default waits (drain and probe start included) take far beyond AWS's 10 s and GCE's 60 s.
    warnings = survey.budget_warnings(_settings(conf), [catalog.AWS, catalog.GCE], root)
    assert len(warnings) == 2 and "gives freeze 10 s" in warnings[0] and "gives freeze 60 s" in warnings[1]
    budget_s = budget.freeze_budget(_settings(conf))
    assert all("%.0f s" % budget_s in w for w in warnings), warnings
    # Shorter settings shorten it, but the drain and a stalled statement under the lock stay.
    tuned = _settings(conf, "--connect-timeout", "1", "--long-query-wait", "2", "--acquire-timeout", "2")
    assert budget.freeze_budget(tuned) < budget_s
    assert survey.budget_warnings(tuned, [catalog.AWS], root)
    # Azure: the timeout is the one its config file names (10 s when missing).
    assert survey.budget_warnings(_settings(conf), [catalog.AZURE], root)
    register.register(catalog.AZURE, register.Layout(root, "/usr/lib/quiesce"), _settings(conf))
    assert survey.budget_warnings(_settings(conf), [catalog.AZURE], root) == []


@pytest.mark.parametrize("path, text", [
    ("/etc/qemu/qemu-ga.conf", "[general]\nfsfreeze-hook = /etc/qemu/fsfreeze-hook\n"),
    ("/etc/sysconfig/qemu-ga", "FSFREEZE_HOOK_PATHNAME=/etc/qemu-ga/fsfreeze-hook\n"),
    ("/etc/systemd/system/qemu-guest-agent.service.d/override.conf",
     "[Service]\nExecStart=\nExecStart=-/usr/sbin/qemu-ga -F\n"),
    ("/etc/default/qemu-guest-agent", 'DAEMON_ARGS="-F"\n'),
])
def test_qemu_ga_hook_switch_is_found_wherever_it_is_set(root, path, text):
    os.makedirs(root + "/etc/qemu/fsfreeze-hook.d")
    os.symlink("/usr/lib/quiesce/hook", root + "/etc/qemu/fsfreeze-hook.d/zz-quiesce")
    wired, problems = survey.agent_wiring(catalog.QEMU_GA, root)
    assert wired and "only when started with -F" in problems[0], problems
    _write(root + path, "#FSFREEZE_HOOK_PATHNAME=/x\n# DAEMON_ARGS=-F\n")
    assert survey.agent_wiring(catalog.QEMU_GA, root)[1], "a commented-out switch counted"
    _write(root + path, text)
    assert survey.agent_wiring(catalog.QEMU_GA, root) == (True, [])


def test_debian_defaults_count_for_qemu_ga_only_where_its_init_reads_them(root):
    os.makedirs(root + "/etc/qemu/fsfreeze-hook.d")
    os.symlink("/usr/lib/quiesce/hook", root + "/etc/qemu/fsfreeze-hook.d/zz-quiesce")
    _write(root + catalog.QEMU_GA_SYSV_DEFAULTS, 'DAEMON_ARGS="-F"\n')
    assert survey.agent_wiring(catalog.QEMU_GA, root) == (True, [])      # SysV init
    os.makedirs(root + "/run/systemd/system")
    _write(root + "/lib/systemd/system/" + catalog.QEMU_GA_UNIT, "[Service]\nExecStart=/usr/sbin/qemu-ga\n")
    wired, problems = survey.agent_wiring(catalog.QEMU_GA, root)
    assert wired and "only when started with -F" in problems[0], problems
    _write(root + "/etc/systemd/system/%s.d/env.conf" % catalog.QEMU_GA_UNIT,
           "[Service]\nEnvironmentFile=-%s\n" % catalog.QEMU_GA_SYSV_DEFAULTS)
    assert survey.agent_wiring(catalog.QEMU_GA, root) == (True, [])


@needs_root
def test_an_agent_quiesce_is_not_wired_into_fails_check_but_aws_only_warns(conf, root, capsys):
    settings = _settings(conf)
    report = _report(settings, root, lambda name: name == "nutanix-guest-agent")
    assert "FAIL  agent %s" % catalog.NUTANIX.title in capsys.readouterr().out
    assert report.failure is not None and int(report.failure.exit_code) == 2
    register.register(catalog.NUTANIX, register.Layout(root, "/usr/lib/quiesce"), settings)
    assert _report(settings, root, lambda name: name == "nutanix-guest-agent").failure is None
    # AWS is wired in the DLM policy, which this machine cannot see: a warning, exit 0.
    report = _report(settings, root, lambda name: name == "amazon-ssm-agent")
    assert "WARN  agent %s" % catalog.AWS.title in capsys.readouterr().out
    assert report.failure is None
