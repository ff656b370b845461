"""SELinux state of the agents' hook entry files, read from the tools' own output.

Pure functions over the captured text of `getenforce`, `ls -Z` and `getsebool`, so that
`quiesce check` can say whether a snapshot agent will be allowed to run quiesce, and the
logic is tested without an SELinux kernel. Running the tools is the caller's job.

An agent runs confined (qemu-ga as virt_qemu_ga_t, vmtoolsd as vmtools_t); the domain
of a hook follows the label of the file executed, which for a registration link is its
target. The RPM labels each agent's own entry file with the type that leads to the
agent's unconfined hook domain; for qemu-ga the policy boolean below must be on as well.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, NamedTuple, Optional

from quiesce.base import paths

ENTRY_TYPES = {
    paths.QEMU_GA_HOOK: "virt_qemu_ga_unconfined_exec_t",
    paths.VMWARE_HOOK: "vmtools_unconfined_exec_t",
}
QEMU_GA_BOOLEAN = "virt_qemu_ga_run_unconfined"
ENFORCING, PERMISSIVE, DISABLED = "enforcing", "permissive", "disabled"

_CONTEXT = re.compile(r"^([^:\s]+):([^:\s]+):([^:\s]+)(?::(\S+))?$")
_BOOLEAN = re.compile(r"^(\S+)\s+-->\s+(on|off)$")


class Context(NamedTuple):
    user: str
    role: str
    type: str
    level: str


class Finding(NamedTuple):
    ok: bool        # False: the snapshot agent will be refused (or would be, once enforcing)
    text: str


def parse_context(text: str) -> Optional[Context]:
    """'system_u:object_r:lib_t:s0' -> Context; None for anything else ('?': no label)."""
    match = _CONTEXT.match(text.strip())
    return Context(match.group(1), match.group(2), match.group(3), match.group(4) or "") if match else None


def parse_getenforce(text: str) -> Optional[str]:
    """ENFORCING, PERMISSIVE or DISABLED from getenforce's output; None if unrecognised."""
    mode = text.strip().lower()
    return mode if mode in (ENFORCING, PERMISSIVE, DISABLED) else None


def parse_ls_z(text: str) -> Dict[str, Optional[Context]]:
    """{path: Context or None (unlabelled)} from `ls -Z PATH...` or `ls -lZ PATH...` output."""
    labels: Dict[str, Optional[Context]] = {}
    for line in text.splitlines():
        fields = line.split()
        where = [i for i, field in enumerate(fields) if field == "?" or parse_context(field)]
        if not fields or not where:
            continue
        i = where[0]
        # ls -Z: "CONTEXT PATH"; ls -lZ: "MODE LINKS OWNER GROUP CONTEXT SIZE MON DAY TIME PATH".
        rest = line.split(None, i + 1 if i == 0 else i + 5)
        if len(rest) <= (i + 1 if i == 0 else i + 5):
            continue
        path = rest[-1]
        if i != 0 and fields[0].startswith("l"):
            path = path.split(" -> ", 1)[0]
        labels[path] = parse_context(fields[i])
    return labels


def parse_getsebool(text: str) -> Dict[str, bool]:
    """{boolean: on?} from `getsebool NAME...` or `getsebool -a` output."""
    found = {}
    for line in text.splitlines():
        match = _BOOLEAN.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2) == "on"
    return found


def findings(mode: Optional[str], labels: Dict[str, Optional[Context]], booleans: Dict[str, bool],
             entries: Iterable[str] = tuple(ENTRY_TYPES)) -> List[Finding]:
    """What SELinux means for the agents that run `entries` (the targets of our links)."""
    if mode in (None, DISABLED):
        return [Finding(True, "SELinux is %s: no labels needed" % ("disabled" if mode else "not in use"))]
    hint = "" if mode == ENFORCING else " (permissive now: only logged, refused once enforcing)"
    result = []
    for entry in entries:
        wanted = ENTRY_TYPES[entry]
        if entry not in labels:
            result.append(Finding(False, "cannot read the SELinux label of %s" % entry))
            continue
        context = labels[entry]
        if context is not None and context.type == wanted:
            result.append(Finding(True, "%s is labelled %s" % (entry, wanted)))
            continue
        result.append(Finding(False, "%s is labelled %s, not %s: the agent runs it confined and the "
                                     "freeze is refused%s; fix: semanage fcontext -a -t %s %s && restorecon %s"
                                     % (entry, context.type if context else "nothing", wanted, hint,
                                        wanted, entry, entry)))
    if paths.QEMU_GA_HOOK in entries:
        state = booleans.get(QEMU_GA_BOOLEAN)
        if state:
            result.append(Finding(True, "SELinux boolean %s is on" % QEMU_GA_BOOLEAN))
        elif state is None:
            result.append(Finding(False, "cannot read the SELinux boolean %s (qemu-ga runs hooks unconfined "
                                         "only with it on)" % QEMU_GA_BOOLEAN))
        else:
            result.append(Finding(False, "SELinux boolean %s is off: the QEMU guest agent runs the hook "
                                         "confined and the freeze is refused%s; fix: setsebool -P %s on"
                                         % (QEMU_GA_BOOLEAN, hint, QEMU_GA_BOOLEAN)))
    return result


def report(getenforce_output: str, ls_z_output: str, getsebool_output: str,
           entries: Iterable[str] = tuple(ENTRY_TYPES)) -> List[Finding]:
    """findings() from the captured output of getenforce, ls -Z ENTRY... and getsebool."""
    return findings(parse_getenforce(getenforce_output), parse_ls_z(ls_z_output),
                    parse_getsebool(getsebool_output), tuple(entries))
