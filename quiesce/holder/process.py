"""The detached process that owns the database locks between freeze and thaw.

freeze starts it (spawn.py) and waits for one readiness line. From "locked" until the
lock is released the holder writes nothing to disk and logs only into memory: the
filesystems may be frozen then, and any write would block it for the whole snapshot.
It releases when the last of the callers sharing the lock thaws (quiesce/holder/sharing.py), at
its deadline, when a filesystem probe sees the data directory thaw (one caller only), or on
SIGTERM; a lost connection is remembered for thaw to report.
"""

import json
import os
import select
import selectors
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from quiesce.base import caller as callers, config, log as logsetup, outcome
from quiesce.base.config import Settings
from quiesce.base.errors import Exit, LockTimeout, QuiesceError, ServerNotRunning, StateError, exit_code_for
from quiesce.holder import protocol, recovery, replicas, sharing
from quiesce.holder.control import ControlSocket, reply
from quiesce.holder.thawwatch import ThawWatch
from quiesce.records import recorder, state
from quiesce.server import locking


class Holder:
    """Locks every instance, holds until thaw / fs thaw / deadline / signal, then releases."""

    def __init__(self, settings: Settings, gate: logsetup.GatedHandler, ready_fd: Optional[int] = None,
                 caller: str = "unknown", test: bool = False):
        self.settings = settings
        self.ready_fd = ready_fd
        self.gate = gate
        self.log = logsetup.get()
        self.files = state.RuntimeFiles(settings.runtime_dir)
        self.control = ControlSocket(self.files.socket)
        self.locked: List[Any] = []
        self.stopping: Dict[str, List[str]] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.started_wall = time.time()
        self.deadline = 0.0
        self.thaw_watch = ThawWatch(settings.release_on_fs_thaw, self._probe_fired, self.log, caller)
        # The callers sharing this lock, in the order they froze; the last one's thaw releases.
        self.callers: List[str] = [caller]
        self.everyone: List[str] = [caller]   # every caller that held it, for the record
        self.agent = caller
        self.test = test
        self.finished = False

    # -- acquisition ------------------------------------------------------------------

    def lock_all(self) -> None:
        """Lock every instance or none: a failure releases those already locked.

        All slow preparation (connecting, waiting for long statements, stopping appliers)
        is done for every instance first; the locks are then taken back to back, so no
        server waits locked for another one's preparation.
        """
        prepared: List[Any] = []
        try:
            for target in self.settings.targets:
                prepared.append(locking.prepare(target, self.settings, self.log, self._record_stopping))
            for item in prepared:
                self.thaw_watch.watch(item.target, item.server_path(item.info.get("datadir")))
            # From the first lock statement on, writers wait: no log line may block on the
            # system log now. What is held goes out at the release (or below, on failure).
            self.gate.hold()
            while prepared:
                self._check_still_wanted(prepared[0].target)
                self.locked.append(locking.lock(prepared.pop(0), self.settings, self.log))
                if len(self.locked) == 1:
                    # The deadline counts from the first lock: that is when writers start waiting.
                    self.deadline = self.locked[0].locked_monotonic + self.settings.lock_timeout
            started = time.monotonic()
            _within(self.settings.acquire_timeout, "the position and state files", self._write_records)
            written_ms = round((time.monotonic() - started) * 1000.0, 1)
            for item in self.locked:
                item.timings_ms["records"] = written_ms
            # Just before freeze returns: only a freeze that begins after this is the snapshot's.
            self.thaw_watch.arm()
        except BaseException:
            for item in prepared:
                locking.abandon(item, self.settings, self.log)
            self._release_all()
            self._restart_replicas()
            self.thaw_watch.stop()
            state.remove(self.files.state)
            self.gate.resume()
            raise

    def _write_records(self) -> None:
        """Under the lock, before freeze returns: every snapshot then holds these coordinates."""
        try:
            # check --cycle's test lock is no backup: the last backup's coordinates stay.
            for item in ([] if self.test else self.locked):
                os.makedirs(os.path.dirname(item.target.position_file), mode=0o700, exist_ok=True)
                state.write_json_atomic(item.target.position_file, item.position, mode=0o644)
            state.write_json_atomic(self.files.state, self.state_record())
        except OSError as exc:
            raise StateError("cannot write %s: %s; nothing stays locked; fix: check position-file and "
                             "runtime-dir" % (exc.filename, exc.strerror))

    def _record_stopping(self, target: config.Target, channels: List[str]) -> None:
        """On disk before any applier stops: whoever kills us can restart them."""
        if not self.stopping:
            # An earlier holder's that could not be restarted (freeze tried just now): ours to
            # retry at the release, and the record must not forget them meanwhile.
            self.stopping = recovery.orphaned_channels(self.files)
        self.stopping[target.name] = sorted(set(self.stopping.get(target.name, [])) | set(channels))
        record = dict(state.owner_record(), instances=self.stopping)
        try:
            state.write_json_atomic(self.files.replicas, record)
        except OSError as exc:
            raise StateError("cannot write %s: %s; no replica was stopped; fix: check runtime-dir"
                             % (exc.filename, exc.strerror))

    def state_record(self) -> Dict[str, Any]:
        return dict(
            state.owner_record(),
            since=state.utc_at(self.started_wall),
            deadline=state.utc_at(time.time() + (self.deadline - time.monotonic())),
            release_on_fs_thaw=self.thaw_watch.enabled,
            callers=list(self.callers),
            test=self.test,
            instances=[{"name": i.target.name, "lock": i.strategy.name, "server": i.server.label,
                        "position_file": i.target.position_file, "wait_ms": round(i.wait_ms, 1),
                        "replica_stopped": list(i.stopped_channels)}
                       for i in self.locked])

    def _check_still_wanted(self, target: config.Target) -> None:
        """Last look before locking: a lock nobody will use must not be taken."""
        if os.path.exists(self.files.cancel):
            raise LockTimeout("%s: a thaw came while this freeze was still waiting, so the snapshot was taken "
                              "without the lock; not locking now; fix: make freeze fit the agent's timeout "
                              "(see quiesce(8), SNAPSHOT AGENTS)" % target.name)
        if self.ready_fd is not None:
            poller = select.poll()
            poller.register(self.ready_fd, select.POLLERR)
            if poller.poll(0):
                # The read end is closed: the freeze command was killed (its caller's timeout).
                raise StateError("%s: the freeze command went away (killed by its caller's timeout?) before "
                                 "the lock was taken; not locking" % target.name)

    def _probe_fired(self) -> None:
        # Runs in the probe's thread: only wake the main loop, which does the release.
        try:
            os.write(self.wake_w, b"T")
        except BlockingIOError:
            pass

    # -- holding ----------------------------------------------------------------------

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.control.fileno(), selectors.EVENT_READ, "control")
        selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        for item in self.locked:
            selector.register(item.conn.fileno(), selectors.EVENT_READ, item)
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.finish(outcome.EXPIRED, "no thaw came within lock-timeout=%g s, so the holder released "
                            "the lock at its deadline" % self.settings.lock_timeout)
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
                    self._mark_lost(key.data)

    def _mark_lost(self, item: Any) -> None:
        # The protocol never sends to an idle client: readable means killed, shut down or dropped.
        if item.lost is None:
            item.lost = "the server closed the holder's session at %s (killed, restarted or timed out)" % state.utc_now()
            self.log.error("%s: lock LOST: %s", item.target.name, item.lost)

    def _on_wake(self) -> bool:
        try:
            data = os.read(self.wake_r, 64)
        except BlockingIOError:
            return False
        if b"S" in data:
            self.finish(outcome.LOST, "the holder was stopped by a signal before thaw; the lock ended then")
            return True
        if b"T" in data:
            if len(self.callers) > 1:
                # Whose snapshot that was is unknown: each caller's thaw says when its own is done.
                self.log.info("the data directory's filesystem thawed, but %d callers share the lock (%s): "
                              "it is released when the last of them thaws", len(self.callers),
                              ", ".join(self.callers))
                return False
            self.finish(outcome.RELEASED_AT_FS_THAW, "the data directory's filesystem thawed, so the snapshot "
                        "was complete; released at once")
            return True
        return False

    def _serve_client(self) -> bool:
        accepted = self.control.accept(self.deadline)
        if accepted is None:
            return False
        client, request = accepted
        with client:
            command = request.get("cmd")
            if command == protocol.THAW:
                return self.thaw(client, request)
            if command == protocol.STATUS:
                reply(client, self.live_status())
            elif command == protocol.JOIN:
                reply(client, self.join(str(request.get("caller") or "unknown")))
            else:
                reply(client, {"error": "unknown command %r" % command})
        return False

    def thaw(self, client: socket.socket, request: Dict[str, Any]) -> bool:
        """One caller's thaw: release if it is the last (or asks for everyone); True if released."""
        # A request without a caller comes from a thaw older than counting: it releases, as it did.
        thawing = str(request.get("caller") or callers.UNKNOWN) if "caller" in request else None
        if thawing == callers.UNKNOWN and len(self.callers) == 1:
            # No ancestor could be named (the caller's parent exited, so it was reparented):
            # with one caller only, leaving its lock to the deadline would stall every writer.
            self.log.info("a thaw from an unidentified caller counts as %s's, the only caller", self.callers[0])
            thawing = self.callers[0]
        # A lost lock holds nothing for anyone: end it now, and every caller hears the loss.
        everyone = bool(request.get("all")) or thawing is None or self._any_lost()
        if not everyone and (thawing not in self.callers or len(self.callers) > 1):
            member = thawing in self.callers
            if member:
                self.callers.remove(thawing)
                self.log.info("%s thawed; the lock stays held for %s", thawing, ", ".join(self.callers))
            reply(client, dict(self.live_status(), held=True, member=member))
            return False
        self.finish(outcome.RELEASED, None, client, thawing=thawing, everyone=everyone)
        return True

    def _any_lost(self) -> bool:
        # A session may have died in the same instant as the request came in.
        for item in self.locked:
            if item.lost is None and locking.session_closed(item):
                self._mark_lost(item)
        return any(i.lost for i in self.locked)

    def join(self, caller: str) -> Dict[str, Any]:
        """Another caller's freeze (or a retry): share this lock, and give it a full lock-timeout."""
        self._any_lost()
        lost = [i for i in self.locked if i.lost]
        if lost:
            return {"joined": False, "reason": "; ".join("%s: %s" % (i.target.name, i.lost) for i in lost)}
        retry = caller in self.callers
        if not retry:
            self.callers.append(caller)
            if caller not in self.everyone:
                self.everyone.append(caller)
        now = time.monotonic()
        self.deadline = sharing.capped_deadline(self.deadline, self.locked[0].locked_monotonic, now,
                                                self.settings.lock_timeout)
        # Memory only: the filesystems may be frozen now.
        self.log.info("%s %s the held lock (callers: %s); it now lasts at most %.0f s more", caller,
                      "froze again and keeps" if retry else "joined", ", ".join(self.callers), self.deadline - now)
        return dict(self.live_status(), joined=True, retry=retry)

    def live_status(self) -> Dict[str, Any]:
        left = self.deadline - time.monotonic()
        return {"instances": [{"name": i.target.name, "lost": i.lost} for i in self.locked],
                "fs_frozen_seen": self.thaw_watch.frozen_seen, "callers": list(self.callers),
                "seconds_left": round(left, 1), "deadline": state.utc_at(time.time() + left)}

    # -- release ----------------------------------------------------------------------

    def _release_all(self) -> List[str]:
        problems = []
        for item in self.locked:
            problem = locking.release(item, self.settings, self.log, self.stopping.get(item.target.name, ()))
            if problem:
                problems.append("%s: %s" % (item.target.name, problem))
        return problems

    def _restart_replicas(self) -> Tuple[Dict[str, List[str]], List[str]]:
        return replicas.restart_stopped(self.settings, self.files, self.locked, self.stopping, self.log)

    def finish(self, requested: str, reason: Optional[str], client: Optional[socket.socket] = None,
               thawing: Optional[str] = None, everyone: bool = False) -> None:
        """Release, then answer thaw, record the result, and only then drop state.json.

        A thaw that comes meanwhile is refused by the closed socket, waits for this process
        to end and finds the result: it never sees "nothing frozen" before the result exists.
        Runs once: a failure after it (main's last net) must not rewrite what thaw was told.
        """
        if self.finished:
            return
        self.finished = True
        self.control.close()
        released = time.monotonic()
        # The session may have died in the same instant as the thaw request came in.
        for item in self.locked:
            if item.lost is None and locking.session_closed(item):
                self._mark_lost(item)
        problems = self._release_all()
        # Before answering: thaw returns with replication running again (the lock is already gone).
        not_restarted, why_not = self._restart_replicas()
        problems += why_not
        final, why = outcome.decide(requested, reason, [(i.target.name, i.lost) for i in self.locked if i.lost])
        pending = sharing.pending_after(self.callers, thawing, everyone)
        result = {
            "outcome": final,
            "reason": why,
            "at": state.utc_now(),
            "since": state.utc_at(self.started_wall),
            "held_ms": round(max([(released - i.locked_monotonic) * 1000.0 for i in self.locked] or [0.0]), 1),
            "holder_pid": os.getpid(),
            "problems": problems,
            "fs_probes": self.thaw_watch.describe(),
            "acknowledged": client is not None,
            "callers": list(self.everyone),
            "test": self.test,
            # Each caller whose thaw has not come yet hears the outcome from its own thaw.
            "pending": pending,
            "thaws_pending": len(pending),
            "released_by": thawing if pending else None,
            # SQL threads stopped for the freeze that still are (thaw then exits REPLICA_STOPPED).
            "replicas_stopped": not_restarted,
            "replica_problems": why_not,
            "instances": [{"name": i.target.name, "lock": i.strategy.name, "lost": i.lost,
                           "wait_ms": round(i.wait_ms, 1),
                           "held_ms": round((released - i.locked_monotonic) * 1000.0, 1)} for i in self.locked],
        }
        level = self.log.info if final in outcome.GOOD else self.log.error
        level("released (%s) after %.0f ms%s", final, result["held_ms"], ": " + why if why else "")
        if client is not None:
            # Answer first: recording the result costs two fsyncs that thaw need not wait for.
            reply(client, result)
        try:
            state.write_json_atomic(self.files.result, dict(result, log=list(self.gate.recent)))
        except OSError as exc:
            self.log.error("cannot record the result in %s: %s", self.files.result, exc.strerror)
        try:
            recorder.after_release(self.settings, result, self.agent, self.log)
        except Exception as exc:  # the history is a record, never a reason to leave state behind
            self.log.error("cannot record the outcome in the history: %s: %s", type(exc).__name__, exc)
        state.remove(self.files.state)
        # Stopping a probe waits for its writer process to end: after the answer, not before.
        self.thaw_watch.stop()
        self.gate.resume()


