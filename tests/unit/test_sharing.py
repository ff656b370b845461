"""Counted callers of one lock: the pure rules (quiesce/holder/sharing.py, quiesce/base/caller.py) and the
holder's state machine around them, with a scripted connection (tests/unit/fakedb.py)."""

import json
import os
import socket
import time

import pytest

from quiesce.base import caller, config, log, outcome
from quiesce.holder import process, sharing
from quiesce.records import recorder, state
from quiesce.server import locking, serverinfo
from tests.unit.fakedb import FakeServer


# --------------------------------------------------------------------------- the rules

def test_a_join_gets_a_full_lock_timeout_but_never_past_the_cap():
    first, timeout = 100.0, 10.0
    assert sharing.capped_deadline(110.0, first, 105.0, timeout) == 115.0
    assert sharing.capped_deadline(110.0, first, 101.0, timeout) == 111.0
    assert sharing.capped_deadline(115.0, first, 119.0, timeout) == first + sharing.MAX_HOLD_FACTOR * timeout
    # never shortened by a join
    assert sharing.capped_deadline(118.0, first, 100.5, timeout) == 118.0


def test_pending_callers_are_taken_by_name_then_by_the_unknown_one():
    assert sharing.take(["gce", "nutanix"], "nutanix") == (True, ["gce"])
    assert sharing.take(["gce", sharing.ANY], "veeam") == (True, ["gce"])
    assert sharing.take(["gce"], "veeam") == (False, ["gce"])


def test_results_of_the_previous_release_count_their_thaws_as_unknown_callers():
    # 0.1.x wrote thaws_pending and acknowledged instead of a list of names.
    assert sharing.pending_of({"thaws_pending": 2, "acknowledged": True}) == [sharing.ANY] * 2
    assert sharing.pending_of({"acknowledged": False}) == [sharing.ANY]
    assert sharing.pending_of({"pending": ["gce"], "thaws_pending": 5}) == ["gce"]


@pytest.mark.parametrize("result, verdict", [
    ({"outcome": "released"}, None),
    ({"outcome": "released-at-fs-thaw"}, None),
    ({"outcome": "released", "released_by": "admin"}, "admin's 'thaw --all'"),
    ({"outcome": "released", "released_by": "gce"}, None),
    ({"outcome": "expired", "reason": "deadline"}, "did not last until thaw (expired)"),
    ({"outcome": "killed", "reason": "x"}, "did not last until thaw (killed)"),
])
def test_a_late_thaw_never_says_success_for_a_lock_that_ended_before_it(result, verdict):
    found = sharing.late_verdict(result, "gce")
    assert (found is None) if verdict is None else (verdict in found), found


def test_who_is_still_owed_an_outcome():
    assert sharing.pending_after(["a", "b"], None, False) == ["a", "b"]        # deadline, signal
    assert sharing.pending_after(["b"], "b", False) == []                      # the last thaw
    assert sharing.pending_after(["a", "b"], "c", True) == ["a", "b"]          # thaw --all by another


def test_caller_names_are_safe_in_hand_built_json_and_logs():
    assert caller.clean('we"ird\\name\n') == "we_ird_name"
    assert caller.clean("") == caller.UNKNOWN
    assert len(caller.clean("x" * 200)) == caller.MAX_NAME
    assert caller.identify("veeam") == "veeam"
    assert caller.identify(None, pid=2 ** 22 + 7) == caller.UNKNOWN            # no such process


def test_fast_thaw_request_is_the_json_the_holder_reads():
    from quiesce.commands import fastthaw
    from quiesce.holder import protocol
    line = fastthaw.thaw_request(["hook", "thaw", "--caller", "veeam", "--all"], {})
    assert protocol.decode(line.rstrip(b"\n")) == {"cmd": "thaw", "caller": "veeam", "all": True}
    line = fastthaw.thaw_request(["hook", "thaw"], {"QUIESCE_CALLER": "gce"})
    assert protocol.decode(line.rstrip(b"\n"))["caller"] == "gce"


def test_the_caller_can_come_from_the_environment_but_not_from_the_config_file(conf):
    assert config.parse(["--config", conf, "thaw"], env={"QUIESCE_CALLER": "veeam"}).caller == "veeam"
    with open(conf, "w") as handle:
        handle.write("caller = veeam\n")
    with pytest.raises(Exception) as raised:
        config.parse(["--config", conf, "thaw"], env={})
    assert "caller" in str(raised.value)


# --------------------------------------------------------------------------- the holder

