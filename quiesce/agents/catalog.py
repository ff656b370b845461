"""The snapshot agents quiesce works with: where each looks for hooks, and how to spot it.

Data only. register.py creates the files an agent needs; check.py reports which agents
are installed and whether quiesce is wired into them. Facts come from the agents' own
source code and documentation (see quiesce(8), SNAPSHOT AGENTS).
"""

from __future__ import annotations

import collections

from quiesce.base import paths

# A file an agent runs. kind: "link" (symbolic link to target), "script" (a small POSIX sh
# script that execs target: for agents that demand a real, private file or run "sh FILE"),
# "azure-config" (the Azure script plugin's JSON naming our scripts). target is a name in
# the library directory (paths.LIB_DIR). dir_mode: mode of the parent directory if we
# must create it; None means the agent's package must have created it (we never do).
HookFile = collections.namedtuple("HookFile", "path kind target mode dir_mode")

# name: the word for 'quiesce register'. registerable: False for agents configured
# outside the VM (AWS). timeout: seconds the agent gives a pre-snapshot hook by default
# (None: unpublished). packages / services / markers (paths or globs): how check detects it.
Agent = collections.namedtuple(
    "Agent", "name title registerable files packages services markers timeout on_failure")

AZURE_CONFIG = "/etc/azure/VMSnapshotScriptPluginConfig.json"
AZURE_WORKLOAD_CONF = "/etc/azure/workload.conf"
# Azure polls its scripts every ScriptsExecutionPollTimeSeconds (1-5, default 3); each phase
# costs about two periods even for an instant script, and the database is locked meanwhile.
AZURE_POLL_SECONDS = 1
AZURE_MIN_TIMEOUT = 30
GCE_CONFIG = "/etc/default/instance_configs.cfg"
# Where qemu-ga's -F (run the fsfreeze hook) can be switched on: its own config file
# (every init system), RHEL's sysconfig file (its unit passes -F from there), a systemd
# drop-in, or Debian's SysV init script defaults (which systemd's unit ignores).
QEMU_GA_UNIT = "qemu-guest-agent.service"
QEMU_GA_SYSV_DEFAULTS = "/etc/default/qemu-guest-agent"
QEMU_GA_HOOK_SWITCHES = (
    ("/etc/qemu/qemu-ga.conf", r"(?m)^\s*fsfreeze-hook\s*="),
    ("/etc/qemu-ga/qemu-ga.conf", r"(?m)^\s*fsfreeze-hook\s*="),
    ("/etc/sysconfig/qemu-ga", r"(?m)^\s*FSFREEZE_HOOK_PATHNAME\s*=\s*[\"']?/"),
    ("/etc/systemd/system/qemu-guest-agent.service.d/*.conf", r"(?m)^\s*ExecStart=.*\s-F"),
    (QEMU_GA_SYSV_DEFAULTS, r"(?m)^\s*DAEMON_ARGS=.*-F"),
)

VMWARE = Agent(
    name="vmware", title="VMware Tools (backupScripts.d)", registerable=True,
    files=(HookFile(paths.HOOK_DIRS[0][1] + "/" + paths.HOOK_LINK_NAME, "link", "vmware-hook", None, 0o755),),
    packages=("open-vm-tools",), services=("vmtoolsd", "open-vm-tools"),
    markers=("/usr/bin/vmtoolsd",), timeout=900,
    on_failure="a failed freeze fails the quiesced snapshot; earlier hooks get freezeFail")

QEMU_GA = Agent(
    name="qemu-ga", title="QEMU guest agent (fsfreeze-hook.d)", registerable=True,
    files=tuple(HookFile(directory + "/" + paths.HOOK_LINK_NAME, "link", "qemu-ga-hook", None, None)
                for runner, directory in paths.HOOK_DIRS if runner == "qemu-guest-agent"),
    packages=("qemu-guest-agent",), services=("qemu-guest-agent",),
    markers=("/usr/bin/qemu-ga", "/usr/sbin/qemu-ga"), timeout=600,
    on_failure="the hook's exit status is ignored: the snapshot goes ahead, crash-consistent; see "
               "/var/log/qga-fsfreeze-hook.log")

GCE = Agent(
    name="gce", title="Google Compute Engine guest agent (guest flush)", registerable=True,
    files=(HookFile("/etc/google/snapshots/pre.sh", "script", "freeze", 0o700, 0o700),
           HookFile("/etc/google/snapshots/post.sh", "script", "thaw", 0o700, 0o700)),
    packages=("google-guest-agent", "google-compute-engine"),
    services=("google-guest-agent", "google-guest-compat-manager"),
    markers=(GCE_CONFIG,), timeout=60,
    on_failure="a failed pre.sh means no snapshot")

AZURE = Agent(
    name="azure", title="Azure VM backup (VMSnapshotLinux script plugin)", registerable=True,
    files=(HookFile("/etc/azure/quiesce-pre.sh", "script", "freeze", 0o700, 0o755),
           HookFile("/etc/azure/quiesce-post.sh", "script", "thaw", 0o700, 0o755),
           HookFile(AZURE_CONFIG, "azure-config", None, 0o600, 0o755)),
    packages=("walinuxagent", "WALinuxAgent"), services=("walinuxagent", "waagent"),
    markers=("/var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-*",),
    timeout=AZURE_MIN_TIMEOUT,
    on_failure="continueBackupOnFailure (our default true): a file-system-consistent snapshot")

NUTANIX = Agent(
    name="nutanix", title="Nutanix Guest Tools", registerable=True,
    files=(HookFile("/usr/local/sbin/pre_freeze", "script", "freeze", 0o700, 0o755),
           HookFile("/usr/local/sbin/post_thaw", "script", "thaw", 0o700, 0o755)),
    packages=("nutanix-guest-agent",), services=("ngt_guest_agent",),
    markers=("/usr/local/nutanix/ngt",), timeout=None,
    on_failure="the snapshot is crash-consistent")

AWS = Agent(
    name="aws", title="AWS Systems Manager agent (Data Lifecycle Manager pre/post scripts)",
    registerable=False, files=(),
    packages=("amazon-ssm-agent",),
    services=("amazon-ssm-agent", "snap.amazon-ssm-agent.amazon-ssm-agent"),
    markers=("/snap/amazon-ssm-agent",), timeout=10,
    on_failure="by default a crash-consistent snapshot, and post-script is NOT run")

ALL = (VMWARE, QEMU_GA, GCE, AZURE, NUTANIX, AWS)
BY_NAME = {agent.name: agent for agent in ALL}
REGISTERABLE = tuple(agent.name for agent in ALL if agent.registerable)

# VMware Tools' legacy single scripts: other software may own them.
LEGACY_VMWARE = (paths.LEGACY_HOOKS[0][1], paths.LEGACY_HOOKS[1][1])
# Text that betrays a script locking MySQL by itself.
MYSQL_LOCK_SIGNS = ("flush tables", "mysql", "mariadb", "lock tables")
