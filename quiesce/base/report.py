"""One line per check, as check and verify print them; the first failure sets the exit code."""

from typing import List, Optional

from quiesce.base.errors import QuiesceError


class Report:
    """Prints "ok", "WARN" and "FAIL" lines, or only keeps them (echo=False) for a caller
    that decides by itself what to say, as restore-plan --apply does with verify's checks."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.failure: Optional[QuiesceError] = None
        self.failures: List[QuiesceError] = []

    def _say(self, word: str, text: str) -> None:
        if self.echo:
            print("%-5s %s" % (word, text))

    def ok(self, text: str) -> None:
        self._say("ok", text)

    def warn(self, text: str) -> None:
        self._say("WARN", text)

    def fail(self, error: QuiesceError) -> None:
        self._say("FAIL", str(error))
        self.failures.append(error)
        if self.failure is None:
            self.failure = error
