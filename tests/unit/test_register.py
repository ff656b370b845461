"""quiesce register / unregister in a scratch root: modes, ownership, foreign files, the record."""

import json
import os
import stat
import subprocess

import pytest

from quiesce import cli
from quiesce.agents import catalog, register
from quiesce.base import budget, config, paths
from quiesce.base.errors import ConfigError
from .privileges import needs_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGISTER_HOOKS = os.path.join(REPO, "libexec", "register-hooks")


@pytest.fixture
def layout(root):
    return register.Layout(root=root, libdir="/usr/lib/quiesce")


@pytest.fixture
def settings(conf):
    return config.parse(["--config", conf, "register", "gce"])


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def _azure_accepts(root):
    """Azure's own checks (VMSnapshotLinux ScriptRunner): JSON root-owned and exactly 0600/0400;
    each script, after following symlinks, root-owned with no group/other bits."""
    conf = root + catalog.AZURE_CONFIG
    st = os.stat(conf)
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) not in (0o600, 0o400):
        return False
    with open(conf) as handle:
        data = json.load(handle)
    for key in ("preScriptLocation", "postScriptLocation"):
        st = os.stat(root + data[key])
        if st.st_uid != 0 or st.st_mode & 0o077:
            return False
    return True


@needs_root
def test_gce_scripts_are_private_root_files_that_exec_our_entry_points(layout, settings, root):
    done = register.register(catalog.GCE, layout, settings)
    assert len(done) == 2, done
    directory = root + "/etc/google/snapshots"
    assert _mode(directory) == 0o700
    assert _mode(root + "/etc/google") == 0o755
    for name, target in (("pre.sh", "freeze"), ("post.sh", "thaw")):
        path = os.path.join(directory, name)
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and _mode(path) == 0o700
        text = open(path, "rb").read()
        assert text.startswith(b"#!/bin/sh\n")
        assert text.rstrip(b"\n").endswith(b"exec /usr/lib/quiesce/" + target.encode())
        assert not any(c < 0x20 and c != 0x0a for c in text), "control characters (Nutanix refuses them)"
        # POSIX sh parses it.
        subprocess.run(["sh", "-n", path], check=True)


@needs_root
def test_register_twice_changes_nothing(layout, settings, root):
    register.register(catalog.NUTANIX, layout, settings)
    before = os.stat(root + "/usr/local/sbin/pre_freeze")
    again = register.register(catalog.NUTANIX, layout, settings)
    assert again[0].startswith("already registered"), again
    after = os.stat(root + "/usr/local/sbin/pre_freeze")
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_a_foreign_file_is_never_overwritten_and_nothing_is_half_done(layout, settings, root):
    os.makedirs(root + "/usr/local/sbin")
    with open(root + "/usr/local/sbin/post_thaw", "w") as handle:
        handle.write("#!/bin/sh\necho theirs\n")
    with pytest.raises(ConfigError) as info:
        register.register(catalog.NUTANIX, layout, settings)
    message = str(info.value)
    assert "/usr/local/sbin/post_thaw is already there" in message and "bytes" in message, message
    assert not os.path.exists(root + "/usr/local/sbin/pre_freeze"), "half registered"
    assert open(root + "/usr/local/sbin/post_thaw").read() == "#!/bin/sh\necho theirs\n"
    # unregister leaves it alone too, and says so.
    done = register.unregister(catalog.NUTANIX, layout)
    assert open(root + "/usr/local/sbin/post_thaw").read() == "#!/bin/sh\necho theirs\n"
    assert any(line.startswith("left /usr/local/sbin/post_thaw alone") for line in done), done


