"""The Prometheus alerting rules shipped in examples/prometheus, run by promtool.

The test series are what quiesce writes: each scenario is a sequence of history entries
at times since the Unix epoch (promtool's clock starts there), recorded by
history.appended and rendered by metrics.render after each one, as node_exporter would
scrape quiesce.prom every STEP. At each evaluation every rule is checked, so an alert
that should stay silent is checked as much as one that should fire.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from quiesce.base import outcome
from quiesce.records import history, metrics, state

RULES_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "prometheus")
RULES = os.path.join(RULES_DIR, "quiesce.rules.yml")
STEP = 600                      # seconds between scrapes: 10 min, more than the 5 min lookback
HOUR = 3600
TARGET = {"instance": "db1:9100", "job": "node"}
PROM_FILE = "/var/lib/prometheus/node-exporter/quiesce.prom"
PROMTOOL_TIMEOUT = 120


def _promtool():
    path = shutil.which("promtool", path="/usr/bin:/bin")
    if path is None:
        pytest.fail("promtool is missing (Debian package prometheus): run 'make deps'")
    return path


def _rules():
    with open(RULES, encoding="utf-8") as handle:
        return {rule["alert"]: rule for group in yaml.safe_load(handle)["groups"] for rule in group["rules"]}


def _at(seconds):
    return state.utc_at(seconds)


def released(at, agent="vmware-tools", took=2.0, held=1.5, instances=("default",)):
    return {"at": _at(at), "since": _at(at - held - took), "outcome": "released", "ok": True, "agent": agent,
            "instances": list(instances), "held_ms": held * 1000.0}


def ended(outcome, at, **kwargs):
    return dict(released(at, **kwargs), outcome=outcome, ok=False)


def failed(at, took=31.0):
    return history.failure_entry("lock wait timeout", "vmware-tools", _at(at), _at(at - took))


def not_running(at):
    return history.not_running_entry("no MySQL/MariaDB server is running", "vmware-tools", _at(at), _at(at - 0.2))


def disabled(at):
    return history.not_running_entry("quiesce is disabled (enabled = false)", "vmware-tools", _at(at),
                                     _at(at - 0.1), what=outcome.DISABLED)


def _samples(text):
    """The series of one quiesce.prom, with the labels node_exporter's scrape adds."""
    found = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?", series)
        labels = (match.group(2) + "," if match.group(2) else "") + ",".join(
            '%s="%s"' % item for item in sorted(TARGET.items()))
        found["%s{%s}" % (match.group(1), labels)] = value
    return found


def input_series(events, until, file_gone_at=None, scrape_error=0):
    """promtool's input_series: every scrape from 0 to until (seconds) of the metrics file
    that quiesce wrote for the events (time, history entry) recorded by then."""
    events = sorted(events, key=lambda event: event[0])
    times = list(range(0, until + 1, STEP))
    columns = {}
    for index, now in enumerate(times):
        entries, written = [], None
        for at, entry in events:
            if at <= now:
                entries, written = history.appended(entries, entry), at
        scraped = {}
        if written is not None and (file_gone_at is None or now < file_gone_at):
            scraped = _samples(metrics.render(entries))
            scraped['node_textfile_mtime_seconds{file="%s",instance="db1:9100",job="node"}' % PROM_FILE] = str(written)
        scraped['node_textfile_scrape_error{instance="db1:9100",job="node"}'] = str(scrape_error)
        for series, value in scraped.items():
            columns.setdefault(series, ["_"] * len(times))[index] = value
    return [{"series": series, "values": " ".join(values)} for series, values in sorted(columns.items())]


