"""Assertions shared by the integration tests."""

import datetime
import re
import time
from typing import Optional

from .prodhelpers import Background, lock_waiters, processlist_row
from .runner import POSITION_KEYS, QuiesceEnv, Result

LOCK_METHODS = ("ftwrl", "backup-stage")


def lines(text: str):
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line(result: Result, where: str = "output") -> str:
    """The command said exactly one (non-empty) line, on stdout and stderr together."""
    said = lines(result.stdout) + lines(result.stderr)
    assert len(said) == 1, "expected one line of %s, got %d: %r" % (where, len(said), result)
    return said[0]


def assert_frozen(server, timeout: float = 10.0) -> None:
    """The server is locked: a new write waits for the backup or global read lock.

    Seen in the process list, not inferred from a slow commit (a busy server is slow too);
    `timeout` bounds how long the write may take to get there. It is killed afterwards.
    """
    writer = Background(server, ["INSERT INTO probe_innodb (at) VALUES (NOW(6))"], database="quiesce_probe")
    try:
        deadline = time.monotonic() + timeout
        while not any(row["ID"] == writer.conn_id for row in lock_waiters(server)):
            if writer.done.is_set():
                raise AssertionError("a write %s although the server should be locked"
                                     % ("committed" if writer.error is None else "failed (%r)" % writer.error))
            if time.monotonic() >= deadline:
                raise AssertionError("a write neither committed nor waited for the lock within %.0f s: %r"
                                     % (timeout, processlist_row(server, writer.conn_id)))
            time.sleep(0.02)
    finally:
        writer.close()


def assert_writable(server, timeout: float = 1.0) -> float:
    took = server.try_write(timeout)
    assert took is not None, "the server is still locked: a write did not commit within %.1f s" % timeout
    return took


def wait_writable(server, timeout: float, step: float = 0.3) -> float:
    """Poll until a write commits (each attempt bounded); returns when that happened."""
    deadline = time.monotonic() + timeout
    while True:
        if server.try_write(step) is not None:
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise AssertionError("the server did not accept writes within %.1f s" % timeout)


def assert_no_holder(env: QuiesceEnv, timeout: float = 10.0) -> None:
    left = env.wait_no_holder(timeout)
    assert not left, "quiesce process(es) still alive: %s" % sorted(left)


def assert_clean(env: QuiesceEnv, server, timeout: float = 10.0) -> None:
    """No holder or other quiesce process left, nothing locked, status says not frozen."""
    assert_no_holder(env, timeout)
    if server is not None and server.running:
        assert_writable(server, 1.0)
    status = env.status()
    assert status["frozen"] is False, status


_ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def parse_iso_z(text: str) -> datetime.datetime:
    assert isinstance(text, str) and _ISO_Z.match(text), "not ISO 8601 UTC with Z: %r" % (text,)
    return datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=datetime.timezone.utc)


def check_position(position: dict, server, lock: Optional[str], live: Optional[dict] = None) -> None:
    """The position file has every key of the contract, with values that match the server."""
    missing = [k for k in POSITION_KEYS if k not in position]
    assert not missing, "position file lacks %s: %r" % (missing, position)
    assert position["instance"] == "default"
    assert position["flavour"] == server.flavour
    assert position["server_version"] == server.value("SELECT VERSION()")
    if lock:
        assert position["lock"] == lock
    else:
        assert position["lock"] in LOCK_METHODS
    locked_at = parse_iso_z(position["locked_at"])
    age = (datetime.datetime.now(datetime.timezone.utc) - locked_at).total_seconds()
    assert -5 < age < 600, position["locked_at"]
    assert position["replica"] is None
    assert position["replica_stopped"] is False
    assert position["durability"] == {"innodb_flush_log_at_trx_commit": 1, "sync_binlog": 1}
    assert position["datadir"].rstrip("/") == server.datadir.rstrip("/")
    assert isinstance(position["binlog_position"], int) and position["binlog_position"] > 0
    assert re.match(r"^binlog\.\d{6}$", position["binlog_file"]), position["binlog_file"]
    if live is not None:
        assert position["binlog_file"] == live["file"]
        assert position["binlog_position"] == live["position"]
        assert position["gtid"] == live["gtid"]
