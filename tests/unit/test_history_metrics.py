"""History bookkeeping and the node_exporter textfile, as pure functions (plus /proc for the agent)."""

import os
import shutil
import subprocess

from quiesce.base import caller
from quiesce.records import history, metrics


def _entry(outcome, at="2026-11-30T12:00:00.000Z", held_ms=250.0):
    return {"at": at, "since": at, "outcome": outcome, "ok": outcome in history.SUCCESS, "held_ms": held_ms}


def test_history_is_bounded_and_counts_the_failure_streak():
    entries = []
    for number, outcome in enumerate(["released", "failed", "lost", "expired", "released-at-fs-thaw", "failed"]):
        entries = history.appended(entries, _entry(outcome, at="2026-11-30T12:00:%02d.000Z" % number), keep=4)
    assert [e["outcome"] for e in entries] == ["lost", "expired", "released-at-fs-thaw", "failed"]
    assert [e["consecutive_failures"] for e in entries] == [2, 3, 0, 1]
    # The same outcome reported twice (freeze, then thaw, for a dead holder) is kept once.
    assert history.appended(entries, _entry("failed", at="2026-11-30T12:00:05.000Z"), keep=4) == entries


def test_no_server_running_neither_breaks_nor_extends_the_failure_streak():
    entries = history.appended([], _entry("failed", at="2026-11-30T12:00:00.000Z"))
    entries = history.appended(entries, history.not_running_entry(
        "no MySQL/MariaDB server is running", "cron", "2026-11-30T12:01:00.000Z", "2026-11-30T12:00:59.000Z"))
    assert entries[-1]["outcome"] == "not-running" and entries[-1]["ok"] is False
    assert entries[-1]["reason"] == "no MySQL/MariaDB server is running" and entries[-1]["errors"] == []
    assert [e["consecutive_failures"] for e in entries] == [1, 1]
    entries = history.appended(entries, _entry("released", at="2026-11-30T12:02:00.000Z"))
    entries = history.appended(entries, history.not_running_entry("down", None, "2026-11-30T12:03:00.000Z",
                                                                  "2026-11-30T12:03:00.000Z"))
    assert [e["consecutive_failures"] for e in entries] == [1, 1, 0, 0]


def test_a_torn_line_does_not_lose_the_history():
    text = '{"outcome": "released"}\n{"outcome": "lo\n[1]\n{"outcome": "failed"}\n'
    assert [e["outcome"] for e in history.parse_lines(text)] == ["released", "failed"]


def test_who_records_what():
    # The holder records only when the filesystems cannot be frozen any more.
    assert history.holder_recorded({"outcome": "released", "acknowledged": True})
    assert history.holder_recorded({"outcome": "released-at-fs-thaw", "acknowledged": False})
    assert not history.holder_recorded({"outcome": "expired", "acknowledged": False})
    assert not history.holder_recorded({"outcome": "lost", "acknowledged": False})


def test_entry_from_a_holder_result():
    result = {"outcome": "lost", "at": "2026-11-30T12:00:01.000Z", "since": "2026-11-30T12:00:00.000Z",
              "held_ms": 812.5, "reason": "session closed", "problems": ["default: unlock failed"],
              "instances": [{"name": "a", "lock": "ftwrl"}, {"name": "b", "lock": "backup-stage"}]}
    entry = history.entry_from_result(result, "qemu-guest-agent")
    assert entry == {"at": "2026-11-30T12:00:01.000Z", "since": "2026-11-30T12:00:00.000Z", "outcome": "lost",
                     "ok": False, "agent": "qemu-guest-agent", "lock": ["backup-stage", "ftwrl"],
                     "instances": ["a", "b"], "held_ms": 812.5, "reason": "session closed",
                     "errors": ["default: unlock failed"]}


def test_calling_agent_skips_wrappers_and_names_known_agents(tmp_path):
    fake = str(tmp_path / "vmtoolsd")
    shutil.copy("/bin/sleep", fake)
    proc = subprocess.Popen([fake, "30"])
    try:
        assert caller.calling_agent(proc.pid) == "vmware-tools"
    finally:
        proc.kill()
        proc.wait()
    assert caller.calling_agent(2 ** 22 + 7) == "unknown"   # no such process


def test_metrics_file_setting(tmp_path):
    missing, present = str(tmp_path / "absent"), str(tmp_path / "textfile")
    os.mkdir(present)
    assert metrics.resolve("auto", (missing, present)) == os.path.join(present, "quiesce.prom")
    assert metrics.resolve("auto", (missing,)) is None
    assert metrics.resolve("none") is None and metrics.resolve("") is None
    assert metrics.resolve("/srv/q.prom") == "/srv/q.prom"


