"""The freeze time budget covers every wait a freeze really makes, each at the limit the
code uses for it, and everything that relies on it (check, register azure, the freeze
command's bound on its holder) uses the same number."""

import inspect
import json
import os
import re
import shutil

import pytest
import yaml

from quiesce.agents import survey, catalog, register
from quiesce.base import budget, config
from quiesce.holder import probewriter, spawn
from quiesce.server import durable, locking
from .privileges import needs_root


def _settings(conf, *options):
    return config.parse(["--config", conf, *options, "check"])


def _drain_limit():
    # The limit locking.prepare's drain really runs with: durable.prepare's default.
    assert "durable.prepare(info, view)" in inspect.getsource(locking.prepare)
    return inspect.signature(durable.prepare).parameters["limit"].default


def _writer_start_limit():
    # What probewriter.start really waits for the writer's hello.
    assert "budget.WRITER_START_LIMIT)" in inspect.getsource(probewriter.start)
    return budget.WRITER_START_LIMIT


def _after_lock_timeout(settings):
    # The per-statement timeout locking.lock sets once the lock is held.
    source = inspect.getsource(locking.lock)
    assert "conn.set_timeout(settings.connect_timeout + budget.AFTER_LOCK_GRACE)" in source
    return settings.connect_timeout + budget.AFTER_LOCK_GRACE


def _worst_case(settings):
    """Every wait of one freeze at its limit, summed (listed here, not taken from budget.py)."""
    per_server = (2 * settings.connect_timeout          # two sessions, each bounded by connect-timeout
                  + settings.long_query_wait            # long statements
                  + _drain_limit()                      # the drain before the lock
                  + _writer_start_limit()              # the probe writer's start
                  + settings.acquire_timeout            # the lock attempt (watchdog)
                  + _after_lock_timeout(settings)       # a stalled statement under the lock
                  + settings.acquire_timeout)           # syncing the server's files under the lock
    records = settings.acquire_timeout                  # position and state files, under the locks
    return per_server * len(settings.targets) + records


@pytest.mark.parametrize("options", [
    (), ("--connect-timeout", "1", "--long-query-wait", "2", "--acquire-timeout", "2"),
    ("--connect-timeout", "30", "--long-query-wait", "300", "--acquire-timeout", "60"),
])
def test_the_budget_covers_the_real_worst_case(conf, options):
    settings = _settings(conf, *options)
    assert budget.freeze_budget(settings) >= _worst_case(settings)
    # The freeze command waits for its holder longer than the holder can take.
    assert spawn.spawn_timeout(settings) > budget.freeze_budget(settings)


def test_the_budget_grows_with_the_servers(tmp_path):
    path = tmp_path / "quiesce.conf"
    path.write_text("[instance:a]\nsocket = /run/a.sock\n[instance:b]\nsocket = /run/b.sock\n")
    path.chmod(0o600)
    settings = config.parse(["--config", str(path), "--all", "check"])
    assert len(settings.targets) == 2
    assert budget.freeze_budget(settings) >= _worst_case(settings)


@needs_root
def test_azure_timeout_and_check_use_that_budget(conf, root):
    settings = _settings(conf)
    register.register(catalog.AZURE, register.Layout(root, "/usr/lib/quiesce"), settings)
    with open(root + catalog.AZURE_CONFIG) as handle:
        assert json.load(handle)["timeoutInSeconds"] >= _worst_case(settings)
    # GCE's 60 s cannot hold the default waits (the drain alone may take 30 s).
    (warning,) = survey.budget_warnings(settings, [catalog.GCE], root)
    assert "gives freeze 60 s" in warning and "%.0f s" % budget.freeze_budget(settings) in warning
    assert survey.budget_warnings(settings, [catalog.AZURE], root) == []


def test_the_documented_budget_and_hook_timeouts_are_the_shipped_configs(tmp_path):
    """The docs quote the budget of etc/quiesce.conf, and the scheduler examples' timeouts fit it."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    conf = str(tmp_path / "quiesce.conf")
    shutil.copy(os.path.join(repo, "etc", "quiesce.conf"), conf)
    os.chmod(conf, 0o600)
    shipped = budget.freeze_budget(_settings(conf))
    for page in ("man/quiesce.8", "docs/storage-snapshots.md"):
        with open(os.path.join(repo, page), encoding="utf-8") as handle:
            quoted = re.findall(r"(\d+) s\s+with\s+the\s+shipped\s+(?:settings|defaults)", handle.read())
        assert quoted and {float(q) for q in quoted} == {shipped}, (page, quoted, shipped)
    examples = os.path.join(repo, "examples")
    with open(os.path.join(examples, "schedulers", "sanoid.conf"), encoding="utf-8") as handle:
        (sanoid,) = re.findall(r"(?m)^\s*script_timeout = (\d+)", handle.read())
    with open(os.path.join(examples, "schedulers", "zrepl.yml"), encoding="utf-8") as handle:
        zrepl = yaml.safe_load(handle)["jobs"][0]["snapshotting"]["hooks"][0]["timeout"]
    with open(os.path.join(examples, "kubernetes", "mysql-velero.yaml"), encoding="utf-8") as handle:
        velero = yaml.safe_load(handle)["metadata"]["annotations"]["pre.hook.backup.velero.io/timeout"]
    assert float(sanoid) > shipped and float(zrepl.rstrip("s")) > shipped
    assert velero.endswith("m") and 60 * float(velero[:-1]) > shipped