@needs_root
def test_a_file_changed_after_register_is_left_alone(layout, settings, root):
    register.register(catalog.GCE, layout, settings)
    with open(root + "/etc/google/snapshots/post.sh", "a") as handle:
        handle.write("echo edited\n")
    done = register.unregister(catalog.GCE, layout)
    assert not os.path.exists(root + "/etc/google/snapshots/pre.sh")
    assert os.path.exists(root + "/etc/google/snapshots/post.sh")
    assert any("left /etc/google/snapshots/post.sh alone" in line for line in done), done
    # Its directory is not empty, so it stays.
    assert os.path.isdir(root + "/etc/google/snapshots")
    with pytest.raises(ConfigError, match="post.sh is already there"):
        register.register(catalog.GCE, layout, settings)


@needs_root
def test_azure_files_pass_azures_own_permission_checks(layout, settings, root):
    register.register(catalog.AZURE, layout, settings)
    assert _azure_accepts(root)
    with open(root + catalog.AZURE_CONFIG) as handle:
        data = json.load(handle)
    assert data["ScriptsExecutionPollTimeSeconds"] == 1
    assert data["fsFreezeEnabled"] is True
    assert data["timeoutInSeconds"] >= budget.freeze_budget(settings)
    for key in ("preScriptLocation", "postScriptLocation"):
        assert not os.path.islink(root + data[key])
        subprocess.run(["sh", "-n", root + data[key]], check=True)


@needs_root
def test_azure_settings_change_rewrites_our_config(layout, conf, root):
    register.register(catalog.AZURE, layout, config.parse(["--config", conf, "register", "azure"]))
    slow = config.parse(["--config", conf, "--long-query-wait", "100", "register", "azure"])
    done = register.register(catalog.AZURE, layout, slow)
    assert any("updated" in line for line in done), done
    with open(root + catalog.AZURE_CONFIG) as handle:
        assert json.load(handle)["timeoutInSeconds"] >= 100
    assert _azure_accepts(root)


@pytest.mark.parametrize("workload", ["mysql", "mariadb", "postgres"])
def test_azure_refused_when_its_workload_framework_would_bypass_the_plugin(layout, settings, root, workload):
    os.makedirs(root + "/etc/azure")
    with open(root + catalog.AZURE_WORKLOAD_CONF, "w") as handle:
        handle.write("[workload]\nworkload_name = %s\ncommand_path = /usr/bin/\n" % workload)
    with pytest.raises(ConfigError, match="workload_name = %s" % workload):
        register.register(catalog.AZURE, layout, settings)
    assert not os.path.exists(root + catalog.AZURE_CONFIG)


def test_azure_refused_when_someone_elses_plugin_config_is_there(layout, settings, root):
    os.makedirs(root + "/etc/azure")
    theirs = '{"preScriptLocation": "/opt/theirs/pre.sh"}\n'
    with open(root + catalog.AZURE_CONFIG, "w") as handle:
        handle.write(theirs)
    with pytest.raises(ConfigError, match="VMSnapshotScriptPluginConfig.json is already there"):
        register.register(catalog.AZURE, layout, settings)
    assert open(root + catalog.AZURE_CONFIG).read() == theirs
    assert not os.path.exists(root + "/etc/azure/quiesce-pre.sh")


def _register_hooks(root, action):
    env = dict(os.environ, QUIESCE_HOOKS_ROOT=root)
    return subprocess.run(["sh", REGISTER_HOOKS, action], env=env, capture_output=True, text=True, check=True)


def test_vmware_link_shares_the_packages_record(layout, settings, root):
    link = root + "/etc/vmware-tools/backupScripts.d/zz-quiesce"
    register.register(catalog.VMWARE, layout, settings)
    assert os.readlink(link) == "/usr/lib/quiesce/vmware-hook"
    register.unregister(catalog.VMWARE, layout)
    assert not os.path.lexists(link)
    # The package's trigger must not bring back what the administrator unregistered.
    _register_hooks(root, "register")
    assert not os.path.lexists(link)
    register.register(catalog.VMWARE, layout, settings)
    assert os.path.islink(link)
    _register_hooks(root, "unregister")
    assert not os.path.lexists(link)


