"""The holder's log gate: nothing reaches syslog or journald between hold() and resume()
(their files may sit on a frozen filesystem, and a blocking send would hang the holder)."""

import logging

from quiesce.base import log


class _Collect(logging.Handler):
    def __init__(self, level=logging.DEBUG):
        super().__init__(level)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _logger(gate):
    logger = logging.getLogger("quiesce-test-gate-%d" % id(gate))
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(gate)
    return logger


def test_records_are_held_in_order_until_release_then_pass_through():
    target = _Collect()
    gate = log.GatedHandler([target])
    logger = _logger(gate)
    logger.info("before")
    gate.hold()
    gate.hold()                       # twice: still one window, nothing lost
    for i in range(3):
        logger.info("held %d", i)
    assert target.lines == ["before"]
    gate.resume()
    assert target.lines == ["before", "held 0", "held 1", "held 2"]
    logger.info("after")
    assert target.lines[-1] == "after"
    gate.resume()                    # a second resume sends nothing again
    assert target.lines.count("held 0") == 1


def test_each_target_gets_only_its_levels_and_recent_stays_bounded():
    errors, everything = _Collect(logging.ERROR), _Collect()
    gate = log.GatedHandler([errors, everything], keep=5)
    logger = _logger(gate)
    gate.hold()
    for i in range(20):
        logger.info("line %d", i)
    logger.error("bad")
    gate.resume()
    assert errors.lines == ["bad"]
    assert len(everything.lines) == 21
    assert len(gate.recent) == 5 and gate.recent[-1] == "ERROR bad"