@pytest.fixture
def make_holder(tmp_path):
    made = []

    def make(first="gce", lock_timeout=60.0):
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        conf = tmp_path / "quiesce.conf"
        conf.write_text("runtime-dir = %s\nposition-file = %s\nmetrics-file = none\nlock-timeout = %g\n"
                        % (runtime, tmp_path / "state" / "position.json", lock_timeout))
        conf.chmod(0o600)
        settings = config.parse(["--config", str(conf), "freeze"], env={})
        gate = log.GatedHandler([])
        held = process.Holder(settings, gate, None, first)
        fake = FakeServer()
        server = serverinfo.identify("10.11.6-MariaDB-0+deb12u1", "Debian 12")
        item = locking.Locked(settings.targets[0], fake.connect(), server,
                              locking.STRATEGIES[serverinfo.BACKUP_STAGE], {}, [], 1.0, time.monotonic())
        held.locked.append(item)
        held.deadline = item.locked_monotonic + lock_timeout
        made.append(held)
        return held, fake

    yield make
    for held in made:
        for item in held.locked:
            item.conn.close()


def _thaw(held, **request):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        released = held.thaw(theirs, dict(cmd="thaw", **request))
        ours.settimeout(5)
        return released, json.loads(ours.recv(65536).decode())


def test_only_the_last_callers_thaw_releases(make_holder):
    held, fake = make_holder("gce")
    assert held.join("nutanix")["joined"] is True
    released, answer = _thaw(held, caller="gce")
    assert not released and answer["held"] and answer["member"] and answer["callers"] == ["nutanix"]
    assert "BACKUP STAGE END" not in fake.statements()
    released, answer = _thaw(held, caller="nutanix")
    assert released and answer["outcome"] == outcome.RELEASED and answer["pending"] == []
    assert answer["callers"] == ["gce", "nutanix"]
    assert "BACKUP STAGE END" in fake.statements()


def test_a_stranger_thaw_changes_nothing_and_thaw_all_leaves_the_others_pending(make_holder):
    held, _fake = make_holder("veeam")
    held.join("vmware-tools")
    released, answer = _thaw(held, caller="admin")
    assert not released and answer["held"] and not answer["member"]
    assert held.callers == ["veeam", "vmware-tools"]
    released, answer = _thaw(held, caller="admin", all=True)
    assert released and answer["pending"] == ["veeam", "vmware-tools"] and answer["released_by"] == "admin"


def test_a_retry_is_not_counted_and_the_deadline_is_capped(make_holder):
    held, _fake = make_holder("qemu-ga", lock_timeout=10.0)
    first_lock = held.locked[0].locked_monotonic
    assert held.join("qemu-ga")["retry"] is True
    assert held.callers == ["qemu-ga"]
    held.locked[0].locked_monotonic = first_lock - 15.0        # as if locked 15 s ago
    held.join("gce")
    assert held.deadline <= first_lock - 15.0 + sharing.MAX_HOLD_FACTOR * 10.0 + 1e-6


def test_a_join_on_a_session_the_server_just_closed_is_refused(make_holder):
    # The close and the JOIN may arrive in one select() round, the JOIN handled first.
    held, _fake = make_holder("gce")
    held.locked[0].conn.drop()
    answer = held.join("nutanix")
    assert answer["joined"] is False and "closed" in answer["reason"]


def test_the_fs_thaw_does_not_release_a_lock_that_several_callers_share(make_holder):
    held, _fake = make_holder("vmware-tools")
    held.join("veeam")
    os.write(held.wake_w, b"T")
    assert held._on_wake() is False
    assert not held.finished


def test_finish_runs_once_even_if_recording_fails_after_the_answer(make_holder, monkeypatch):
    held, _fake = make_holder("gce")

    def broken(*_args, **_kwargs):
        raise RuntimeError("a newer package's module failed to import")

    monkeypatch.setattr(recorder, "after_release", broken)
    released, answer = _thaw(held, caller="gce")
    assert released and answer["outcome"] == outcome.RELEASED
    held.finish(outcome.LOST, "internal error in the holder")       # main()'s last net
    recorded = state.RuntimeFiles(held.settings.runtime_dir).read_result()
    assert recorded["outcome"] == outcome.RELEASED


def test_a_members_thaw_of_a_lost_lock_ends_it_for_everyone(make_holder):
    # Its snapshot came after the loss: it must hear "lost", and so must the others.
    held, _fake = make_holder("gce")
    held.join("nutanix")
    held.locked[0].conn.drop()
    released, answer = _thaw(held, caller="nutanix")
    assert released and answer["outcome"] == outcome.LOST and answer["pending"] == ["gce"]


def test_an_unidentified_thaw_releases_the_only_callers_lock_but_not_a_shared_one(make_holder):
    held, fake = make_holder("sshd")
    assert held.join("vmware-tools")["joined"] is True
    released, answer = _thaw(held, caller=caller.UNKNOWN)
    assert not released and answer["held"] and not answer["member"]
    released, answer = _thaw(held, caller="vmware-tools")
    assert not released and answer["callers"] == ["sshd"]
    # Its parent gone, the freezer's own thaw names nobody: with one caller left, it is that one's.
    released, answer = _thaw(held, caller=caller.UNKNOWN)
    assert released and answer["outcome"] == outcome.RELEASED and answer["pending"] == []
    assert "BACKUP STAGE END" in fake.statements()