def test_qemu_ga_needs_the_agents_own_directory(layout, settings, root):
    with pytest.raises(ConfigError, match="install the agent first"):
        register.register(catalog.QEMU_GA, layout, settings)
    os.makedirs(root + "/etc/qemu-ga/fsfreeze-hook.d")
    register.register(catalog.QEMU_GA, layout, settings)
    assert os.readlink(root + "/etc/qemu-ga/fsfreeze-hook.d/zz-quiesce") == "/usr/lib/quiesce/qemu-ga-hook"
    assert not os.path.exists(root + "/etc/qemu")


@needs_root
def test_command_line_register_and_unregister_all(conf, root, capsys):
    for agent in ("gce", "azure", "nutanix", "vmware"):
        assert cli.main(["--config", conf, "--root", root, "register", agent]) == 0
    with open(root + "/usr/local/sbin/foreign", "w") as handle:
        handle.write("x")
    assert cli.main(["--config", conf, "--root", root, "unregister", "--all"]) == 0
    left = sorted(os.path.relpath(os.path.join(d, f), root) for d, _dirs, files in os.walk(root) for f in files)
    assert left == ["usr/local/sbin/foreign", "var/lib/quiesce/hooks"], left
    assert cli.main(["--config", conf, "--root", root, "register", "aws"]) == 2
    assert cli.main(["--config", conf, "--root", root, "register"]) == 2
    assert "register needs one agent" in capsys.readouterr().err


@needs_root
@pytest.mark.parametrize("where", ["--config", "the default path"])
@pytest.mark.parametrize("broken", ["lock-timeout\n", "lock-timeout = soon\n", "unknown-key = 1\n", "shared"])
def test_unregister_all_works_whatever_state_the_config_is_in(conf, root, tmp_path, monkeypatch, where, broken):
    """Package removal runs 'quiesce unregister --all': a config error must not leave pre.sh
    behind, exec'ing an entry point that the removal deletes."""
    assert cli.main(["--config", conf, "--root", root, "register", "gce"]) == 0
    bad = tmp_path / "broken.conf"
    bad.write_text("lock-timeout = 300\n" if broken == "shared" else broken)
    bad.chmod(0o666 if broken == "shared" else 0o600)
    assert cli.main(["--config", str(bad), "status"]) == 2, "the config is not broken"
    if where == "--config":
        argv = ["--config", str(bad), "--root", root, "unregister", "--all"]
    else:
        monkeypatch.setattr(paths, "CONFIG_FILE", str(bad))
        argv = ["--root", root, "unregister", "--all"]
    monkeypatch.setenv("QUIESCE_LOCK_TIMEOUT", "not a number")
    assert cli.main(argv) == 0
    assert not os.path.lexists(root + "/etc/google/snapshots/pre.sh")
    assert not os.path.lexists(root + "/etc/google")
    # Anything more than 'unregister --all' still reads the config, and says what is wrong.
    assert cli.main(argv + ["--json"]) == 2


def test_the_scripts_name_their_caller_for_the_shared_lock(tmp_path):
    """Run as the agents run them (Azure: sh FILE; GCE, Nutanix: exec), they hand our entry
    point their agent's name, whatever the agent's process tree looks like."""
    (tmp_path / "freeze").write_text('#!/bin/sh\necho "caller=$QUIESCE_CALLER"\n')
    os.chmod(str(tmp_path / "freeze"), 0o755)
    for agent in (catalog.AZURE, catalog.GCE, catalog.NUTANIX):
        script = tmp_path / ("pre-" + agent.name)
        script.write_bytes(register.script_text(agent, "freeze", str(tmp_path)))
        os.chmod(str(script), 0o700)
        for argv in (["sh", str(script), "", ""], [str(script), "1/2"]):
            done = subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=10)
            assert done.stdout == "caller=%s\n" % agent.name, (argv, done)
