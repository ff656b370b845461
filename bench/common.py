"""What the demo and the benchmark share: the test harness, timing analysis, tables.

The private servers, the writer threads and the quiesce runner come from
tests/integration (imported, never copied), so the demo and the benchmark exercise the
product exactly the way the integration tests do: `python3 -m quiesce --config FILE ...`
in a separate process with the minimal environment a hook runner gives.
"""

import bisect
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
_DEPS = os.path.join(REPO, ".deps")
if os.path.isdir(_DEPS) and _DEPS not in sys.path:
    sys.path.append(_DEPS)

from tests.integration.load import Commit, Writers, table_rows  # noqa: E402
from tests.integration.mariadb import MariaDB, ServerError, mariadb_version  # noqa: E402
from tests.integration.runner import QuiesceEnv  # noqa: E402

__all__ = ["REPO", "Commit", "Writers", "table_rows", "MariaDB", "ServerError", "mariadb_version",
           "QuiesceEnv", "Run", "run_quiesce", "install_signal_handlers", "read_json", "iso_to_mono",
           "ack_times", "gap_spanning", "first_ack_after", "longest_stall", "median", "p90",
           "render_table", "render_markdown", "server_version_short", "machine_line", "driver_available"]


# --- signals ----------------------------------------------------------------------------

def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every finally block (thaw, unfreeze,
    unmount, server kill) runs whichever way the program is stopped."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    # Eight writer threads share the GIL with the thread that timestamps freeze and thaw:
    # a shorter switch interval keeps those timestamps within about a millisecond.
    sys.setswitchinterval(0.0005)


# --- running quiesce ----------------------------------------------------------------------

class Run(NamedTuple):
    rc: int
    began: float      # monotonic, just before the process was started
    ended: float      # monotonic, when its exit was seen
    stdout: str
    stderr: str

    @property
    def ms(self) -> float:
        return (self.ended - self.began) * 1000.0

    @property
    def message(self) -> str:
        lines = [line for line in (self.stderr + self.stdout).splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_quiesce(env: QuiesceEnv, *args: str, timeout: float = 60.0) -> Run:
    """One `python3 -m quiesce --config FILE ARGS` process, timed from start to exit."""
    running = env.start(*args)
    result = running.wait(timeout)
    return Run(result.rc, running.began, running.ended, result.stdout, result.stderr)


def read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def iso_to_mono(text: Optional[str]) -> Optional[float]:
    """An ISO 8601 UTC time quiesce wrote (millisecond precision) on the monotonic clock.

    The holder is another process, but both clocks are system-wide, so the offset sampled
    here converts its wall-clock stamps. Truncation to the millisecond is compensated by
    half a millisecond.
    """
    if not text:
        return None
    epoch = datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() + 0.0005
    offsets = sorted(time.time() - time.monotonic() for _ in range(3))
    return epoch - offsets[1]


# --- what the writers saw -----------------------------------------------------------------

def ack_times(commits: Iterable[Commit], tables: Optional[Sequence[str]] = None) -> List[float]:
    """Sorted acknowledgement times of the commits (of the given tables only)."""
    return sorted(c.acked for c in commits if tables is None or c.table in tables)


def gap_spanning(acks: Sequence[float], start: float, end: float) -> Optional[Tuple[float, float]]:
    """(last ack at or before start, first ack at or after end) if no commit was acknowledged
    in between; None if one was, or if there is no ack on one side."""
    i = bisect.bisect_right(acks, start)
    j = bisect.bisect_left(acks, end)
    if i == 0 or j >= len(acks) or j > i:
        return None
    return acks[i - 1], acks[j]


def first_ack_after(acks: Sequence[float], when: float) -> Optional[float]:
    i = bisect.bisect_right(acks, when)
    return acks[i] if i < len(acks) else None


def longest_stall(acks: Sequence[float], start: float, end: float) -> float:
    """Longest stretch inside [start, end] in which no commit was acknowledged."""
    inside = acks[bisect.bisect_right(acks, start):bisect.bisect_left(acks, end)]
    points = [start] + list(inside) + [end]
    return max(b - a for a, b in zip(points, points[1:]))


# --- statistics and tables ----------------------------------------------------------------

def _clean(values: Iterable[Optional[float]]) -> List[float]:
    return sorted(v for v in values if v is not None)


def median(values: Iterable[Optional[float]]) -> Optional[float]:
    data = _clean(values)
    return statistics.median(data) if data else None


def p90(values: Iterable[Optional[float]]) -> Optional[float]:
    """Linear interpolation between closest ranks; with few samples it is close to the max."""
    data = _clean(values)
    if not data:
        return None
    pos = 0.9 * (len(data) - 1)
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """Plain text: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return (indent + "  ".join(parts)).rstrip()

    out = [line(cells[0]), indent + "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def esc(value):
        return ("" if value is None else str(value)).replace("|", "\\|")
    out = ["| " + " | ".join(esc(h) for h in headers) + " |",
           "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# --- environment --------------------------------------------------------------------------

def server_version_short() -> str:
    """'MariaDB 10.11.19' from `mariadbd --version`."""
    text = mariadb_version()
    for word in text.split():
        if "-MariaDB" in word:
            return "MariaDB " + word.split("-")[0]
    return text.split(" for ")[0]


def machine_line() -> str:
    cpus = os.cpu_count() or 0
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    distro = ""
    try:
        with open("/etc/os-release") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    parts = ["%d cores" % cpus]
    if model:
        parts.append(model)
    parts.append("Linux %s" % platform.release())
    if distro:
        parts.append(distro)
    return ", ".join(parts)


def driver_available(name: str) -> bool:
    module = {"mysql-connector": "mysql.connector", "pymysql": "pymysql"}[name]
    code = "import %s" % module
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": os.pathsep.join([REPO, _DEPS])}
    return subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60).returncode == 0
