"""Disables one of quiesce's safety mechanisms, for control tests only.

A quiesce command run with this directory first on PYTHONPATH imports this module at
start-up, and so does its holder (which inherits the command's environment). The names in
QTEST_SABOTAGE (comma-separated) say what to disable:

  no-watchdog      the acquire-timeout watchdog never sends its KILL QUERY
  no-idle-timeout  the lock session keeps the server's wait_timeout (its SET SESSION
                   wait_timeout is not sent)

A control test runs a check with the mechanism disabled and expects the check to fail:
proof that the check sees the mechanism, not something else that ends the same way.
"""

import os

_NAMES = set(filter(None, os.environ.get("QTEST_SABOTAGE", "").split(",")))

if "no-watchdog" in _NAMES:
    from quiesce.server import locking

    locking.Watchdog._run = lambda self: None

if "no-idle-timeout" in _NAMES:
    from quiesce.server import db

    _execute = db.Connection.execute

    def _execute_but_idle_timeout(self, sql):
        if sql.startswith("SET SESSION wait_timeout"):
            return None
        return _execute(self, sql)

    db.Connection.execute = _execute_but_idle_timeout
