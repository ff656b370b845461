"""thaw against a holder that is ending on its own, broken runtime state, and a client that
dribbles: real processes and sockets, no database (the holder is stood in for by a process
that does exactly what a finishing holder does to the runtime files)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from quiesce.base import outcome
from quiesce.holder import protocol
from quiesce.records import state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def runtime(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    conf = tmp_path / "quiesce.conf"
    conf.write_text("runtime-dir = %s\nposition-file = %s\nmetrics-file = none\n" % (run, tmp_path / "position.json"))
    os.chmod(conf, 0o600)
    return run, conf


def _quiesce(conf, *args, timeout=30):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": ROOT, "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "quiesce", "--config", str(conf), *args], env=env, cwd="/",
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def test_thaw_waits_for_a_holder_that_is_finishing_and_reports_its_result(runtime):
    """Socket already closed, state.json still there: thaw must neither kill it nor say
    "nothing is frozen", but wait for the result it records before removing state.json."""
    run, conf = runtime
    finisher = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, os, sys, time
        run = sys.argv[1]
        time.sleep(1.0)
        with open(os.path.join(run, "result.json"), "w") as f:
            json.dump({"outcome": "expired", "reason": "deadline passed", "acknowledged": False,
                       "holder_pid": os.getpid()}, f)
        os.unlink(os.path.join(run, "state.json"))
        """), str(run)])
    try:
        wait = time.monotonic() + 5
        while state.process_start_ticks(finisher.pid) is None and time.monotonic() < wait:
            time.sleep(0.01)
        (run / "state.json").write_text(json.dumps(
            {"holder_pid": finisher.pid, "holder_start_ticks": state.process_start_ticks(finisher.pid),
             "instances": []}))
        result = _quiesce(conf, "thaw")
    finally:
        finisher.wait(10)
    assert result.returncode == 6, result
    assert "expired" in result.stderr and "killed" not in result.stderr, result
    assert finisher.returncode == 0, "thaw killed a holder that was ending by itself"
    # Reported once: the next thaw has nothing to say.
    again = _quiesce(conf, "thaw")
    assert again.returncode == 0 and "nothing" in again.stderr, again


@pytest.mark.parametrize("content", ["[]", "42", "{not json"])
def test_broken_state_json_is_a_state_error_that_never_says_just_remove_it(runtime, content):
    run, conf = runtime
    (run / "state.json").write_text(content)
    for command in ("status", "thaw"):
        result = _quiesce(conf, command)
        assert result.returncode == 8, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "internal error" not in lines[0], result
        # Removing a live holder's state.json would hide its lock: stop the holder first.
        assert "holder" in lines[0] and lines[0].index("holder") < lines[0].index("remove"), lines[0]


def test_recv_line_has_one_overall_limit_however_slowly_bytes_come():
    ours, theirs = socket.socketpair()
    stop = threading.Event()

    def dribble():
        while not stop.is_set():
            try:
                theirs.send(b" ")
            except OSError:
                return
            time.sleep(0.3)
    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    began = time.monotonic()
    try:
        with pytest.raises(socket.timeout):
            protocol.recv_line(ours, 1.0)
    finally:
        stop.set()
        ours.close()
        theirs.close()
        thread.join(2)
    assert time.monotonic() - began < 1.5


@pytest.mark.parametrize("requested, lost, want", [
    (outcome.RELEASED, [], outcome.RELEASED),
    (outcome.RELEASED_AT_FS_THAW, [], outcome.RELEASED_AT_FS_THAW),
    (outcome.RELEASED, [("a", "gone")], outcome.LOST),
    (outcome.RELEASED_AT_FS_THAW, [("a", "gone")], outcome.LOST),
    (outcome.EXPIRED, [("a", "gone")], outcome.EXPIRED),
])
def test_a_release_is_good_only_if_every_session_held(requested, lost, want):
    final, reason = outcome.decide(requested, "why", lost)
    assert final == want
    if lost and want == outcome.LOST:
        assert reason == "a: gone"
