"""The detached process that owns the database locks between freeze and thaw.

freeze starts it with spawn() and waits for one readiness line. From "locked" until the
lock is released the holder writes nothing to disk and logs only into memory: the
filesystems may be frozen then, and any write would block it for the whole snapshot.
It releases on the thaw command, at its deadline, when a filesystem probe sees the
data directory thaw, or on SIGTERM; a lost connection is remembered for thaw to report.
"""

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from . import config, history, log as logsetup, paths, protocol, state
from .config import Settings
from .errors import Exit, QuiesceError, ServerNotRunning, StateError, exit_code_for

# How much longer than its own worst case the freeze command waits for the holder.
SPAWN_MARGIN = 15.0


def spawn_timeout(settings: Settings) -> float:
    per_target = 2 * settings.connect_timeout + settings.long_query_wait + settings.acquire_timeout + 30
    return per_target * len(settings.targets) + SPAWN_MARGIN


def spawn(settings: Settings) -> Dict[str, Any]:
    """Start a holder and return its readiness message ({"status": "locked"|"not-running"|"error"})."""
    settings_r, settings_w = os.pipe()
    ready_r, ready_w = os.pipe()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, %r); from quiesce.holder import main; main(%d, %d)"
            % (package_parent, settings_r, ready_w))
    try:
        # A fresh interpreter in its own session, stdio on /dev/null, cwd /, nothing inherited
        # but the two pipes: the hook runner waits only for our pid and never for the holder.
        proc = subprocess.Popen([sys.executable, "-sB", "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                close_fds=True, pass_fds=(settings_r, ready_w), start_new_session=True)
    finally:
        os.close(settings_r)
        os.close(ready_w)
    try:
        try:
            protocol.write_all_fd(settings_w, protocol.encode(config.settings_to_dict(settings)))
        finally:
            os.close(settings_w)
        try:
            line = protocol.read_line_fd(ready_r, spawn_timeout(settings))
        except TimeoutError:
            # Killing it closes its sessions, and the server drops any lock with them.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise StateError("the holder did not report within %.0f s and was killed; nothing stays locked"
                             % spawn_timeout(settings))
    finally:
        os.close(ready_r)
    if line is None:
        status = proc.wait(timeout=10)
        # It died after writing state.json, perhaps: its sessions, and so any lock, are gone.
        files = state.RuntimeFiles(settings.runtime_dir)
        state.remove(files.state)
        state.remove(files.socket)
        raise StateError("the holder exited (status %s) before reporting; see the system log" % status)
    message = protocol.decode(line)
    if message.get("status") != "locked":
        proc.wait(timeout=10)
    message["pid"] = proc.pid
    return message


class Holder:
    def __init__(self, settings: Settings, gate: logsetup.GatedHandler):
        self.settings = settings
        self.gate = gate
        self.log = logsetup.get()
        self.files = state.RuntimeFiles(settings.runtime_dir)
        self.locked: List[Any] = []
        self.listener: Optional[socket.socket] = None
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.started_wall = time.time()
        self.deadline = 0.0
        self.probes: List[Any] = []
        self.agent = history.calling_agent(os.getppid())  # the freeze command's caller, while it waits

    # -- acquisition ------------------------------------------------------------------

    def listen(self) -> None:
        state.remove(self.files.socket)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.files.socket)
        finally:
            os.umask(old_umask)
        listener.listen(8)
        self.listener = listener

    def lock_all(self) -> None:
        """Lock every instance or none: a failure releases those already locked."""
        from . import locking
        try:
            for target in self.settings.targets:
                self.locked.append(locking.acquire(target, self.settings, self.log, self._probe))
            self.deadline = time.monotonic() + self.settings.lock_timeout
            try:
                for item in self.locked:
                    os.makedirs(os.path.dirname(item.target.position_file), mode=0o700, exist_ok=True)
                    state.write_json_atomic(item.target.position_file, item.position, mode=0o644)
                state.write_json_atomic(self.files.state, self.state_record())
            except OSError as exc:
                raise StateError("cannot write %s: %s; nothing stays locked; fix: check position-file and "
                                 "runtime-dir" % (exc.filename, exc.strerror))
        except BaseException:
            self._release_all()
            self._restart_replicas()
            self._stop_probes()
            state.remove(self.files.state)
            raise

    def state_record(self) -> Dict[str, Any]:
        return {
            "holder_pid": os.getpid(),
            "holder_start_ticks": state.process_start_ticks(os.getpid()),
            "since": state.utc_at(self.started_wall),
            "deadline": state.utc_at(time.time() + (self.deadline - time.monotonic())),
            "release_on_fs_thaw": self.settings.release_on_fs_thaw,
            "instances": [{"name": i.target.name, "lock": i.strategy.name, "server": i.server.label,
                           "position_file": i.target.position_file, "wait_ms": round(i.wait_ms, 1),
                           "replica_stopped": list(i.stopped_channels)}
                          for i in self.locked],
        }

    def _probe(self, target: config.Target, datadir: Optional[str]) -> None:
        """Watch the data directory's filesystem, so that its thaw releases the lock at once.

        Called by locking.acquire just before the lock statement: starting a probe takes
        tens of milliseconds that would otherwise be spent with writers blocked.
        """
        if not self.settings.release_on_fs_thaw or not target.is_local or not datadir:
            return
        try:
            from . import fsprobe
            directory = fsprobe.choose_probe_dir(datadir, (paths.STATE_DIR,))
            if directory is None:
                self.log.info("%s: data directory %s not visible here; release-on-fs-thaw is off for it",
                              target.name, datadir)
                return
            if any(os.stat(directory).st_dev == os.stat(os.path.dirname(p.path)).st_dev for p in self.probes):
                return
            probe = fsprobe.FsThawProbe(directory, self._probe_fired)
            probe.start()
        except Exception as exc:  # the probe is an optimisation; the lock does not depend on it
            self.log.warning("%s: no filesystem-thaw probe (%s: %s); the thaw hook or the deadline releases "
                             "the lock", target.name, type(exc).__name__, exc)
            return
        self.probes.append(probe)

    def _stop_probes(self) -> None:
        for probe in self.probes:
            probe.stop()

    def _probe_fired(self) -> None:
        # Runs in the probe's thread: only wake the main loop, which does the release.
        try:
            os.write(self.wake_w, b"T")
        except BlockingIOError:
            pass

    # -- holding ----------------------------------------------------------------------

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        assert self.listener is not None
        selector.register(self.listener, selectors.EVENT_READ, "control")
        selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        for item in self.locked:
            selector.register(item.conn.fileno(), selectors.EVENT_READ, item)
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.finish("expired", "no thaw came within lock-timeout=%g s, so the holder released the "
                            "lock at its deadline" % self.settings.lock_timeout)
                return
            for key, _events in selector.select(remaining):
                if key.data == "control":
                    if self._serve_client():
                        return
                elif key.data == "wake":
                    if self._on_wake():
                        return
                else:
                    selector.unregister(key.fileobj)
                    self._on_connection_event(key.data)

    def _on_connection_event(self, item: Any) -> None:
        # The protocol never sends to an idle client: readable means killed, shut down or dropped.
        item.lost = "the server closed the holder's session at %s (killed, restarted or timed out)" % state.utc_now()
        self.log.error("%s: lock LOST: %s", item.target.name, item.lost)

    def _on_wake(self) -> bool:
        try:
            data = os.read(self.wake_r, 64)
        except BlockingIOError:
            return False
        if b"S" in data:
            self.finish("lost", "the holder was stopped by a signal before thaw; the lock ended then")
            return True
        if b"T" in data:
            self.finish("released-at-fs-thaw", "the data directory's filesystem thawed, so the snapshot was "
                        "complete; released at once")
            return True
        return False

    def _serve_client(self) -> bool:
        assert self.listener is not None
        try:
            client, _ = self.listener.accept()
        except OSError:
            return False
        with client:
            try:
                uid = protocol.peer_uid(client)
                if uid not in (0, os.getuid()):
                    client.sendall(protocol.encode({"error": "permission denied"}))
                    return False
                line = protocol.recv_line(client, 2.0)
                request = protocol.decode(line) if line else {}
            except (OSError, ValueError):
                return False
            command = request.get("cmd")
            if command == protocol.STATUS:
                self._reply(client, self.live_status())
                return False
            if command == protocol.THAW:
                self.finish("released", None, client)
                return True
            self._reply(client, {"error": "unknown command %r" % command})
            return False

    def _reply(self, client: socket.socket, message: Dict[str, Any]) -> None:
        try:
            client.settimeout(2.0)
            client.sendall(protocol.encode(message))
        except OSError:
            pass

    def live_status(self) -> Dict[str, Any]:
        return {"instances": [{"name": i.target.name, "lost": i.lost} for i in self.locked],
                "fs_frozen_seen": any(p.frozen_at is not None for p in self.probes),
                "seconds_left": round(self.deadline - time.monotonic(), 1)}

    # -- release ----------------------------------------------------------------------

    def _release_all(self) -> List[str]:
        from . import locking
        problems = []
        for item in self.locked:
            problem = locking.release(item, self.settings, self.log)
            if problem:
                problems.append("%s: %s" % (item.target.name, problem))
        return problems

    def _restart_replicas(self) -> None:
        from . import locking
        for item in self.locked:
            if item.stopped_channels:
                locking.restart_replica_fresh(item.target, self.settings, item.server,
                                              item.stopped_channels, self.log)

    def finish(self, outcome: str, reason: Optional[str], client: Optional[socket.socket] = None) -> None:
        released = time.monotonic()
        problems = self._release_all()
        lost = [i for i in self.locked if i.lost]
        if lost and outcome in ("released", "released-at-fs-thaw"):
            outcome = "lost"
            reason = "; ".join("%s: %s" % (i.target.name, i.lost) for i in lost)
        result = {
            "outcome": outcome,
            "reason": reason,
            "at": state.utc_now(),
            "since": state.utc_at(self.started_wall),
            "held_ms": round(max((released - i.locked_monotonic) * 1000.0 for i in self.locked), 1),
            "holder_pid": os.getpid(),
            "problems": problems,
            "fs_probes": [{"directory": p.path and os.path.dirname(p.path), "fired": p.fired,
                           "frozen_at": p.frozen_at and state.utc_at(p.frozen_at.wall),
                           "thawed_at": p.thawed_at and state.utc_at(p.thawed_at.wall)} for p in self.probes],
            "acknowledged": client is not None,
            "instances": [{"name": i.target.name, "lock": i.strategy.name, "lost": i.lost,
                           "wait_ms": round(i.wait_ms, 1),
                           "held_ms": round((released - i.locked_monotonic) * 1000.0, 1)} for i in self.locked],
        }
        level = self.log.info if outcome in ("released", "released-at-fs-thaw") else self.log.error
        level("released (%s) after %.0f ms%s", outcome, result["held_ms"], ": " + reason if reason else "")
        # Before answering: thaw returns with replication running again (the lock is already gone).
        self._restart_replicas()
        state.remove(self.files.state)
        state.remove(self.files.socket)
        if client is not None:
            # Answer first: recording the result costs two fsyncs that thaw need not wait
            # for. A status or thaw in between sees "not frozen", which is already true.
            self._reply(client, result)
        # Stopping a probe waits for its writer process to end: after the answer, not before.
        self._stop_probes()
        result["log"] = list(self.gate.recent)
        try:
            state.write_json_atomic(self.files.result, result)
        except OSError as exc:
            self.log.error("cannot record the result in %s: %s", self.files.result, exc.strerror)
        history.after_release(self.settings, result, self.agent, self.log)
        self.gate.release()


