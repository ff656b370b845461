"""The snapshot agents' callers, emulated from their source code, and a scratch installation.

Each caller runs our hook files exactly as the agent does (see quiesce(8), SNAPSHOT
AGENTS): the same argv shape (exec vs `sh FILE` vs `sh -c`), arguments that are not ours,
a minimal environment, pipes it reads or never reads, and its timeout, which kills only
what the agent kills. The files themselves are what `quiesce register` creates, in a
scratch root; they exec launchers in a scratch library directory that run this work tree
with the test's config file (in place of /usr/lib/quiesce).
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from quiesce.agents import catalog, register
from quiesce.base import config

from .runner import REPO, SYSTEM_PATH, TAG_VAR, QuiesceEnv, python_path

EXAMPLES = os.path.join(REPO, "examples")
# What a hook runner under systemd passes: no HOME, no QUIESCE_*.
AGENT_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
# The packages' entry files; vmware-hook and qemu-ga-hook are copies of hook with their own
# SELinux labels.
HOOK_ENTRY = {"freeze": "freeze_main", "thaw": "thaw_main", "hook": "hook_main", "vmware-hook": "hook_main",
              "qemu-ga-hook": "hook_main"}


class Installation:
    """A scratch root with quiesce's entry points, for `quiesce register` and the agents."""

    def __init__(self, env: QuiesceEnv):
        self.env = env
        self.root = os.path.join(env.root, "sysroot")
        self.libdir = os.path.join(env.root, "lib")
        os.makedirs(self.root)
        os.makedirs(self.libdir)
        exports = "export QUIESCE_CONFIG='%s' PYTHONPATH='%s' %s='%s'\n" % (
            env.conf, python_path(), TAG_VAR, env.tag)
        for name, entry in HOOK_ENTRY.items():
            self._launcher(name, exports + "exec %s -sB -c 'from quiesce.hooks import %s; %s()' \"$@\"\n"
                           % (sys.executable, entry, entry))
        # Stands for /usr/sbin/quiesce in the shipped examples.
        self.command = self._launcher("quiesce", exports + "exec %s -sB -m quiesce \"$@\"\n" % sys.executable)

    def _launcher(self, name: str, body: str) -> str:
        path = os.path.join(self.libdir, name)
        with open(path, "w") as handle:
            handle.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)
        return path

    def register(self, agent: catalog.Agent) -> None:
        settings = config.parse(["--config", self.env.conf, "register", agent.name])
        register.register(agent, register.Layout(self.root, self.libdir), settings)

    def path(self, path: str) -> str:
        return self.root + path

    def example(self, name: str, directory: str) -> str:
        """A shipped example, as the admin installs it, with /usr/sbin/quiesce pointing here."""
        with open(os.path.join(EXAMPLES, name)) as handle:
            text = handle.read().replace("/usr/sbin/quiesce", self.command)
        fd, path = tempfile.mkstemp(prefix="script-", suffix=".sh", dir=directory)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return path


class Outcome:
    def __init__(self, rc: Optional[int], output: bytes, elapsed: float):
        self.rc = rc                  # None: still running, or killed by the caller's timeout
        self.output = output
        self.elapsed = elapsed

    def __repr__(self) -> str:
        return "<rc=%r in %.2fs: %r>" % (self.rc, self.elapsed, self.output[-2000:])


def _read_to_eof(pipe, deadline: float) -> bytes:
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the pipe stayed open: some process kept the hook's stdio (%r)" % data[-500:])
        if select.select([pipe], [], [], remaining)[0]:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                return data
            data += chunk