def _report(ready_fd: int, message: Dict[str, Any]) -> bool:
    try:
        protocol.write_all_fd(ready_fd, protocol.encode(message))
        return True
    except OSError:
        return False
    finally:
        os.close(ready_fd)


def _read_settings(fd: int) -> Tuple[Settings, str, bool]:
    """The settings, the caller and whether this is a test cycle, as spawn.spawn() sent them."""
    chunks = []
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            chunks.append(chunk)
    message = json.loads(b"".join(chunks).decode("utf-8"))
    return (config.settings_from_dict(message["settings"]), str(message.get("caller") or "unknown"),
            bool(message.get("test")))


def _within(seconds: float, what: str, work: Callable[[], None]) -> None:
    """Run work, but give up waiting for it after seconds (a disk that stalls under the lock)."""
    done = threading.Event()
    failure: List[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="quiesce-records", daemon=True).start()
    if not done.wait(seconds):
        raise StateError("writing %s took longer than %g s under the lock; nothing stays locked; fix: check the "
                         "disk that holds position-file and runtime-dir" % (what, seconds))
    if failure:
        raise failure[0]


def main(settings_fd: int, ready_fd: int) -> None:
    """Entry point of the holder process (started by spawn.spawn())."""
    gate = logsetup.setup(to_stderr=False)
    log = logsetup.get()
    holder: Optional[Holder] = None
    try:
        settings, caller, test = _read_settings(settings_fd)
        holder = Holder(settings, gate, ready_fd, caller, test)
        wake_w = holder.wake_w
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: os.write(wake_w, b"S"))
        holder.control.listen()
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
            holder.control.close()
            if message["status"] == "error":  # before reporting: nothing is frozen until freeze returns
                recorder.after_failed_freeze(holder.settings, message["message"], holder.agent,
                                            state.utc_at(holder.started_wall), log, holder.test)
        _report(ready_fd, message)
        os._exit(int(exit_code_for(exc)))
    summary = [dict(i.position, wait_ms=round(i.wait_ms, 1), warnings=i.warnings) for i in holder.locked]
    for item in holder.locked:
        log.info("%s: locked %s with %s in %.1f ms; binlog %s:%s gtid %s; %s", item.target.name, item.server.label,
                 item.strategy.name, item.wait_ms, item.position["binlog_file"], item.position["binlog_position"],
                 item.position["gtid"], protocol.describe_timings(item.timings_ms))
    if not _report(ready_fd, {"status": "locked", "instances": summary}):
        # The freeze command is gone (killed by its caller's timeout): nobody will thaw us.
        holder.finish(outcome.LOST, "the freeze command went away before it saw the lock")
        os._exit(int(Exit.LOCK_LOST))
    try:
        holder.serve()
    except BaseException:
        log.exception("holder failed while holding the lock")
        try:
            holder.finish(outcome.LOST, "internal error in the holder")
        finally:
            os._exit(int(Exit.INTERNAL))
    os._exit(0)