def _report(ready_fd: int, message: Dict[str, Any]) -> bool:
    try:
        protocol.write_all_fd(ready_fd, protocol.encode(message))
        return True
    except OSError:
        return False
    finally:
        os.close(ready_fd)


def _read_settings(fd: int) -> Settings:
    chunks = []
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            chunks.append(chunk)
    return config.settings_from_dict(json.loads(b"".join(chunks).decode("utf-8")))


def main(settings_fd: int, ready_fd: int) -> None:
    """Entry point of the holder process (started by spawn())."""
    gate = logsetup.setup(to_stderr=False)
    log = logsetup.get()
    holder: Optional[Holder] = None
    try:
        settings = _read_settings(settings_fd)
        holder = Holder(settings, gate)
        wake_w = holder.wake_w
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: os.write(wake_w, b"S"))
        holder.listen()
        holder.lock_all()
    except BaseException as exc:  # report every failure to the waiting freeze command
        if isinstance(exc, ServerNotRunning):
            message = {"status": "not-running", "message": str(exc)}
        elif isinstance(exc, QuiesceError):
            message = {"status": "error", "exit": int(exc.exit_code), "message": str(exc)}
        else:
            log.exception("holder failed")
            message = {"status": "error", "exit": int(Exit.INTERNAL),
                       "message": "internal error in the holder: %s: %s" % (type(exc).__name__, exc)}
        if holder is not None:
            state.remove(holder.files.socket)
            if message["status"] == "error":  # before reporting: nothing is frozen until freeze returns
                history.after_failed_freeze(holder.settings, message["message"], holder.agent,
                                            state.utc_at(holder.started_wall), log)
        _report(ready_fd, message)
        os._exit(int(exit_code_for(exc)))
    summary = [dict(i.position, wait_ms=round(i.wait_ms, 1), warnings=i.warnings) for i in holder.locked]
    for item in holder.locked:
        log.info("%s: locked %s with %s in %.1f ms; binlog %s:%s gtid %s", item.target.name, item.server.label,
                 item.strategy.name, item.wait_ms, item.position["binlog_file"], item.position["binlog_position"],
                 item.position["gtid"])
    gate.hold()
    if not _report(ready_fd, {"status": "locked", "instances": summary}):
        # The freeze command is gone (killed by its caller's timeout): nobody will thaw us.
        holder.finish("lost", "the freeze command went away before it saw the lock")
        os._exit(int(Exit.LOCK_LOST))
    try:
        holder.serve()
    except BaseException:
        log.exception("holder failed while holding the lock")
        try:
            holder.finish("lost", "internal error in the holder")
        finally:
            os._exit(int(Exit.INTERNAL))
    os._exit(0)
