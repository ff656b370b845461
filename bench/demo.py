#!/usr/bin/python3
"""quiesce in 30 seconds: freeze a busy MariaDB, snapshot it, thaw, and prove the snapshot is good.

What `make demo` runs. Everything happens in private directories under /tmp with a
throw-away server; nothing on the machine is touched, and everything started here is
stopped again, also on failure or Ctrl-C.

  1. start a private MariaDB (binary log on, sync_binlog=1) and concurrent writers
     committing to an InnoDB and a MyISAM table;
  2. `quiesce freeze`, run the way a VMware Tools or qemu-ga hook runs it;
  3. copy the data directory while frozen -- the "snapshot" (the server is paused with
     SIGSTOP for the copy, so it is one instant, as a block-level snapshot is);
  4. `quiesce thaw`;
  5. boot a second server from the copy, as a restored VM would, and check that it
     holds exactly the rows committed before the freeze, that its MyISAM tables are
     clean, and that the binary log ends where the position file says.

Exit status: 0 if every check passed, 1 if one failed, 2 if the demo itself could not run,
130 when interrupted.
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (MariaDB, QuiesceEnv, Writers, ack_times, gap_spanning,  # noqa: E402
                          first_ack_after, install_signal_handlers, iso_to_mono, wait_result,
                          run_quiesce, server_version_short, table_rows)

DATABASE = "shop"
WRITERS_PER_ENGINE = 2
ROWS_PER_TXN = 2


def say(text: str = "") -> None:
    print(text, flush=True)


def ms(seconds: float) -> str:
    return "%.0f ms" % (seconds * 1000.0)


def given_ms(value, digits: int = 0) -> str:
    """A figure quiesce reported in milliseconds, or "?" if it did not."""
    return "%.*f ms" % (digits, value) if isinstance(value, (int, float)) else "?"


def du_mb(path: str) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 1e6


class Checks:
    def __init__(self):
        self.failed = []

    def report(self, ok: bool, text: str, detail: str = "") -> bool:
        say("   [%s] %s" % ("ok" if ok else "FAIL", text))
        if detail:
            for line in detail.splitlines():
                say("          " + line)
        if not ok:
            self.failed.append(text)
        return ok


def binlog_end_in_copy(datadir: str):
    """(last binlog file named in the copy's binlog.index, its size in bytes)."""
    with open(os.path.join(datadir, "binlog.index")) as handle:
        names = [line.strip() for line in handle if line.strip()]
    last = os.path.basename(names[-1])
    return last, os.path.getsize(os.path.join(datadir, last))


def sample(keys, n=3):
    items = sorted(keys)[:n]
    return ", ".join("writer %d commit #%d" % k for k in items) + (" ..." if len(keys) > n else "")


def run_demo(checks: Checks, cleanup: list) -> None:
    began = time.monotonic()
    version = server_version_short()
    say("quiesce demo: freeze a busy %s, snapshot it, thaw it, and check the snapshot" % version)
    say()
    say("For a VM snapshot, VMware Tools (or qemu-ga) runs `quiesce freeze` just before it freezes the")
    say("filesystems and `quiesce thaw` after the snapshot. This demo does the same on a throw-away")
    say("server in /tmp, with a copy of its data directory standing in for the snapshot.")
    say()

    # -- the server and its load -----------------------------------------------------------
    server = MariaDB(name="demo")
    cleanup.append(server.cleanup)
    start_s = server.start()
    say("Setup")
    say("   started a private MariaDB in %.1f s: data directory %s" % (start_s, server.datadir))
    say("   binary log on, sync_binlog=1, innodb_flush_log_at_trx_commit=1 (fully durable commits)")
    writers = Writers(server, database=DATABASE, engines=("InnoDB", "MyISAM"),
                      threads_per_engine=WRITERS_PER_ENGINE, rows_per_txn=ROWS_PER_TXN, max_seconds=90)
    cleanup.append(lambda: writers.stop(timeout=10))
    writers.start()
    writers.wait_for_progress(20)
    n0, t0 = len(writers.snapshot()[0]), time.monotonic()
    time.sleep(1.0)
    rate = (len(writers.snapshot()[0]) - n0) / (time.monotonic() - t0)
    say("   %d writers are committing concurrently: %d to InnoDB (%d rows per transaction), %d to MyISAM"
        % (2 * WRITERS_PER_ENGINE, WRITERS_PER_ENGINE, ROWS_PER_TXN, WRITERS_PER_ENGINE))
    say("   about %.0f commits per second in all" % rate)
    say()

    env = QuiesceEnv(server, driver=None, lock_timeout=60)
    cleanup.append(env.cleanup)

    # -- freeze ------------------------------------------------------------------------------
    say("1. quiesce freeze   (what the VMware Tools / qemu-ga freeze hook runs)")
    freeze = run_quiesce(env, "freeze")
    if freeze.rc != 0:
        checks.report(False, "quiesce freeze exited %d: %s" % (freeze.rc, freeze.message))
        return
    state = env.state() or {}
    instance = (state.get("instances") or [{}])[0]
    position = env.position()
    locked_at = iso_to_mono(position.get("locked_at"))
    timings = position.get("timings_ms") or {}
    say("   returned after %s with exit status 0; the server is now locked (%s)"
        % (ms(freeze.ended - freeze.began), instance.get("lock")))
    say("   taking the lock itself took %s; from the moment it was held to freeze returning: %s"
        % (given_ms(timings.get("acquire"), 1), ms(freeze.ended - locked_at) if locked_at else "?"))
    say("   of which %s under the lock in the holder (coordinates %s, InnoDB log flush %s, syncing the"
        % (given_ms(timings.get("under_lock"), 1), given_ms(timings.get("coordinates"), 1),
           given_ms(timings.get("flush"), 1)))
    say("   server's files %s); before the lock, %s went into writing out the filesystem's dirty data"
        % (given_ms(timings.get("sync"), 1), given_ms(timings.get("drain"))))
    say("   (the rest is starting the command and its lock holder, connecting, and recording the position)")
    say("   position file %s:" % env.position_file)
    say("      binlog %s at %s, GTID %s" % (position.get("binlog_file"), position.get("binlog_position"),
                                          position.get("gtid") or "-"))
    say()

    # -- snapshot ----------------------------------------------------------------------------
    snapshot_root = tempfile.mkdtemp(prefix="quiesce-snap-", dir="/tmp")
    cleanup.append(lambda: shutil.rmtree(snapshot_root, ignore_errors=True))
    snapshot = os.path.join(snapshot_root, "data")
    say("2. snapshot   (here: a copy of the data directory, taken while frozen)")
    copy_s = server.copy_datadir(snapshot)
    say("   copied %.0f MB in %s" % (du_mb(snapshot), ms(copy_s)))
    say()

    # -- thaw --------------------------------------------------------------------------------
    say("3. quiesce thaw   (what the thaw hook runs)")
    thaw = run_quiesce(env, "thaw")
    result = wait_result(env, state.get("holder_pid"))
    if not checks.report(thaw.rc == 0, "quiesce thaw returned after %s with exit status %d%s"
                         % (ms(thaw.ended - thaw.began), thaw.rc,
                            "" if thaw.rc == 0 else ": " + thaw.message)):
        return
    writers.wait_for_progress(10)
    writers.stop()
    commits, failures, _ = writers.snapshot()
    acks = ack_times(commits)
    window = thaw.began - freeze.ended
    gap = gap_spanning(acks, freeze.ended, thaw.began)
    resumed = first_ack_after(acks, thaw.began)
    say("   the lock was held %s in all (%s)" % (given_ms(result.get("held_ms")),
                                                 result.get("outcome") or "the holder recorded no result"))
    if resumed is not None:
        say("   the first write committed %s after thaw started" % ms(resumed - thaw.began))
    if gap:
        blocked = gap[1] - gap[0]
        say("   writes were blocked for %s: %s between freeze returning and thaw starting (the snapshot)"
            % (ms(blocked), ms(window)))
        say("   plus %s around it (lock taken before freeze returned, released during thaw)"
            % ms(blocked - window))
    else:
        checks.report(False, "a write committed while the server was frozen")
    checks.report(not failures, "no writer saw an error", "\n".join(f.error for f in failures[:3]))
    say("   (in a real snapshot the lock goes as soon as the filesystems thaw, before the thaw hook runs;")
    say("   here nothing froze the filesystem, so thaw released it)")
    say()

    # -- verify ------------------------------------------------------------------------------
    say("4. verify the snapshot: boot a second server from the copy (it runs crash recovery,")
    say("   like a VM restored from the snapshot)")
    binlog_file, binlog_size = binlog_end_in_copy(snapshot)
    boot_began = time.monotonic()
    copy = server.boot_copy(snapshot, name="demo-copy")
    cleanup.append(copy.cleanup)
    say("   booted in %.1f s" % (time.monotonic() - boot_began))

    present = table_rows(copy, DATABASE, writers.tables)
    expected = writers.acked_keys(before=freeze.ended)
    total_rows = 0
    for table in writers.tables:
        rows = present.get(table, {})
        total_rows += sum(rows.values())
        want = expected[table]
        have = set(rows)
        missing = want - have
        extra = have - want
        engine = "InnoDB" if table.endswith("innodb") else "MyISAM"
        detail = []
        if missing:
            detail.append("%d commits acknowledged before the freeze are missing: %s" % (len(missing), sample(missing)))
        if extra:
            detail.append("%d commits made after the freeze are in the snapshot: %s" % (len(extra), sample(extra)))
        unit = "transactions" if engine == "InnoDB" else "rows"
        checks.report(not missing and not extra,
                      "%s: %d %s, exactly those committed before the freeze" % (engine, len(have), unit),
                      "\n".join(detail))
        if engine == "InnoDB":
            torn = [k for k, n in rows.items() if n != ROWS_PER_TXN]
            checks.report(not torn, "InnoDB: every transaction complete (%d rows each)" % ROWS_PER_TXN,
                          "torn: %s" % sample(torn) if torn else "")
    for table in writers.tables:
        if table.endswith("myisam"):
            report = copy.query("CHECK TABLE `%s`.`%s`" % (DATABASE, table))
            texts = ["%s: %s" % (r[2], r[3]) for r in report]
            clean = all(r[2] == "status" for r in report) and report[-1][3] == "OK"
            checks.report(clean, "MyISAM: CHECK TABLE %s says %s" % (table, report[-1][3] if clean else "not clean"),
                          "" if clean else "\n".join(texts))
    want_file, want_pos = position.get("binlog_file"), position.get("binlog_position")
    checks.report(binlog_file == want_file and binlog_size == want_pos,
                  "binary log in the snapshot ends at %s:%d; position file says %s:%s"
                  % (binlog_file, binlog_size, want_file, want_pos))
    gtid = copy.value("SELECT @@GLOBAL.gtid_binlog_pos") or None
    checks.report(gtid == (position.get("gtid") or None),
                  "GTID of the snapshot's last transaction is %s; position file says %s"
                  % (gtid or "-", position.get("gtid") or "-"))
    say()
    say("Summary: freeze %s (lock %s), snapshot %s, thaw %s; writes blocked %s for a %s snapshot;"
        % (ms(freeze.ended - freeze.began), given_ms(instance.get("wait_ms"), 1), ms(copy_s),
           ms(thaw.ended - thaw.began), ms(gap[1] - gap[0]) if gap else "?", ms(window)))
    say("         %d rows verified in the snapshot; demo ran %.1f s" % (total_rows, time.monotonic() - began))


def main() -> int:
    install_signal_handlers()
    checks = Checks()
    cleanup: list = []
    status = None
    try:
        run_demo(checks, cleanup)
    except KeyboardInterrupt:
        say()
        say("interrupted: stopping everything the demo started")
        status = 130
    except Exception as exc:  # a broken demo must still clean up and say so plainly
        say()
        say("the demo could not run: %s: %s" % (type(exc).__name__, exc))
        status = 2
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except BaseException as exc:
                say("cleanup: %s: %s" % (type(exc).__name__, exc))
    if status is None:
        status = 1 if checks.failed else 0
    say()
    if status == 0:
        say("PASS: the snapshot taken while frozen is consistent")
    else:
        say("FAIL: %s" % ("; ".join(checks.failed) if checks.failed else
                          "interrupted" if status == 130 else "the demo did not complete"))
    return status


if __name__ == "__main__":
    sys.exit(main())