def _expand(template, labels):
    """The annotations use only {{ $labels.NAME }}: expand them as Prometheus would."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    assert "{{" not in text, "a template this test cannot expand: %r" % template
    return text


def _checks(rules, at, firing):
    """One alert_rule_test per rule at time at; firing: {alertname: [labels of each alert]}."""
    unknown = set(firing) - set(rules)
    assert not unknown, unknown
    checks = []
    for name, rule in sorted(rules.items()):
        alerts = []
        for labels in firing.get(name, []):
            labels = dict(TARGET, **labels, **rule.get("labels", {}))
            alerts.append({"exp_labels": labels,
                           "exp_annotations": {k: _expand(v, labels) for k, v in rule["annotations"].items()}})
        checks.append({"eval_time": "%ds" % at, "alertname": name, "exp_alerts": alerts})
    return checks


def _run(tmp_path, tests):
    """promtool test rules on the scenarios; the test file is JSON, which is YAML too."""
    promtool = _promtool()
    shutil.copy(RULES, str(tmp_path / "quiesce.rules.yml"))
    path = tmp_path / "generated.test.yml"
    path.write_text(json.dumps({"rule_files": ["quiesce.rules.yml"], "evaluation_interval": "1m",
                                "tests": tests}, indent=1))
    proc = subprocess.run([promtool, "test", "rules", str(path)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=PROMTOOL_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def scenario(events, evaluations, **series_options):
    """A promtool test case: the scrapes of what quiesce wrote, and what fires when."""
    rules = _rules()
    until = max(at for at, _ in evaluations)
    return {"interval": "%ds" % STEP, "input_series": input_series(events, until, **series_options),
            "alert_rule_test": [check for at, firing in evaluations for check in _checks(rules, at, firing)]}


DEFAULT = {"quiesce_instance": "default"}
NOT_RUNNING = {"outcome": "not-running"}


def test_promtool_check_rules():
    proc = subprocess.run([_promtool(), "check", "rules", RULES], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=PROMTOOL_TIMEOUT)
    assert proc.returncode == 0 and "SUCCESS: 10 rules found" in proc.stdout, proc.stdout + proc.stderr


def test_shipped_rule_tests_pass():
    """examples/prometheus/quiesce.rules.test.yml, the tests a user runs after changing the rules."""
    proc = subprocess.run([_promtool(), "test", "rules", "quiesce.rules.test.yml"], cwd=RULES_DIR,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_from_what_quiesce_writes(tmp_path):
    tests = [
        # Daily backups that succeed: silence; then none for a day and more: no consistent
        # snapshot, for the host and for its one instance, and the file is stale.
        scenario([(HOUR, released(HOUR)), (25 * HOUR, released(25 * HOUR))],
                 [(2 * HOUR, {}), (26 * HOUR, {}), (51 * HOUR, {}),
                  (51 * HOUR + STEP, {"QuiesceNoConsistentSnapshot": [{}],
                                      "QuiesceInstanceNoConsistentSnapshot": [DEFAULT],
                                      "QuiesceMetricsStale": [{"file": PROM_FILE}]})]),
        # Each bad outcome fires while it is the last one; a success ends it.
        scenario([(600, released(600)), (HOUR, failed(HOUR)), (2 * HOUR, ended("lost", 2 * HOUR)),
                  (3 * HOUR, ended("expired", 3 * HOUR)), (4 * HOUR, ended("killed", 4 * HOUR)),
                  (5 * HOUR, released(5 * HOUR))],
                 [(HOUR + STEP, {"QuiesceFreezeFailed": [{"outcome": "failed"}]}),
                  (2 * HOUR + STEP, {"QuiesceFreezeFailed": [{"outcome": "lost"}]}),
                  (3 * HOUR + STEP, {"QuiesceFreezeFailed": [{"outcome": "expired"}]}),
                  (4 * HOUR + STEP, {"QuiesceFreezeFailed": [{"outcome": "killed"}]}),
                  (5 * HOUR + STEP, {})]),
        # The first freeze ever fails: there is no consistent snapshot at all.
        scenario([(HOUR, failed(HOUR))],
                 [(HOUR + STEP, {"QuiesceFreezeFailed": [{"outcome": "failed"}],
                                 "QuiesceNoConsistentSnapshot": [{}]})]),
        # The server is down at backup time: a warning at once, no failure; a day later,
        # still down, no consistent snapshot (the file is not stale: freezes run).
        scenario([(600, released(600)), (HOUR, not_running(HOUR)), (25 * HOUR, not_running(25 * HOUR))],
                 [(HOUR + STEP, {"QuiesceServerNotRunning": [NOT_RUNNING]}),
                  (26 * HOUR + 2 * STEP, {"QuiesceServerNotRunning": [NOT_RUNNING], "QuiesceNoConsistentSnapshot": [{}],
                                          "QuiesceInstanceNoConsistentSnapshot": [DEFAULT]})]),
        # Installed disarmed: a warning while disabled, and no consistent snapshot ever.
        scenario([(HOUR, disabled(HOUR)), (2 * HOUR, released(2 * HOUR))],
                 [(HOUR + STEP, {"QuiesceDisabled": [{"outcome": "disabled"}], "QuiesceNoConsistentSnapshot": [{}]}),
                  (2 * HOUR + STEP, {})]),
        # 400 s to take the lock: over half of qemu-ga's 600 s, under half of VMware's
        # 900 s; for a caller with no known timeout, over the fixed 300 s.
        scenario([(HOUR, released(HOUR, agent="qemu-guest-agent", took=400)),
                  (2 * HOUR, released(2 * HOUR, agent="vmware-tools", took=400)),
                  (3 * HOUR, released(3 * HOUR, agent="sshd", took=400)),
                  (4 * HOUR, released(4 * HOUR, agent="sshd", took=100))],
                 [(HOUR + STEP, {"QuiesceFreezeNearAgentTimeout": [{"agent": "qemu-guest-agent"}]}),
                  (2 * HOUR + STEP, {}), (3 * HOUR + STEP, {"QuiesceFreezeSlow": [{}]}), (4 * HOUR + STEP, {})]),
        # A second instance added: until a good freeze includes it, it has no snapshot (0:
        # the Unix epoch, more than 26 h before the freezes at 27 h and 28 h).
        scenario([(27 * HOUR, released(27 * HOUR)), (28 * HOUR, ended("lost", 28 * HOUR, instances=("default", "new")))],
                 [(28 * HOUR + STEP, {"QuiesceFreezeFailed": [{"outcome": "lost"}],
                                     "QuiesceInstanceNoConsistentSnapshot": [{"quiesce_instance": "new"}]})]),
        # The metrics file disappears.
        scenario([(HOUR, released(HOUR))], [(2 * HOUR, {}), (3 * HOUR, {"QuiesceMetricsMissing": [{"file": PROM_FILE}]})],
                 file_gone_at=3 * HOUR - STEP),
        # node_exporter cannot read its textfile directory.
        scenario([(HOUR, released(HOUR))], [(2 * HOUR, {"QuiesceMetricsUnreadable": [{}]})], scrape_error=1),
    ]
    _run(tmp_path, tests)


def test_a_wrong_expectation_fails(tmp_path):
    """The harness itself: promtool must reject an alert that does not fire."""
    with pytest.raises(AssertionError):
        _run(tmp_path, [scenario([(HOUR, released(HOUR))], [(2 * HOUR, {"QuiesceFreezeFailed": [{"outcome": "x"}]})])])