def _kill_direct_child_at(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return True


def _as(caller: Optional[str]) -> Dict[str, str]:
    """The agent's environment; caller stands for the agent's process name, which quiesce
    reads from the process tree (/proc/PID/stat) to tell callers apart."""
    return dict(AGENT_ENV, QUIESCE_CALLER=caller) if caller else AGENT_ENV


def gce(script: str, disks: str, timeout: float = 60.0, caller: Optional[str] = "google-guest-agent") -> Outcome:
    """Google's guest agent: exec'd directly with the disk list; stdout discarded; stderr
    piped and read to EOF (Go's cmd.Wait); on timeout only the direct child is killed."""
    began = time.monotonic()
    proc = subprocess.Popen([script, disks], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=_as(caller), cwd="/")
    killed = _kill_direct_child_at(proc, timeout)
    err = _read_to_eof(proc.stderr, time.monotonic() + 20)
    proc.stderr.close()
    return Outcome(None if killed else proc.returncode, err, time.monotonic() - began)


class AzurePlugin:
    """Azure's VMSnapshotLinux script plugin: Popen(['sh', script, *params]) in the extension
    directory, pipes never read, polled every poll period; the timeout only stops the
    waiting (the script is not killed); post runs once pre ran, whatever pre did."""

    def __init__(self, install: Installation, poll: float = catalog.AZURE_POLL_SECONDS):
        with open(install.path(catalog.AZURE_CONFIG)) as handle:
            self.config = json.load(handle)
        self.install = install
        self.poll = poll
        self.cwd = tempfile.mkdtemp(prefix="azext-", dir=install.env.root)
        self.procs: List[subprocess.Popen] = []

    def run(self, phase: str, timeout: Optional[float] = None) -> Outcome:
        script = self.install.path(self.config["%sScriptLocation" % phase])
        params = self.config["%sScriptParams" % phase] or ["", ""]     # Microsoft's sample: two empty strings
        began = time.monotonic()
        proc = subprocess.Popen(["sh", script, *params], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=AGENT_ENV, cwd=self.cwd)
        self.procs.append(proc)
        limit = timeout if timeout is not None else self.config["timeoutInSeconds"]
        waited = 0.0
        while True:
            time.sleep(self.poll)
            waited += self.poll
            if proc.poll() is not None or waited >= limit:
                break
        return Outcome(proc.poll(), b"", time.monotonic() - began)

    def finish(self, timeout: float = 60.0) -> List[Optional[int]]:
        """Test clean-up: wait for every script still running; nothing was ever read."""
        codes = []
        for proc in self.procs:
            try:
                proc.wait(timeout)
            finally:
                for pipe in (proc.stdout, proc.stderr):
                    pipe.close()
            codes.append(proc.returncode)
        shutil.rmtree(self.cwd, ignore_errors=True)
        return codes


def aws_script(install: Installation, command: str, execution_id: str = "exec-123") -> str:
    """The SSM document's script as the SSM agent renders it for DLM's `command` parameter."""
    with open(os.path.join(EXAMPLES, "aws-dlm-ssm-document.json")) as handle:
        document = json.load(handle)
    lines = document["mainSteps"][0]["inputs"]["runCommand"]
    assert command in document["parameters"]["command"]["allowedValues"]
    text = "\n".join(lines) + "\n"
    return (text.replace("{{ command }}", command).replace("{{ executionId }}", execution_id)
            .replace("/usr/sbin/quiesce", install.command))


def aws(install: Installation, command: str, timeout: float = 10.0) -> Outcome:
    """The SSM agent: `sh -c SCRIPT` as root, output to files; at ExecutionTimeout the
    whole process group is killed."""
    began = time.monotonic()
    with tempfile.TemporaryFile(dir=install.env.root) as out:
        proc = subprocess.Popen(["sh", "-c", aws_script(install, command)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=AGENT_ENV, cwd="/",
                                start_new_session=True)
        try:
            proc.wait(timeout)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed = True
        out.seek(0)
        output = out.read()
    return Outcome(None if killed else proc.returncode, output, time.monotonic() - began)


def exec_direct(path: str, args: Sequence[str] = (), timeout: float = 60.0, caller: Optional[str] = None) -> Outcome:
    """Nutanix Guest Tools: the script run directly as root, no arguments."""
    began = time.monotonic()
    done = subprocess.run([path, *args], stdin=subprocess.DEVNULL, capture_output=True, env=_as(caller),
                          cwd="/", timeout=timeout)
    return Outcome(done.returncode, done.stdout + done.stderr, time.monotonic() - began)


def vmware(path: str, op: str, timeout: float = 60.0) -> Outcome:
    """VMware Tools: bash -c '"<path>" <op>', waiting only for that pid, stdio inherited."""
    began = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(["bash", "-c", '"%s" %s' % (path, op)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, env=AGENT_ENV, cwd="/")
        proc.wait(timeout)
        out.seek(0)
        return Outcome(proc.returncode, out.read(), time.monotonic() - began)


def veeam(script: str, timeout: float = 600.0) -> Outcome:
    """Veeam B&R: the uploaded script run over SSH with no arguments; the session (and so
    the job) waits until every process has let go of its stdout and stderr."""
    began = time.monotonic()
    proc = subprocess.Popen(["sh", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=AGENT_ENV, cwd="/tmp")
    proc.stdin.close()
    output = _read_to_eof(proc.stdout, time.monotonic() + timeout)
    proc.stdout.close()
    return Outcome(proc.wait(10), output, time.monotonic() - began)
