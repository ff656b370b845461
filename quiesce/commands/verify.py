"""quiesce verify: does a server booted from a snapshot match the position file the snapshot holds?

Run on the restored server (a restored VM, or a server started on a copy of the data
directory) before it takes writes. One line per check, like check: the position file is
this server's, the binary log ends exactly at the recorded file and position, the GTID
state is the recorded one, the start-up (crash recovery) logged no errors, MyISAM and
Aria tables check clean, and the Galera position when there is one.

What "recovered cleanly" can mean here: the server's own error log since its last start
has no [ERROR] line. MySQL 8.0.22 and later serve that log as performance_schema.error_log;
MariaDB and older MySQL only write it to a file (log_error), which verify reads as root
on the same host. A server logging to stderr (the journal) gives verify nothing to read,
and it says so.
"""

from __future__ import annotations

from quiesce.base.config import Settings, Target
from quiesce.base.errors import QuiesceError, RestoreError
from quiesce.base.report import Report
from quiesce.records import positionfile
from quiesce.server import db, locking, restored


def verify_target(report: Report, target: Target, settings: Settings, many: bool) -> None:
    name = "%s: " % target.name if many else ""
    try:
        position = positionfile.load(target.position_file)
        conn = locking.connect(target, settings)
    except QuiesceError as exc:
        report.fail(type(exc)(name + str(exc)))
        return
    try:
        server = locking.identify_server(conn)
        restored.check_identity(report, name, target.position_file, position, server, restored.server_identity(conn, server))
        restored.check_indexes(report, name, conn, target.is_local)
        restored.check_binlog(report, name, conn, position)
        restored.check_gtid(report, name, conn, server, position)
        restored.check_recovery(report, name, conn, server, target.is_local)
        if settings.restore["skip_table_check"]:
            report.warn("%sMyISAM/Aria tables not checked (--skip-table-check)" % name)
        else:
            restored.check_tables(report, name, conn, target, settings, float(settings.restore["check_timeout"]))
        restored.report_galera(report, name, conn, position)
    except db.DbError as exc:
        report.fail(RestoreError("%sverify stopped: %s" % (name, exc)))
    finally:
        conn.close()


def run(settings: Settings) -> int:
    report = Report()
    for target in settings.targets:
        verify_target(report, target, settings, len(settings.targets) > 1)
    if report.failure is not None:
        return int(report.failure.exit_code)
    return 0
