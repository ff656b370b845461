from quiesce.commands import check
from quiesce.server import db


def layout(tmp_path):
    hook = tmp_path / "lib" / "hook"
    hook.parent.mkdir()
    hook.write_text("#!/bin/sh\n")
    vmware = tmp_path / "backupScripts.d"
    qemu = tmp_path / "fsfreeze-hook.d"
    vmware.mkdir()
    qemu.mkdir()
    dirs = (("vmware-tools", str(vmware)), ("qemu-guest-agent", str(qemu)))
    legacy = (("vmware-tools (legacy pre-freeze)", str(tmp_path / "pre-freeze-script")),)
    return hook, vmware, qemu, dirs, legacy


def test_registrations_follow_links_to_our_hook_only(tmp_path):
    hook, vmware, qemu, dirs, legacy = layout(tmp_path)
    (vmware / "zz-quiesce").symlink_to(hook)
    (qemu / "zz-quiesce").symlink_to(hook)
    (vmware / "10-other").symlink_to("/bin/true")
    found = check.hook_registrations(dirs, legacy, (str(hook),))
    assert found == [("vmware-tools", str(vmware / "zz-quiesce")), ("qemu-guest-agent", str(qemu / "zz-quiesce"))]


def test_warnings_for_removed_link_leftovers_and_double_registration(tmp_path):
    hook, vmware, qemu, dirs, legacy = layout(tmp_path)
    record = tmp_path / "hooks"
    record.write_text("dir %s\nlink %s\n" % (vmware, vmware / "zz-quiesce"))
    (vmware / "old.dpkg-old").write_text("x")
    assert [w.split(":")[0] for w in check.hook_warnings([], str(record), dirs)] == [
        "hook link %s was removed by the administrator; the package will not re-create it (to register again" %
        (vmware / "zz-quiesce"), str(vmware / "old.dpkg-old")]
    # Registered again by hand, to VMware's own entry file.
    removed = check.hook_warnings([], str(record), dirs)[0]
    assert "ln -s /usr/lib/quiesce/vmware-hook %s" % (vmware / "zz-quiesce") in removed
    (vmware / "zz-quiesce").symlink_to(hook)
    (tmp_path / "pre-freeze-script").symlink_to(hook)
    registrations = check.hook_registrations(dirs, legacy, (str(hook),))
    warnings = check.hook_warnings(registrations, str(record), dirs)
    assert any("registered both" in w for w in warnings)
    assert not any("removed by the administrator" in w for w in warnings)


class _FakeConnector:
    class version:
        VERSION = (8, 0, 15, "", 1)


def test_old_connector_is_passed_over_by_auto():
    assert db._connector_version(_FakeConnector) == (8, 0, 15)
    assert db._connector_version(_FakeConnector) < db.MIN_AUTO_CONNECTOR
    assert db._connector_version(object()) == (0, 0, 0)
