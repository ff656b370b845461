"""quiesce.agents.selinux on text captured from SELinux tools (Fedora 40, RHEL 9 formats)."""

from quiesce.agents import selinux
from quiesce.agents.selinux import Context
from quiesce.base import paths

QEMU, VMWARE = paths.QEMU_GA_HOOK, paths.VMWARE_HOOK

# `ls -Z` as the RPM leaves the entry files on an SELinux system.
LS_Z_LABELLED = """\
system_u:object_r:virt_qemu_ga_unconfined_exec_t:s0 /usr/lib/quiesce/qemu-ga-hook
system_u:object_r:vmtools_unconfined_exec_t:s0 /usr/lib/quiesce/vmware-hook
"""
# `ls -lZ` before any relabelling (the package's default: lib_t), one file unlabelled.
LS_LZ_UNLABELLED = """\
-rwxr-xr-x. 1 root root system_u:object_r:lib_t:s0 312 Nov 29 12:00 /usr/lib/quiesce/qemu-ga-hook
-rwxr-xr-x  1 root root ?                          312 Nov 29 12:00 /usr/lib/quiesce/vmware-hook
lrwxrwxrwx. 1 root root system_u:object_r:etc_t:s0  29 Nov 29 12:01 /etc/qemu-ga/fsfreeze-hook.d/zz-quiesce -> /usr/lib/quiesce/qemu-ga-hook
"""
GETSEBOOL_ON = "virt_qemu_ga_run_unconfined --> on\n"
GETSEBOOL_OFF = "virt_qemu_ga_run_unconfined --> off\n"


def test_parse_context_with_mls_range():
    assert selinux.parse_context("unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023") == Context(
        "unconfined_u", "unconfined_r", "unconfined_t", "s0-s0:c0.c1023")
    assert selinux.parse_context("?") is None
    assert selinux.parse_context("/usr/lib/quiesce/hook") is None


def test_parse_getenforce():
    assert selinux.parse_getenforce("Enforcing\n") == selinux.ENFORCING
    assert selinux.parse_getenforce("Permissive\n") == selinux.PERMISSIVE
    assert selinux.parse_getenforce("Disabled\n") == selinux.DISABLED
    assert selinux.parse_getenforce("getenforce: command not found\n") is None


def test_parse_ls_z_short_and_long_formats():
    short = selinux.parse_ls_z(LS_Z_LABELLED)
    assert short[QEMU].type == "virt_qemu_ga_unconfined_exec_t"
    assert short[VMWARE].type == "vmtools_unconfined_exec_t"
    long = selinux.parse_ls_z(LS_LZ_UNLABELLED)
    assert long[QEMU] == Context("system_u", "object_r", "lib_t", "s0")
    assert long[VMWARE] is None
    assert long["/etc/qemu-ga/fsfreeze-hook.d/zz-quiesce"].type == "etc_t"
    assert selinux.parse_ls_z("ls: cannot access '/usr/lib/quiesce/vmware-hook': No such file or directory\n") == {}


def test_parse_getsebool():
    assert selinux.parse_getsebool(GETSEBOOL_ON) == {"virt_qemu_ga_run_unconfined": True}
    text = "virt_qemu_ga_read_nonsecurity_files --> on\nvirt_qemu_ga_run_unconfined --> off\n"
    assert selinux.parse_getsebool(text) == {"virt_qemu_ga_read_nonsecurity_files": True,
                                             "virt_qemu_ga_run_unconfined": False}
    assert selinux.parse_getsebool("getsebool:  SELinux is disabled\n") == {}


def test_all_set_up_under_enforcing():
    found = selinux.report("Enforcing\n", LS_Z_LABELLED, GETSEBOOL_ON)
    assert all(f.ok for f in found) and len(found) == 3


def test_wrong_labels_and_boolean_off_name_the_fix():
    found = selinux.report("Enforcing\n", LS_LZ_UNLABELLED, GETSEBOOL_OFF)
    problems = [f.text for f in found if not f.ok]
    assert len(problems) == 3
    assert ("/usr/lib/quiesce/qemu-ga-hook is labelled lib_t, not virt_qemu_ga_unconfined_exec_t" in problems[0]
            and "semanage fcontext -a -t virt_qemu_ga_unconfined_exec_t /usr/lib/quiesce/qemu-ga-hook" in problems[0])
    assert "vmware-hook is labelled nothing, not vmtools_unconfined_exec_t" in problems[1]
    assert "fix: setsebool -P virt_qemu_ga_run_unconfined on" in problems[2]
    assert "permissive" not in " ".join(problems)


def test_permissive_says_it_would_be_refused_once_enforcing():
    found = selinux.report("Permissive\n", LS_Z_LABELLED, GETSEBOOL_OFF)
    assert [f.ok for f in found] == [True, True, False]
    assert "refused once enforcing" in found[2].text


def test_only_the_agents_asked_about():
    found = selinux.report("Enforcing\n", LS_Z_LABELLED, GETSEBOOL_OFF, entries=[VMWARE])
    assert found == [selinux.Finding(True, "%s is labelled vmtools_unconfined_exec_t" % VMWARE)]
    missing = selinux.report("Enforcing\n", "", "", entries=[QEMU])
    assert [f.ok for f in missing] == [False, False]
    assert "cannot read the SELinux label" in missing[0].text


def test_disabled_or_absent_needs_nothing():
    for getenforce in ("Disabled\n", ""):
        found = selinux.report(getenforce, "", "")
        assert len(found) == 1 and found[0].ok
