"""Who asks for a freeze or a thaw, so that overlapping snapshots are told apart.

Several callers may hold one lock at once (a Veeam job script and VMware Tools in one
backup, or two agents whose snapshots overlap): the holder counts them by name and
releases when the last one thaws. The name is the one given with --caller, else the
snapshot agent found among our ancestors (vmtoolsd -> vmware-tools, ...), else the first
ancestor that is not a shell, interpreter or wrapper (sshd, cron, ...). Two callers with
the same name count as one, so an agent that retries its freeze is not counted twice.

Only os is used: the hook's fast thaw path imports this before anything else.
"""

from __future__ import annotations

import os

# Processes between the agent and us that say nothing about who asked.
_GENERIC = {"sh", "bash", "dash", "zsh", "ksh", "busybox", "python", "python3", "quiesce", "hook", "freeze", "env",
            "sudo", "su", "runuser", "timeout", "run-parts", "flock", "nice", "ionice", "setsid", "nohup", "xargs",
            "systemd-run", "sg", "script", "thaw", "pre.sh", "post.sh", "pre_freeze", "post_thaw"}
# Kernel command names (at most 15 characters) of the snapshot agents' processes.
AGENTS = {"vmtoolsd": "vmware-tools", "qemu-ga": "qemu-guest-agent", "waagent": "azure-waagent",
          "google_guest_ag": "google-guest-agent", "amazon-ssm-agen": "aws-ssm-agent",
          "ssm-agent-worke": "aws-ssm-agent", "ngt_guest_agent": "nutanix-guest-tools"}
# The callers whose snapshot freezes the filesystems itself, after the freeze hook returns
# (VMware Tools' quiescing, qemu-ga's guest-fsfreeze, Azure's safefreeze). Only their
# snapshot is known to thaw the data directory's filesystem; GCE, AWS, Nutanix, Veeam's job
# scripts and unknown callers take theirs unfrozen, so any freeze seen during their hold is
# someone else's (an LVM snapshot, another tool's fsfreeze) and must not release the lock.
# Named as calling_agent() finds them, or as `quiesce register` calls them (for --caller).
FREEZES_FILESYSTEMS = frozenset({"vmware-tools", "qemu-guest-agent", "azure-waagent", "vmware", "qemu-ga", "azure"})
UNKNOWN = "unknown"
MAX_NAME = 64
# A name goes into JSON built by hand on the fast path, and into log lines.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+@/")


def _comm_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8", errors="replace") as handle:
            data = handle.read()
    except OSError:
        return None
    try:
        name = data[data.index("(") + 1:data.rindex(")")]
        return name, int(data.rsplit(")", 1)[1].split()[1])
    except (ValueError, IndexError):
        return None


def calling_agent(pid: int, limit: int = 16) -> str:
    """The first ancestor of pid (itself included) that is not a shell, interpreter or
    wrapper, named after the snapshot agent when it is a known one."""
    for _ in range(limit):
        found = _comm_and_parent(pid)
        if found is None:
            break
        name, parent = found
        if name not in _GENERIC:
            return AGENTS.get(name, name)
        if parent <= 1:
            break
        pid = parent
    return UNKNOWN


def freezes_filesystems(name: str) -> bool:
    """Whether this caller's snapshot freezes the filesystems (so its thaw ends the snapshot)."""
    return name in FREEZES_FILESYSTEMS


def clean(name: str) -> str:
    """A caller name safe to log and to put in a JSON string as it is."""
    text = "".join(c if c in _SAFE else "_" for c in str(name).strip())[:MAX_NAME]
    return text or UNKNOWN


def identify(explicit: str | None, pid: int | None = None) -> str:
    """This command's caller: --caller if given, else found from the process tree."""
    if explicit:
        return clean(explicit)
    return clean(calling_agent(os.getppid() if pid is None else pid))
