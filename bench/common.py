"""What the demo and the benchmark share: the test harness, timing analysis, tables.

The private servers, the writer threads and the quiesce runner come from
tests/integration (imported, never copied), so the demo and the benchmark exercise the
product the way the integration tests do, in a separate process with the minimal
environment a hook runner gives; quiesce itself is started as the installed command
starts it (`python3 -sB`, then quiesce.hooks.command_main).
"""

import bisect
import contextlib
import datetime
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
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
           "QuiesceEnv", "Run", "run_quiesce", "run_command", "wait_exit", "install_signal_handlers", "read_json", "wait_result",
           "iso_to_mono",
           "ack_times", "gap_spanning", "first_ack_after", "longest_stall", "median", "p90",
           "render_table", "render_markdown", "server_version_short", "machine_line", "driver_available",
           "product_revision"]


# --- signals ----------------------------------------------------------------------------

def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every finally block (thaw, unfreeze,
    unmount, server kill) runs whichever way the program is stopped."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # An ignored SIGHUP (nohup) or SIGINT (background job) stays ignored.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _raise_interrupt)
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


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def wait_exit(proc: subprocess.Popen, timeout: float, what: str) -> float:
    """Wait for the process to exit and return the monotonic time it was seen to.

    Popen.wait(timeout) polls with sleeps of up to 50 ms, which would add that much to
    every measured duration; a pidfd becomes readable the moment the process exits.
    On timeout (TimeoutError) or interruption the process is killed.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        if pidfd is not None:
            ready, _, _ = select.select([pidfd], [], [], timeout)
            ended = time.monotonic()
            if not ready:
                raise TimeoutError("%s did not finish within %.0f s" % (what, timeout))
            proc.wait()
        else:
            proc.wait(timeout)
            ended = time.monotonic()
        return ended
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)


# What the installed /usr/sbin/quiesce does (python3 -sB, then quiesce.hooks.command_main), minus
# its sys.path entry for /usr/lib/quiesce: the repository's code is measured, started
# the way production starts it rather than through `python3 -m`.
LAUNCHER = "import sys; from quiesce.hooks import command_main; sys.exit(command_main())"


def byte_compile_product() -> None:
    """Compile quiesce/ as the packages do at install time (dh_python3, the RPM's %post
    equivalent), so start-up is measured as installed rather than compiling from source."""
    import compileall
    compileall.compile_dir(os.path.join(REPO, "quiesce"), quiet=1)


def quiesce_command(env: QuiesceEnv, *args: str) -> List[str]:
    return [sys.executable, "-sB", "-c", LAUNCHER, "--config", env.conf, *args]


def run_quiesce(env: QuiesceEnv, *args: str, timeout: float = 60.0) -> Run:
    """One quiesce process started like the installed command, timed from start to exit.

    The environment and output files are the runner's (env.env, files in env.outdir);
    its wait is not used, see wait_exit.
    """
    return run_command(quiesce_command(env, *args), env.env(), env.outdir, timeout)


def run_command(cmd: Sequence[str], environment: Dict[str, str], outdir: str, timeout: float = 60.0) -> Run:
    """One process, stdin /dev/null, cwd /, output to files in outdir, timed from start to exit."""
    fd_out, out_path = tempfile.mkstemp(prefix="out-", dir=outdir)
    fd_err, err_path = tempfile.mkstemp(prefix="err-", dir=outdir)
    began = time.monotonic()
    try:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=fd_out, stderr=fd_err,
                                env=environment, cwd="/")
    finally:
        os.close(fd_out)
        os.close(fd_err)
    ended = wait_exit(proc, timeout, " ".join(cmd[-2:]))
    try:
        return Run(proc.returncode, began, ended, _read(out_path), _read(err_path))
    finally:
        for path in (out_path, err_path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def wait_result(env: QuiesceEnv, holder_pid: Optional[int], timeout: float = 5.0) -> Dict[str, Any]:
    """The holder's result.json for this cycle ({} if it never came).

    The holder answers thaw first and records the result after: right after thaw returns
    the file may still be missing, or be an earlier cycle's.
    """
    path = os.path.join(env.runtime_dir, "result.json")
    deadline = time.monotonic() + timeout
    while True:
        result = read_json(path) or {}
        if result and (holder_pid is None or result.get("holder_pid") == holder_pid):
            return result
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.01)


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


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, indent: str = "  ") -> str:
    """Plain text: the first `left` columns left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return (indent + "  ".join(parts)).rstrip()

    out = [line(cells[0]), indent + "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A GitHub-flavoured Markdown table; the first `left` columns are text, the rest figures."""
    def esc(value):
        return ("" if value is None else str(value)).replace("|", "\\|")
    out = ["| " + " | ".join(esc(h) for h in headers) + " |",
           "|" + "|".join(":---" if i < left else "---:" for i in range(len(headers))) + "|"]
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


def product_revision() -> Optional[str]:
    """The last commit that changed quiesce/ ("+changes" if the tree differs from it), or None."""
    def git(*args):
        return subprocess.run(["git", "-C", REPO, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, universal_newlines=True, timeout=30)
    try:
        head = git("log", "-1", "--format=%h", "--", "quiesce")
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = git("status", "--porcelain", "--", "quiesce").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty else "")


def driver_available(name: str) -> bool:
    module = {"mysql-connector": "mysql.connector", "pymysql": "pymysql"}[name]
    code = "import %s" % module
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": os.pathsep.join([REPO, _DEPS])}
    return subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60).returncode == 0
