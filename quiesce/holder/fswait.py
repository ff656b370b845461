"""What a blocked probe write waits for, as the kernel tells it: a filesystem freeze or
anything else.

Pure functions over the text of /proc/PID/stack and /proc/PID/wchan, unit-tested on
captured text from several kernels. Anything not clearly the freeze lock is "not frozen":
a missed thaw only costs the usual thaw hook, a false one would release the lock during
the snapshot.
"""

from __future__ import annotations

import re
import time
from typing import List, NamedTuple, Optional


class Stamp(NamedTuple):
    """One instant on both clocks: monotonic for durations, wall for reports."""

    monotonic: float
    wall: float

    @classmethod
    def now(cls) -> "Stamp":
        return cls(time.monotonic(), time.time())


class WaitClass(NamedTuple):
    """What a blocked thread waits for, as far as the kernel tells.

    frozen -- the thread sleeps on a superblock freeze lock
    wait   -- the innermost wait function seen (diagnostics), None if nothing readable
    source -- "stack", "wchan" or None: which /proc file decided
    """

    frozen: bool
    wait: Optional[str]
    source: Optional[str]


# Frames of the context switch itself; they say nothing about what is awaited.
_SWITCH_FRAMES = frozenset({
    "__switch_to", "__switch_to_asm", "__schedule", "schedule",
    "schedule_preempt_disabled", "schedule_timeout", "preempt_schedule_common",
    "_cond_resched", "__cond_resched",
})

# Sleeping primitives the freeze lock has been built from: a percpu rw-semaphore since
# 4.6 (whose slow path went through a plain rw-semaphore until 5.7), wait_event inside
# __sb_start_write before that.  The plain rwsem ones are only accepted when a percpu
# frame and a write-side caller are also there: on their own they are any read lock
# (an inode's i_data_sem under slow I/O, mmap_lock, ...).
LOCK_FRAMES = frozenset({
    "percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read",
    "percpu_down_read_internal",
    "rwsem_down_read_slowpath", "rwsem_down_read_failed",
    "rwsem_down_read_failed_killable", "call_rwsem_down_read_failed",
    "__down_read", "down_read", "__down_read_common",
})
_PERCPU_FRAMES = frozenset({
    "percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read",
    "percpu_down_read_internal",
})

# Callers that take the freeze lock: the sb_start_*() helpers when not inlined, and the
# write entry points they are inlined into.  Another percpu rwsem taken elsewhere in the
# write path (ext4's s_writepages_rwsem under fsync, cpu hotplug) has a different caller.
SB_START_FRAMES = frozenset({
    "__sb_start_write", "sb_start_write", "__sb_start_write_trylock",
    "sb_start_write_trylock", "sb_start_intwrite", "sb_start_pagefault",
})
_FREEZE_CALLERS = SB_START_FRAMES | frozenset({
    "file_start_write", "kiocb_start_write",
    "vfs_write", "__vfs_write", "vfs_writev", "do_iter_write", "vfs_iter_write",
    "__kernel_write", "kernel_write", "ksys_write", "ksys_pwrite64",
    "sys_write", "SyS_write", "sys_pwrite64", "SyS_pwrite64",
    "__x64_sys_pwrite64", "__do_sys_pwrite64", "__se_sys_pwrite64",
    "__ia32_sys_pwrite64", "__arm64_sys_pwrite64", "__x64_sys_write",
    "__arm64_sys_write", "mnt_want_write", "mnt_want_write_file",
})

# With only wchan to go by, a percpu-rwsem wait during our pwrite() can only be the
# freeze lock; a plain rwsem wait can be many things, so it never counts.
_WCHAN_FREEZE = frozenset({
    "percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read",
    "__sb_start_write", "sb_start_write",
})

_FRAME = re.compile(r"^\s*(?:\[<[0-9a-fA-Fx]*>\]\s*)?([A-Za-z_$][\w.$]*)\+0x")


def _base_name(symbol: str) -> str:
    # Compiler clones: "vfs_write.part.0", "percpu_rwsem_wait.constprop.0".
    return symbol.split(".", 1)[0]


def parse_stack(text: str) -> List[str]:
    """Function names of a /proc/PID/stack dump, innermost first."""
    frames = []
    for line in text.splitlines():
        m = _FRAME.match(line)
        if m:
            frames.append(_base_name(m.group(1)))
    return frames


def classify_wait(stack: Optional[str], wchan: Optional[str],
                  in_write: bool = True) -> WaitClass:
    """Decide from /proc text whether a blocked thread waits for a filesystem thaw.

    stack    -- contents of /proc/.../stack, or None if unreadable
    wchan    -- contents of /proc/.../wchan, or None if unreadable
    in_write -- the thread is inside write()/pwrite() (not fsync); wchan alone is only
                trusted then, because the percpu rwsem it names could belong to
                something else during an fsync

    The stack decides when it has frames; wchan is the fallback.  Anything not clearly
    the freeze lock is "not frozen": a missed thaw only costs the usual thaw hook, a
    false one would release the lock during the snapshot.
    """
    frames = parse_stack(stack) if stack else []
    while frames and frames[0] in _SWITCH_FRAMES:
        frames.pop(0)
    if frames:
        i = 0
        percpu = False
        while i < len(frames) and frames[i] in LOCK_FRAMES:
            percpu = percpu or frames[i] in _PERCPU_FRAMES
            i += 1
        caller = frames[i] if i < len(frames) else None
        frozen = caller in SB_START_FRAMES or (percpu and caller in _FREEZE_CALLERS)
        return WaitClass(frozen, frames[0], "stack")
    w = _base_name(wchan.strip()) if wchan else ""
    if w and w != "0":
        return WaitClass(in_write and w in _WCHAN_FREEZE, w, "wchan")
    return WaitClass(False, None, None)


def read_proc(path: str) -> Optional[str]:
    """A /proc file's text, None if it cannot be read (the process is gone, or hidden)."""
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(65536).decode("ascii", "replace")
    except OSError:
        return None


def inspection(pid: int) -> str:
    """"stack", "wchan" or "none": what this kernel lets us read of a sleeping process."""
    # The kernel shows no stack for a task running on another CPU, so give the process a
    # moment to go to sleep; an unreadable file (None) is final.
    for _ in range(100):
        text = read_proc("/proc/%d/stack" % pid)
        if text is None:
            break
        if parse_stack(text):
            return "stack"
        time.sleep(0.002)
    if read_proc("/proc/%d/wchan" % pid) is not None:
        return "wchan"
    return "none"


def classify_process(pid: int, source: Optional[str], in_write: bool) -> WaitClass:
    """classify_wait() on what process pid shows now (its stack only where source is "stack")."""
    return classify_wait(read_proc("/proc/%d/stack" % pid) if source == "stack" else None,
                         read_proc("/proc/%d/wchan" % pid), in_write)
