"""Logging to syslog/journal (identifier "quiesce") and stderr.

While the holder owns the lock the filesystems may be frozen: a write to the journal
could then block the holder for the whole snapshot. GatedHandler keeps records in
memory until the lock is released and hands them on afterwards.
"""

import logging
import logging.handlers
import os
import sys
import threading
from typing import List, Optional

LOGGER_NAME = "quiesce"
SYSLOG_SOCKETS = ("/dev/log", "/run/systemd/journal/dev-log")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def _syslog_handler() -> Optional[logging.Handler]:
    for address in SYSLOG_SOCKETS:
        if os.path.exists(address):
            try:
                handler = logging.handlers.SysLogHandler(
                    address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            except OSError:
                continue
            handler.ident = "quiesce[%d]: " % os.getpid()
            handler.setFormatter(_OneLine("%(message)s"))
            return handler
    return None


class GatedHandler(logging.Handler):
    """Passes records on, except between hold() and release(), when it keeps them."""

    def __init__(self, targets: List[logging.Handler], keep: int = 200):
        super().__init__()
        self.targets = targets
        self.held: Optional[List[logging.LogRecord]] = None
        self.recent: List[str] = []
        self.keep = keep
        self._mutex = threading.Lock()

    def hold(self) -> None:
        with self._mutex:
            if self.held is None:
                self.held = []

    def release(self) -> None:
        with self._mutex:
            records, self.held = self.held or [], None
        for record in records:
            self._send(record)

    def emit(self, record: logging.LogRecord) -> None:
        with self._mutex:
            self.recent.append(_OneLine("%(levelname)s %(message)s").format(record))
            del self.recent[:-self.keep]
            if self.held is not None:
                self.held.append(record)
                return
        self._send(record)

    def _send(self, record: logging.LogRecord) -> None:
        for target in self.targets:
            if record.levelno >= target.level:
                target.handle(record)


def setup(to_stderr: bool, verbose: bool = False) -> GatedHandler:
    """Configure the "quiesce" logger for this process and return its gate."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    targets: List[logging.Handler] = []
    syslog = _syslog_handler()
    if syslog is not None:
        syslog.setLevel(logging.INFO)
        targets.append(syslog)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.DEBUG if verbose else logging.INFO)
        stream.setFormatter(_OneLine("quiesce: %(message)s"))
        targets.append(stream)
    gate = GatedHandler(targets)
    logger.addHandler(gate)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return gate


def get() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