def _values(text):
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_metrics_text():
    entries = history.appended([], _entry("released", at="2026-11-30T12:00:00.000Z"))
    entries = history.appended(entries, dict(_entry("expired", at="2026-11-30T12:10:00.500Z", held_ms=300000.0),
                                             since="2026-11-30T12:04:58.000Z", agent="cron"))
    text = metrics.render(entries)
    assert _values(text) == {'quiesce_last_outcome{outcome="expired"}': "1", "quiesce_last_success": "0",
                             "quiesce_last_run_timestamp_seconds": "1796040600.500",
                             "quiesce_last_success_timestamp_seconds": "1796040000",
                             "quiesce_lock_held_seconds": "300", "quiesce_consecutive_failures": "1",
                             # From its start until the lock was held: 302.5 s ended, 300 s of them held.
                             "quiesce_last_freeze_seconds": "2.500"}
    assert "# TYPE quiesce_consecutive_failures gauge" in text
    assert metrics.render([]) == ""


def test_freeze_duration_beside_the_agents_timeout():
    entry = dict(_entry("released", at="2026-11-30T12:00:10.000Z", held_ms=1500.0),
                 since="2026-11-30T12:00:00.250Z", agent="qemu-guest-agent")
    values = _values(metrics.render(history.appended([], entry)))
    assert values["quiesce_last_freeze_seconds"] == "8.250"
    assert values['quiesce_agent_timeout_seconds{agent="qemu-guest-agent"}'] == "600"
    # A failed freeze held nothing: its whole run counts. A caller without a known timeout, no timeout.
    failed = history.failure_entry("lock wait timeout", "sshd", "2026-11-30T12:01:31.000Z", "2026-11-30T12:01:00.000Z")
    values = _values(metrics.render(history.appended([], failed)))
    assert values["quiesce_last_freeze_seconds"] == "31"
    assert not [k for k in values if k.startswith("quiesce_agent_timeout_seconds")]


def test_no_server_running_is_an_outcome_but_no_success():
    good = dict(_entry("released", at="2026-11-30T12:00:00.000Z"), instances=["default"])
    down = history.not_running_entry("no MySQL/MariaDB server is running", "vmware-tools",
                                     "2026-11-30T13:00:00.200Z", "2026-11-30T13:00:00.000Z")
    values = _values(metrics.render(history.appended(history.appended([], good), down)))
    assert values['quiesce_last_outcome{outcome="not-running"}'] == "1" and values["quiesce_last_success"] == "0"
    assert values["quiesce_last_success_timestamp_seconds"] == "1796040000"
    assert values["quiesce_consecutive_failures"] == "0" and values["quiesce_last_freeze_seconds"] == "0.200"
    assert values['quiesce_instance_last_success_timestamp_seconds{quiesce_instance="default"}'] == "1796040000"


def test_per_instance_last_success():
    def entry(outcome, minute, names):
        return dict(_entry(outcome, at="2026-11-30T12:%02d:00.000Z" % minute), instances=names)
    entries = []
    for item in [entry("released", 0, ["a", "old"]), entry("released", 1, ["a"]), entry("lost", 2, ["a", 'b"x']),
                 history.failure_entry("refused", None, "2026-11-30T12:03:00.000Z", "2026-11-30T12:03:00.000Z")]:
        entries = history.appended(entries, item)
    values = _values(metrics.render(entries))
    instance = {k: v for k, v in values.items() if k.startswith("quiesce_instance_")}
    # The instances of the newest entry that names any (a failure names none); "old" left the
    # configuration; b was never in a good freeze; its name is escaped.
    assert instance == {'quiesce_instance_last_success_timestamp_seconds{quiesce_instance="a"}': "1796040060",
                        'quiesce_instance_last_success_timestamp_seconds{quiesce_instance="b\\"x"}': "0"}
    assert metrics.render([history.failure_entry("x", None, "2026-11-30T12:03:00.000Z", "")]).count(
        "quiesce_instance") == 0


def test_metrics_written_atomically_and_readable_by_node_exporter(tmp_path):
    path = str(tmp_path / "quiesce.prom")
    assert metrics.update(path, history.appended([], _entry("released"))) == path
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [p for p in os.listdir(str(tmp_path))] == ["quiesce.prom"]
    assert metrics.update("none", []) is None
