"""Logging to syslog/journal (identifier "quiesce") and stderr.

While the holder owns the lock the filesystems may be frozen: a write to the journal
could then block the holder for the whole snapshot. GatedHandler keeps records in
memory until the lock is released and hands them on afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading

LOGGER_NAME = "quiesce"
SYSLOG_SOCKETS = ("/dev/log", "/run/systemd/journal/dev-log")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class SyslogHandler(logging.Handler):
    """RFC 3164 datagrams to the local syslog socket (journald serves it too).

    logging.handlers.SysLogHandler would do, but importing it costs thaw a few
    milliseconds on the snapshot's critical path.
    """

    FACILITY_DAEMON = 3

    def __init__(self, address: str):
        super().__init__()
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.connect(address)
        self.ident = "quiesce[%d]: " % os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        severity = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}.get(record.levelno, 2)
        try:
            message = "<%d>%s%s" % (self.FACILITY_DAEMON * 8 + severity, self.ident, self.format(record))
            self.sock.send(message.encode("utf-8", "replace"))
        except OSError:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def _syslog_handler() -> logging.Handler | None:
    for address in SYSLOG_SOCKETS:
        if os.path.exists(address):
            try:
                handler = SyslogHandler(address)
            except OSError:
                continue
            handler.setFormatter(_OneLine("%(message)s"))
            return handler
    return None


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes, not when the logger was set up
    (a caller that redirects sys.stderr later, as test harnesses do, still gets the lines)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class GatedHandler(logging.Handler):
    """Passes records on, except between hold() and resume(), when it keeps them.

    Not named release(): logging.Handler.handle() calls self.release() (its own lock's)
    after every emit, which would open the gate at each record.
    """

    def __init__(self, targets: list[logging.Handler], keep: int = 200):
        super().__init__()
        self.targets = targets
        self.held: list[logging.LogRecord] | None = None
        self.recent: list[str] = []
        self.keep = keep
        self._mutex = threading.Lock()

    def hold(self) -> None:
        with self._mutex:
            if self.held is None:
                self.held = []

    def resume(self) -> None:
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
    targets: list[logging.Handler] = []
    syslog = _syslog_handler()
    if syslog is not None:
        syslog.setLevel(logging.INFO)
        targets.append(syslog)
    if to_stderr:
        stream = _Stderr()
        stream.setLevel(logging.DEBUG if verbose else logging.INFO)
        stream.setFormatter(_OneLine("quiesce: %(message)s"))
        targets.append(stream)
    gate = GatedHandler(targets)
    logger.addHandler(gate)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return gate


def get() -> logging.Logger:
    """The "quiesce" logger, set up for a command (stderr and syslog) on first use."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        setup(to_stderr=True)
    return logger
