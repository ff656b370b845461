"""locking.Watchdog with a scripted killer connection: it kills the pending lock statement
after acquire-timeout, never after the lock statements are done, and not when acquire-timeout
runs out at the very moment they finish. Real servers: tests/integration/test_watchdog.py."""

import threading

from quiesce.server import locking

from .fakedb import FakeServer

VICTIM = 4242


def _killer():
    server = FakeServer()
    return server, server.connect()


def test_fires_after_the_timeout_with_a_kill_query_of_the_victim():
    server, killer = _killer()
    with locking.Watchdog(killer, VICTIM, 0.05) as watchdog:
        watchdog._thread.join(5)
    assert watchdog.fired
    assert server.statements() == ["KILL QUERY %d" % VICTIM]


def test_done_in_time_sends_nothing():
    server, killer = _killer()
    with locking.Watchdog(killer, VICTIM, 30) as watchdog:
        pass
    assert not watchdog._thread.is_alive()
    assert not watchdog.fired and server.statements() == []


def test_timeout_running_out_as_the_statements_finish_sends_nothing():
    """The wait times out, but the lock statements finish before the KILL is sent: once
    __exit__ has said done, a KILL could only hit whatever the session runs next."""
    server, killer = _killer()
    watchdog = locking.Watchdog(killer, VICTIM, 30)
    timed_out = threading.Event()
    real_done = watchdog._done

    class RacingDone:
        """Reports a timeout, but only once the statements have finished meanwhile."""

        def wait(self, _timeout):
            timed_out.set()
            real_done.wait(5)
            return False

        def set(self):
            real_done.set()

        def is_set(self):
            return real_done.is_set()

    watchdog._done = RacingDone()
    with watchdog:
        assert timed_out.wait(5)
    assert not watchdog._thread.is_alive()
    assert not watchdog.fired and server.statements() == []
