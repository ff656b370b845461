"""quiesce check under SELinux, with getenforce, ls -Z and getsebool replaced by scripts that
print what those tools print on an enforcing Fedora/RHEL system (no SELinux kernel here)."""

import os
import stat

import pytest

from quiesce.base import paths
from quiesce.commands import check


class Report:
    def __init__(self):
        self.lines = []

    def ok(self, text):
        self.lines.append(("ok", text))

    def warn(self, text):
        self.lines.append(("warn", text))

    def fail(self, error):
        self.lines.append(("fail", str(error)))


def _tools(tmp_path, monkeypatch, mode, qemu_type, boolean):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    outputs = {
        "getenforce": mode + "\n",
        "ls": "system_u:object_r:%s:s0 %s\nsystem_u:object_r:vmtools_unconfined_exec_t:s0 %s\n"
              % (qemu_type, paths.QEMU_GA_HOOK, paths.VMWARE_HOOK),
        "getsebool": "virt_qemu_ga_run_unconfined --> %s\n" % boolean,
    }
    for name, text in outputs.items():
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\ncat <<'EOF'\n%sEOF\n" % text)
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ.get("PATH", "")))
    link = tmp_path / "zz-quiesce"
    link.symlink_to(paths.QEMU_GA_HOOK)
    return [("qemu-guest-agent", str(link))]


def test_enforcing_with_wrong_label_and_boolean_off_fails_naming_the_fixes(tmp_path, monkeypatch):
    registrations = _tools(tmp_path, monkeypatch, "Enforcing", "lib_t", "off")
    report = Report()
    check.check_selinux(report, registrations)
    fails = [text for level, text in report.lines if level == "fail"]
    assert any("semanage fcontext -a -t virt_qemu_ga_unconfined_exec_t" in t for t in fails), report.lines
    assert any("setsebool -P virt_qemu_ga_run_unconfined on" in t for t in fails), report.lines


def test_enforcing_and_labelled_reports_ok(tmp_path, monkeypatch):
    registrations = _tools(tmp_path, monkeypatch, "Enforcing", "virt_qemu_ga_unconfined_exec_t", "on")
    report = Report()
    check.check_selinux(report, registrations)
    assert report.lines and all(level == "ok" for level, _ in report.lines), report.lines


@pytest.mark.parametrize("mode, expected", [("Permissive", "warn"), ("Disabled", None)])
def test_permissive_warns_and_disabled_says_nothing(tmp_path, monkeypatch, mode, expected):
    registrations = _tools(tmp_path, monkeypatch, mode, "lib_t", "off")
    report = Report()
    check.check_selinux(report, registrations)
    levels = {level for level, _ in report.lines}
    assert levels == ({expected} if expected else set()), report.lines
