"""Run the quiesce command line against a test server, and find what it leaves behind.

QuiesceEnv owns one private directory (short path under /tmp: the holder's unix socket
lives in runtime-dir and socket paths are limited to 107 bytes) holding the config file
(0600), runtime-dir (0700) and the position file's directory. Commands run as
`sys.executable -m quiesce --config CONF ...` with PYTHONPATH = repo root (+ .deps), stdin
on /dev/null, cwd / and a minimal environment like the one VMware Tools gives its hooks
(PATH and LANG, no HOME). Output goes to files, not pipes, so that a holder which kept the
caller's output open cannot hang the suite; one test checks the pipe case on purpose.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPS = os.path.join(REPO, ".deps")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TAG_VAR = "QTEST_TAG"   # not QUIESCE_*: those are configuration for the program under test

POSITION_KEYS = ("instance", "binlog_file", "binlog_position", "gtid", "server_version", "flavour",
                 "lock", "locked_at", "replica", "replica_stopped", "durability", "datadir",
                 "directories")


def python_path(connector: bool = True) -> str:
    """PYTHONPATH for quiesce: the work tree, and .deps/ (mysql-connector-python) if `connector`."""
    parts = [REPO]
    if connector and os.path.isdir(DEPS):
        parts.append(DEPS)
    return os.pathsep.join(parts)


SABOTAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sabotage")


def sabotaged(*names: str) -> Dict[str, str]:
    """Environment for QuiesceEnv.run(env=...) that disables safety mechanisms in the command
    and its holder (see sabotage/sitecustomize.py): for control tests only."""
    return {"QTEST_SABOTAGE": ",".join(names)}


def base_env(tag: Optional[str] = None, connector: bool = True) -> Dict[str, str]:
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "PYTHONPATH": python_path(connector)}
    if tag:
        env[TAG_VAR] = tag
    return env


class Result(tuple):
    """(rc, stdout, stderr) with .elapsed (seconds) and .cmd."""

    def __new__(cls, rc: int, stdout: str, stderr: str, elapsed: float, cmd: Sequence[str]):
        self = super().__new__(cls, (rc, stdout, stderr))
        self.elapsed = elapsed
        self.cmd = list(cmd)
        return self

    rc = property(lambda self: self[0])
    stdout = property(lambda self: self[1])
    stderr = property(lambda self: self[2])

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return ("<%s: rc=%s in %.2fs\n--- stdout\n%s--- stderr\n%s>"
                % (" ".join(self.cmd), self.rc, self.elapsed, self.stdout, self.stderr))


class CommandTimeout(AssertionError):
    pass


class Running:
    """A quiesce command started in the background (see QuiesceEnv.start)."""

    def __init__(self, cmd: List[str], env: Dict[str, str], workdir: str):
        self.cmd = cmd
        fd_out, self.out_path = tempfile.mkstemp(prefix="out-", dir=workdir)
        fd_err, self.err_path = tempfile.mkstemp(prefix="err-", dir=workdir)
        self.began = time.monotonic()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd_out, stderr=fd_err,
                                         env=env, cwd="/")
        finally:
            os.close(fd_out)
            os.close(fd_err)
        self.ended: Optional[float] = None

    def _read(self, path: str) -> str:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def wait(self, timeout: float) -> Result:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise CommandTimeout("%s did not finish within %.0f s\n--- stdout\n%s--- stderr\n%s"
                                 % (" ".join(self.cmd), timeout, self._read(self.out_path),
                                    self._read(self.err_path)))
        self.ended = time.monotonic()
        return Result(rc, self._read(self.out_path), self._read(self.err_path),
                      self.ended - self.began, self.cmd)


def _bound_unix_inodes(prefix: str) -> Set[str]:
    inodes = set()
    try:
        with open("/proc/net/unix") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if len(fields) >= 8 and fields[7].startswith(prefix):
                    inodes.add(fields[6])
    except OSError:
        pass
    return inodes


def _pids() -> Iterable[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            return needle in handle.read().split(b"\0")
    except OSError:
        return False


def _socket_inodes_of(pid: int) -> Set[str]:
    out = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


def _start_ticks(pid: int) -> Optional[int]:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _parent(pid: int) -> Optional[int]:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class QuiesceEnv:
    """Config, runtime-dir and position file for one test, and the way to run quiesce.

    driver: the config's driver line. None writes none and runs the commands without .deps/
    on PYTHONPATH, as on Debian and Ubuntu, where only PyMySQL is packaged: "auto" then
    means PyMySQL, as it does for most installs. With "pymysql" Connector/Python is left out
    too; "auto" and "mysql-connector" run with both drivers importable.
    """

    def __init__(self, server, driver: Optional[str] = "pymysql", root: Optional[str] = None,
                 **settings):
        self.server = server
        self.root = root or tempfile.mkdtemp(prefix="qt-", dir="/tmp")
        self._own_root = root is None
        self.tag = "qt-" + uuid.uuid4().hex
        self.conf = os.path.join(self.root, "quiesce.conf")
        self.runtime_dir = os.path.join(self.root, "run")
        self.state_dir = os.path.join(self.root, "state")
        self.position_file = os.path.join(self.state_dir, "position.json")
        self.outdir = os.path.join(self.root, "out")
        for path in (self.runtime_dir, self.state_dir, self.outdir):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o700)
        self.settings: Dict[str, object] = {}
        if server is not None:
            self.settings["socket"] = server.socket
        self.metrics_file = os.path.join(self.state_dir, "quiesce.prom")
        self.history_file = os.path.join(self.state_dir, "history.jsonl")
        self.settings.update({"user": "root", "runtime-dir": self.runtime_dir,
                              "position-file": self.position_file, "metrics-file": self.metrics_file})
        if driver:
            self.settings["driver"] = driver
        self.connector = driver not in (None, "pymysql")
        self.settings.update({k.replace("_", "-"): v for k, v in settings.items()})
        self.position_file = str(self.settings["position-file"])
        self.extra_text = ""
        self.write_config()
        self.history: List[Result] = []

    # ------------------------------------------------------------------ config
    def write_config(self, extra_text: Optional[str] = None, **changes) -> str:
        """(Re)write the config file, mode 0600. A value of None removes a key."""
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is None:
                self.settings.pop(key, None)
            else:
                self.settings[key] = value
        if extra_text is not None:
            self.extra_text = extra_text
        text = "".join("%s = %s\n" % (k, v) for k, v in self.settings.items()) + self.extra_text
        fd = os.open(self.conf + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(self.conf + ".tmp", 0o600)
        os.rename(self.conf + ".tmp", self.conf)
        return self.conf

    # ------------------------------------------------------------------ running
    def command(self, *args: str) -> List[str]:
        return [sys.executable, "-m", "quiesce", "--config", self.conf, *args]

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = base_env(self.tag, self.connector)
        env.update(extra or {})
        if env.get("QTEST_SABOTAGE"):
            env["PYTHONPATH"] = os.pathsep.join([SABOTAGE_DIR, env["PYTHONPATH"]])
        return env

    def start(self, *args: str, env: Optional[Dict[str, str]] = None, prefix: Sequence[str] = ()) -> Running:
        """Start a command in the background; `prefix` wraps it (e.g. an unshare command)."""
        return Running([*prefix, *self.command(*args)], self.env(env), self.outdir)

    def run(self, *args: str, timeout: float = 60.0, env: Optional[Dict[str, str]] = None,
            prefix: Sequence[str] = ()) -> Result:
        result = self.start(*args, env=env, prefix=prefix).wait(timeout)
        self.history.append(result)
        return result

    __call__ = run

    def status(self, timeout: float = 30.0, rc: int = 0) -> Dict[str, object]:
        """status --json; rc: the exit status expected (6 while a lock is lost or expired)."""
        result = self.run("status", "--json", timeout=timeout)
        assert result.rc == rc, result
        return json.loads(result.stdout)

    def position(self) -> Dict[str, object]:
        with open(self.position_file, encoding="utf-8") as handle:
            return json.load(handle)

    def state(self) -> Optional[Dict[str, object]]:
        try:
            with open(os.path.join(self.runtime_dir, "state.json"), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ holders
    def holder_pids(self) -> Set[int]:
        """Holders: processes of this environment whose parent is not one of them.

        A holder's own helpers (e.g. its filesystem-probe child) are not counted, so two
        holders mean two independent lock owners. See process_pids() for how they are found.
        """
        pids = self.process_pids()
        return {pid for pid in pids if _parent(pid) not in pids}

    def process_pids(self) -> Set[int]:
        """Every live process that belongs to this environment, other than the test itself.

        Found three ways, so that no single product detail decides: a process holding a unix
        socket bound inside runtime-dir (the holder's listener), a process whose environment
        carries this test's tag (everything the commands started), and state.json's holder_pid.
        """
        me = os.getpid()
        inodes = _bound_unix_inodes(self.runtime_dir + "/")
        needle = ("%s=%s" % (TAG_VAR, self.tag)).encode()
        found = set()
        for pid in _pids():
            if pid == me or _is_zombie(pid):
                continue
            if _environ_has(pid, needle) or (inodes and inodes & _socket_inodes_of(pid)):
                found.add(pid)
        state = self.state()
        if state and isinstance(state.get("holder_pid"), int):
            pid = state["holder_pid"]
            if (pid != me and not _is_zombie(pid)
                    and _start_ticks(pid) == state.get("holder_start_ticks")):
                found.add(pid)
        return found

    def wait_no_holder(self, timeout: float = 10.0) -> Set[int]:
        """Wait (bounded) until no process of ours is left; returns those still alive."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.process_pids()
            if not pids or time.monotonic() >= deadline:
                return pids
            time.sleep(0.05)

    def kill_holders(self) -> Set[int]:
        pids = self.process_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def cleanup(self) -> Dict[str, object]:
        """End of test: thaw what is still frozen, then kill anything left. Reports what it found."""
        report: Dict[str, object] = {"holders": set(), "thaw": None}
        pids = self.process_pids()
        if pids:
            report["holders"] = set(pids)
            try:
                report["thaw"] = self.run("thaw", "--all", timeout=30)
            except Exception as exc:
                report["thaw"] = exc
            left = self.wait_no_holder(5)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        return report


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a true value; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)
