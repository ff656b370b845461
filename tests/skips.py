"""The skips `make test` accepts, and the strict mode that fails the run on any other.

pytest exits 0 when tests are skipped, so a CI machine without root, loop devices or a
tool would silently drop the tests that need them. With QUIESCE_STRICT_SKIPS=1 (the
Makefile's test target sets it) a skip whose test and reason match no entry of ALLOWED
fails the run, listed by name. An entry belongs here only when the thing the test needs
cannot exist on a machine that runs the suite as it should (Debian 12, as root, after
`make deps`); a missing tool, root or a driver is never such a reason. tests/README.md
lists the same entries (tests/unit/test_skips.py keeps the two in step).
"""

import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

STRICT_VAR = "QUIESCE_STRICT_SKIPS"


@dataclass(frozen=True)
class Allowed:
    where: str      # regular expression matched at the start of the test's node id
    reason: str     # regular expression the whole skip reason must match
    why: str        # why the thing cannot exist where the suite runs

    def matches(self, nodeid: str, reason: str) -> bool:
        return bool(re.match(self.where, nodeid) and re.fullmatch(self.reason, reason))


ALLOWED: Tuple[Allowed, ...] = (
    Allowed(where=r"tests/unit/",
            reason=r"Connector/Python is not packaged where this build runs \(EL9\)",
            why="EPEL 9 has no mysql-connector-python package, and the RPM's %check sets "
                "QUIESCE_TESTS_WITHOUT_CONNECTOR=1 to say so; `make test` never sets it"),
)


def strict(environ=os.environ) -> bool:
    return environ.get(STRICT_VAR) == "1"


def allowed_entry(nodeid: str, reason: str) -> Optional[Allowed]:
    for entry in ALLOWED:
        if entry.matches(nodeid, reason):
            return entry
    return None


def skip_reason(longrepr) -> str:
    """The reason pytest recorded for a skip (its report's longrepr), without 'Skipped: '."""
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


def disallowed(skipped: Iterable[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The (nodeid, reason) pairs no entry allows, in order, without repeats."""
    out: List[Tuple[str, str]] = []
    for nodeid, reason in skipped:
        if allowed_entry(nodeid, reason) is None and (nodeid, reason) not in out:
            out.append((nodeid, reason))
    return out


class StrictSkips:
    """pytest plugin: records every skip; fails the session on one that is not allowed."""

    def __init__(self):
        self.skipped: List[Tuple[str, str]] = []
        self.refused: List[Tuple[str, str]] = []

    def _note(self, report) -> None:
        # An xfail is reported as skipped too: it is a known bug, not a missing capability.
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append((report.nodeid, skip_reason(report.longrepr)))

    def pytest_runtest_logreport(self, report):
        self._note(report)

    def pytest_collectreport(self, report):
        self._note(report)

    def pytest_sessionfinish(self, session, exitstatus):
        self.refused = disallowed(self.skipped)
        if self.refused and exitstatus == 0:
            session.exitstatus = 1

    def pytest_terminal_summary(self, terminalreporter):
        if not self.refused:
            return
        terminalreporter.section("skips not allowed (%s=1)" % STRICT_VAR, sep="=", red=True, bold=True)
        for nodeid, reason in self.refused:
            terminalreporter.write_line("%s: %s" % (nodeid, reason))
        terminalreporter.write_line("%d skip(s) above fail the run: make what they need available, "
                                    "or, if it cannot exist where the suite runs, add an entry with "
                                    "the reason to tests/skips.py and tests/README.md" % len(self.refused))


def register(config) -> None:
    """Called from tests/conftest.py: strict mode when QUIESCE_STRICT_SKIPS=1."""
    if strict():
        config.pluginmanager.register(StrictSkips(), "quiesce-strict-skips")
