#!/usr/bin/python3
"""How long does quiesce keep a MariaDB server locked, and what does the lock cost?

Sections (all on private servers under /tmp; nothing else on the machine is touched):

  A  lock window: freeze/thaw cycles on an idle server and under 1 and 8 concurrent
     writers, per database driver: freeze and thaw wall time, lock wait, time from the
     lock to freeze returning, time from thaw to the first commit, and the time writes
     were blocked beyond the frozen window (seen from the writers).
  B  lock methods: what FLUSH TABLES WITH READ LOCK and BACKUP STAGE let readers and
     writers do during a fixed frozen window.
  C  long statements: a long SELECT, UPDATE, DDL, an idle LOCK TABLES or an idle open
     transaction when freeze starts: does the lock wait, does freeze fail, do writers stall.
  D  real filesystem freeze (root): the datadir on a loop-mounted ext4, frozen with
     fsfreeze between freeze and thaw as VMware Tools does; release-on-fs-thaw on vs off.
  E  unrelated dirty data (root): 0, 1 and 4 GB written without sync to the loop-mounted
     ext4 holding the datadir before each freeze, 8 writers: time under the lock, the
     drain before it, extra write-blocked time; then the same with the loop device
     throttled (a slow disk): the drain takes the slow part, the lock stays short.
  F  thaw start-up: `hook thaw` as installed (python3 -sB, byte-compiled and not) with a
     lock held, against `quiesce thaw`, which parses the configuration first: wall
     time and time until the holder released; bare interpreter start-up for comparison.
  G  stall per lock method (root): the longest time InnoDB writers went without a commit
     over a snapshot, with no database lock at all, FTWRL and BACKUP STAGE, per driver:
     with a real filesystem freeze (as VMware Tools: lock, fsfreeze, snapshot, fs thaw,
     thaw hook) and without one (as GCE or a storage snapshot: lock, snapshot, thaw). The
     no-lock rows are what a lock that never blocks commits would cost at best.

Medians (and p90) over repeated cycles, one table per section, targets marked. Durations
are measured with time.monotonic() in this process; quiesce's own stamps (position file,
state.json, result.json) are converted from wall-clock time. Nothing here asserts: a
benchmark reports.

  make deps    (once; as root: the real filesystem freeze needs it, the rest does not)
  PYTHONPATH=.:.deps /usr/bin/python3 bench/lock_window.py [--quick] [--json]
        [--sections ABCDEFG] [--drivers mysql-connector,pymysql] [--markdown FILE]
  bench/lock_window.py --render saved.json [--markdown FILE]    (tables of a saved --json run)

The default run takes about 8-10 minutes on 2 cores (E alone about 4, most of it writing
and draining dirty data), --quick about two.
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import loopfs  # noqa: E402
from bench.activity import LongStatement, Mix  # noqa: E402
from bench.common import (REPO, MariaDB, QuiesceEnv, Writers, ack_times, byte_compile_product, driver_available,  # noqa: E402
                          first_ack_after, gap_spanning, install_signal_handlers, iso_to_mono,
                          longest_stall, machine_line, median, p90, product_revision, read_json,
                          render_markdown, render_table, run_command, run_quiesce, server_version_short,
                          wait_result)

DRIVERS = ("mysql-connector", "pymysql")
METHODS = ("ftwrl", "backup-stage")

TARGETS = {
    "extra_blocked_ms": 50.0,   # median, under load (also with unrelated dirty data, section E)
    "under_lock_ms": 20.0,      # median time the holder works under the lock, whatever is dirty (E)
    "thaw_release_ms": 20.0,    # median from starting `hook thaw` to the holder's release (F)
    "thaw_ms": 60.0,            # median thaw wall time
    "freeze_idle_ms": 300.0,    # median freeze wall time, idle server
}


class Plan:
    """How much of everything to do; --quick scales it down to about a minute."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.cycles_a = 3 if quick else 10
        self.hold_a = 0.3            # the "snapshot": time between freeze returning and thaw
        self.settle = 0.3            # let writers get going again between cycles
        self.cycles_b = 1 if quick else 4
        self.window_b = 1.0
        self.long_wait_lead = 0.8    # how long the long statement runs before freeze starts
        self.acquire_timeout_c = 1.5
        self.long_query_time_c = 0.5
        self.long_query_wait_c = 1.0
        self.cycles_d = 2 if quick else 5
        self.fs_hold = 0.5           # the filesystem stays frozen this long (the snapshot)
        self.poll_gap = 1.0          # VMware's state machine runs the thaw hook ~1 s after the fs thaw
        self.dirty_sizes = [0, 256 << 20] if quick else [0, 1 << 30, 4 << 30]
        self.cycles_e = 2 if quick else 5
        self.slow_size = (256 << 20) if quick else (1 << 30)
        self.slow_bps = (64 << 20) if quick else (100 << 20)   # the throttled loop device, bytes/s
        self.cycles_f = 3 if quick else 10
        self.cycles_g = 2 if quick else 6
        self.snapshot_g = 1.0        # the snapshot itself: the filesystem frozen, or the disk copied


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fmt(value: Optional[float], digits: int = 0) -> str:
    if value is None:
        return "-"
    return "%.*f" % (digits, value)


def med_p90(values: Sequence[Optional[float]], digits: int = 0) -> str:
    m, p = median(values), p90(values)
    if m is None:
        return "-"
    return "%s (%s)" % (fmt(m, digits), fmt(p, digits))


def mark(ok: Optional[bool]) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


# ------------------------------------------------------------------------------- A

def lock_cycle(env: QuiesceEnv, hold: float, settle: float,
               between: Optional[Callable[[], Dict[str, Any]]] = None, idle_thaw: bool = False,
               thaw_command: Optional[Callable[[], Any]] = None, caller: Optional[str] = None) -> Dict[str, Any]:
    """freeze, wait `hold` (or run `between`), thaw (`quiesce thaw`, or thaw_command()); raw
    stamps, analysed later. caller: the --caller both pass (the release at the filesystem
    thaw is only for agents that freeze filesystems)."""
    named = ("--caller", caller) if caller else ()
    freeze = run_quiesce(env, "freeze", *named)
    cycle: Dict[str, Any] = {"freeze_rc": freeze.rc, "freeze_began": freeze.began, "freeze_ended": freeze.ended}
    if freeze.rc != 0:
        cycle["error"] = "freeze exit %d: %s" % (freeze.rc, freeze.message)
        return cycle
    state = env.state() or {}
    position = env.position()
    instance = (state.get("instances") or [{}])[0]
    cycle.update(wait_ms=instance.get("wait_ms"), lock=instance.get("lock"), timings=position.get("timings_ms") or {},
                 locked=iso_to_mono(position.get("locked_at")), holder_since=iso_to_mono(state.get("since")))
    if between is not None:
        cycle.update(between())
    else:
        time.sleep(hold)
    thaw = thaw_command() if thaw_command is not None else run_quiesce(env, "thaw", *named)
    result = wait_result(env, state.get("holder_pid"), timeout=2.0)
    cycle.update(thaw_rc=thaw.rc, thaw_began=thaw.began, thaw_ended=thaw.ended,
                 held_ms=result.get("held_ms"), outcome=result.get("outcome"),
                 probe_fired=any(p.get("fired") for p in result.get("fs_probes") or []))
    if thaw.rc != 0:
        cycle["error"] = "thaw exit %d: %s" % (thaw.rc, thaw.message)
    began = time.monotonic()
    if idle_thaw:
        # A thaw with nothing frozen: what starting and ending the command costs by itself.
        cycle["idle_thaw_ms"] = run_quiesce(env, "thaw").ms
    time.sleep(max(0.0, settle - (time.monotonic() - began)))
    return cycle


def analyse_a(cycle: Dict[str, Any], acks: Optional[List[float]]) -> Dict[str, Any]:
    if "thaw_began" not in cycle:
        return {}
    fb, fe, tb, te = cycle["freeze_began"], cycle["freeze_ended"], cycle["thaw_began"], cycle["thaw_ended"]
    out = {"freeze_ms": (fe - fb) * 1000, "thaw_ms": (te - tb) * 1000, "lock_wait_ms": cycle.get("wait_ms"),
           "window_ms": (tb - fe) * 1000}
    locked, since = cycle.get("locked"), cycle.get("holder_since")
    if locked is not None:
        out["lock_to_return_ms"] = (fe - locked) * 1000
    out["idle_thaw_ms"] = cycle.get("idle_thaw_ms")
    if since is not None:
        out["start_to_holder_ms"] = (since - fb) * 1000
        if locked is not None:
            out["holder_to_lock_ms"] = (locked - since) * 1000
    if acks:
        first = first_ack_after(acks, tb)
        out["first_write_ms"] = (first - tb) * 1000 if first is not None else None
        gap = gap_spanning(acks, fe, tb)
        if gap:
            out["blocked_ms"] = (gap[1] - gap[0]) * 1000
            out["extra_blocked_ms"] = out["blocked_ms"] - out["window_ms"]
        else:
            out["commit_while_frozen"] = True
    return out


def section_a(server: MariaDB, plan: Plan, drivers: Sequence[str]) -> Dict[str, Any]:
    loads = [("idle", 0, ()), ("1 writer", 1, ("InnoDB",)), ("8 writers", 4, ("InnoDB", "MyISAM"))]
    # The product default (release-on-fs-thaw on) with every driver, then the default driver
    # without the filesystem probe: the difference is what starting the probe costs.
    variants = [(driver, True, loads) for driver in drivers]
    if not plan.quick:
        variants.append((drivers[0], False, [loads[0], loads[2]]))
    rows = []
    for driver, probe, variant_loads in variants:
        env = QuiesceEnv(server, driver=driver, lock_timeout=60, release_on_fs_thaw="true" if probe else "false")
        try:
            # One unrecorded cycle: the first freeze after boot pays for cold imports and caches.
            warm = lock_cycle(env, plan.hold_a, plan.settle)
            for label, per_engine, engines in variant_loads:
                writers = None
                if per_engine:
                    writers = Writers(server, database="a_%s_%s_%d" % (driver.replace("-", "_"),
                                                                      "p" if probe else "np", per_engine),
                                      engines=engines, threads_per_engine=per_engine, max_seconds=900,
                                      max_commits=10_000_000)
                try:
                    if writers:
                        writers.start()
                        writers.wait_for_progress(20)
                        time.sleep(0.3)
                    cycles = []
                    for i in range(plan.cycles_a):
                        log("A  %-9s %-15s %s cycle %d/%d" % (label, driver, "" if probe else "no fs probe",
                                                             i + 1, plan.cycles_a))
                        cycles.append(lock_cycle(env, plan.hold_a, plan.settle, idle_thaw=True))
                    if writers:
                        writers.wait_for_progress(5)
                finally:
                    if writers:
                        writers.stop(timeout=15)
                acks = ack_times(writers.snapshot()[0]) if writers else None
                derived = [analyse_a(c, acks) for c in cycles]
                rate = None
                if writers and cycles:
                    span = cycles[-1]["freeze_began"] - cycles[0]["freeze_began"]
                    rate = len([a for a in acks if cycles[0]["freeze_began"] <= a <= cycles[-1]["freeze_began"]]) / span if span > 0 else None
                rows.append({
                    "load": label if probe else label + ", no fs probe", "default": probe,
                    "release_on_fs_thaw": probe, "writers": per_engine * len(engines), "driver": driver,
                    "cycles": len(cycles), "errors": [c["error"] for c in cycles if c.get("error")],
                    "commits_per_s": rate,
                    "commit_while_frozen": sum(1 for d in derived if d.get("commit_while_frozen")),
                    "warmup_freeze_ms": (warm["freeze_ended"] - warm["freeze_began"]) * 1000,
                    "median": {k: median(d.get(k) for d in derived) for k in _A_KEYS},
                    "p90": {k: p90(d.get(k) for d in derived) for k in _A_KEYS},
                    "raw": derived,
                })
        finally:
            env.cleanup()
    return {"hold_ms": plan.hold_a * 1000, "rows": rows}


_A_KEYS = ("freeze_ms", "lock_wait_ms", "lock_to_return_ms", "thaw_ms", "first_write_ms", "blocked_ms",
           "extra_blocked_ms", "window_ms", "start_to_holder_ms", "holder_to_lock_ms", "idle_thaw_ms")


def targets_a(row: Dict[str, Any]) -> Dict[str, Optional[bool]]:
    if not row["default"]:
        return {}
    m = row["median"]
    out = {"thaw": None if m["thaw_ms"] is None else m["thaw_ms"] <= TARGETS["thaw_ms"]}
    if row["writers"]:
        out["extra_blocked"] = (None if m["extra_blocked_ms"] is None
                                else m["extra_blocked_ms"] <= TARGETS["extra_blocked_ms"])
    else:
        out["freeze_idle"] = None if m["freeze_ms"] is None else m["freeze_ms"] <= TARGETS["freeze_idle_ms"]
    return out


def table_a(data: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for row in data["rows"]:
        m = lambda key: [d.get(key) for d in row["raw"]]  # noqa: E731
        t = targets_a(row)
        rows.append([row["load"], row["driver"], str(row["cycles"]),
                     med_p90(m("freeze_ms")), med_p90(m("lock_wait_ms"), 1), med_p90(m("lock_to_return_ms")),
                     med_p90(m("thaw_ms")), med_p90(m("first_write_ms")) if row["writers"] else "-",
                     med_p90(m("extra_blocked_ms")) if row["writers"] else "-",
                     ", ".join("%s %s" % (k.replace("_", " "), mark(v)) for k, v in t.items()) or "-"])
    return rows


HEAD_A = ["load", "driver", "cycles", "freeze", "lock wait", "lock->freeze returns", "thaw",
          "thaw->1st commit", "extra blocked", "targets"]


def table_a_breakdown(data: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for row in data["rows"]:
        m = row["median"]
        rows.append([row["load"], row["driver"], fmt(m["start_to_holder_ms"]), fmt(m["holder_to_lock_ms"]),
                     fmt(m["lock_to_return_ms"]), fmt(m["freeze_ms"]), fmt(m["thaw_ms"]), fmt(m["idle_thaw_ms"]),
                     fmt(m["first_write_ms"]) if row["writers"] else "-", fmt(row["warmup_freeze_ms"]),
                     fmt(row["commits_per_s"]) if row["commits_per_s"] else "-"])
    return rows


HEAD_A2 = ["load", "driver", "start->holder ready", "holder->locked", "locked->return", "= freeze",
           "thaw", "thaw, nothing frozen", "thaw->1st commit", "first freeze (cold)", "commits/s"]


# ------------------------------------------------------------------------------- B

def section_b(server: MariaDB, plan: Plan) -> Dict[str, Any]:
    mix = Mix(server, database="b_mix", txn_size=200)
    envs = {m: QuiesceEnv(server, driver=None, lock_timeout=60, lock_method=m) for m in METHODS}
    samples: Dict[str, List[Dict[str, Any]]] = {m: [] for m in METHODS}
    try:
        mix.start()
        time.sleep(1.0)
        for i in range(plan.cycles_b):
            for method in METHODS:
                log("B  %-12s cycle %d/%d" % (method, i + 1, plan.cycles_b))
                mix.commits_allowed.clear()
                cycle = lock_cycle(envs[method], plan.window_b, 0.0)
                mix.commits_allowed.set()
                time.sleep(1.2)   # longer than the baseline window, so baselines never overlap a freeze
                samples[method].append(cycle)
    finally:
        for env in envs.values():
            env.cleanup()
        mix.stop()
    rows = []
    for method in METHODS:
        per_kind: Dict[str, Dict[str, List[float]]] = {k: {"frozen": [], "base": []} for k in Mix.KINDS}
        errors = []
        for c in samples[method]:
            if c.get("error"):
                errors.append(c["error"])
                continue
            start, end = c["freeze_ended"], c["thaw_began"]
            base_start = c["freeze_began"] - 1.0
            for kind in Mix.KINDS:
                per_kind[kind]["frozen"].append(mix.count(kind, start, end) / (end - start))
                per_kind[kind]["base"].append(mix.count(kind, base_start, c["freeze_began"]) / 1.0)
        rows.append({"method": method, "cycles": len(samples[method]), "errors": errors,
                     "freeze_ms": median((c["freeze_ended"] - c["freeze_began"]) * 1000 for c in samples[method]),
                     "window_ms": median((c["thaw_began"] - c["freeze_ended"]) * 1000
                                         for c in samples[method] if "thaw_began" in c),
                     "per_second": {k: {"frozen": median(v["frozen"]), "unfrozen": median(v["base"])}
                                    for k, v in per_kind.items()}})
    return {"window_ms": plan.window_b * 1000, "rows": rows, "mix_errors": mix.errors}


HEAD_B = ["method", "cycles", "reads InnoDB", "reads MyISAM", "DML in open txn", "commits InnoDB",
          "writes MyISAM"]


def table_b(data: Dict[str, Any]) -> List[List[str]]:
    rows = []
    base = {k: median(r["per_second"][k]["unfrozen"] for r in data["rows"]) for k in Mix.KINDS}
    rows.append(["(not frozen)", "-"] + [fmt(base[k]) for k in Mix.KINDS])
    for row in data["rows"]:
        cells = []
        for kind in Mix.KINDS:
            frozen = row["per_second"][kind]["frozen"]
            share = "" if not base[kind] or frozen is None else " (%.0f%%)" % (100.0 * frozen / base[kind])
            cells.append(fmt(frozen) + share)
        rows.append([row["method"], str(row["cycles"])] + cells)
    return rows


# ------------------------------------------------------------------------------- C

LQ = "lq"


def _lq_tables(server: MariaDB) -> None:
    server.sql("CREATE DATABASE IF NOT EXISTS %s" % LQ)
    server.sql("DROP TABLE IF EXISTS %s.lq_m, %s.lq_i, %s.lq_x" % (LQ, LQ, LQ))
    server.sql("CREATE TABLE %s.lq_m (id INT PRIMARY KEY, v INT) ENGINE=MyISAM" % LQ)
    server.sql("CREATE TABLE %s.lq_i (id INT PRIMARY KEY, v INT) ENGINE=InnoDB" % LQ)
    for table in ("lq_m", "lq_i"):
        server.sql("INSERT INTO %s.%s VALUES %s" % (LQ, table, ", ".join("(%d, 0)" % i for i in range(1, 9))))


def scenarios(long_s: float):
    """(key, description, LongStatement factory). Statements run far longer than any freeze
    attempt here and are interrupted afterwards."""
    per_row = long_s / 8.0
    return [
        ("select-myisam", "SELECT SLEEP(%g) FROM a MyISAM table" % long_s,
         lambda s: LongStatement(s, ["SELECT SLEEP(%g) FROM %s.lq_m LIMIT 1" % (long_s, LQ)])),
        ("update-myisam", "long UPDATE of a MyISAM table",
         lambda s: LongStatement(s, ["UPDATE %s.lq_m SET v = v + SLEEP(%g)" % (LQ, per_row)])),
        ("update-innodb", "long UPDATE of an InnoDB table",
         lambda s: LongStatement(s, ["UPDATE %s.lq_i SET v = v + SLEEP(%g)" % (LQ, per_row)])),
        ("ddl", "long DDL (CREATE TABLE ... SELECT SLEEP)",
         lambda s: LongStatement(s, ["CREATE TABLE %s.lq_x ENGINE=InnoDB AS SELECT SLEEP(%g) AS v" % (LQ, long_s)])),
        ("lock-tables", "idle session holding LOCK TABLES (MyISAM) WRITE",
         lambda s: LongStatement(s, ["LOCK TABLES %s.lq_m WRITE" % LQ], idle=True, release="UNLOCK TABLES")),
        ("open-txn", "idle transaction with an uncommitted UPDATE (InnoDB)",
         lambda s: LongStatement(s, ["BEGIN", "UPDATE %s.lq_i SET v = v + 1" % LQ], idle=True, release="COMMIT")),
    ]


QUICK_SCENARIOS = ("select-myisam", "update-myisam", "lock-tables")


def section_c(server: MariaDB, plan: Plan) -> Dict[str, Any]:
    long_s = 8.0
    modes = [("lock only", {"long_query_time": 3600}),
             ("pre-check", {"long_query_time": plan.long_query_time_c,
                            "long_query_wait": plan.long_query_wait_c})]
    if plan.quick:
        modes = modes[:1]
    chosen = [s for s in scenarios(long_s) if not plan.quick or s[0] in QUICK_SCENARIOS]
    writers = Writers(server, database="c_load", engines=("InnoDB", "MyISAM"), threads_per_engine=1,
                      max_seconds=900, max_commits=10_000_000)
    envs = {}
    runs = []
    try:
        writers.start()
        writers.wait_for_progress(20)
        for mode, settings in modes:
            for method in METHODS:
                envs[(mode, method)] = QuiesceEnv(server, driver=None, lock_timeout=60, lock_method=method,
                                                  acquire_timeout=plan.acquire_timeout_c, **settings)
        for key, description, factory in chosen:
            for mode, _settings in modes:
                for method in METHODS:
                    log("C  %-14s %-10s %s" % (key, mode, method))
                    _lq_tables(server)
                    statement = factory(server).start()
                    try:
                        time.sleep(plan.long_wait_lead)
                        env = envs[(mode, method)]
                        freeze = run_quiesce(env, "freeze")
                        wait_ms = None
                        thaw_rc = None
                        if freeze.rc == 0:
                            state = env.state() or {}
                            wait_ms = (state.get("instances") or [{}])[0].get("wait_ms")
                            thaw_rc = run_quiesce(env, "thaw").rc
                    finally:
                        statement.end()
                    writers.wait_for_progress(3)
                    commits = writers.snapshot()[0]
                    stall = {}
                    for table in writers.tables:
                        acks = ack_times(commits, (table,))
                        stall[table] = longest_stall(acks, freeze.began, freeze.ended) * 1000
                    text = freeze.message
                    if freeze.rc == 0:
                        outcome = "locked"
                    elif "long-query-wait" in text:
                        outcome = "exit %d: long statement" % freeze.rc
                    elif "acquire-timeout" in text:
                        outcome = "exit %d: lock timed out" % freeze.rc
                    else:
                        outcome = "exit %d" % freeze.rc
                    runs.append({"scenario": key, "description": description, "mode": mode, "method": method,
                                 "freeze_rc": freeze.rc, "freeze_ms": freeze.ms, "lock_wait_ms": wait_ms,
                                 "thaw_rc": thaw_rc, "outcome": outcome, "message": text,
                                 "statement_error": statement.error,
                                 "stall_innodb_ms": stall.get("t_innodb"), "stall_myisam_ms": stall.get("t_myisam")})
                    time.sleep(0.2)
    finally:
        for env in envs.values():
            env.cleanup()
        writers.stop(timeout=15)
        with contextlib.suppress(Exception):
            server.sql("DROP DATABASE IF EXISTS %s" % LQ)
    return {"acquire_timeout_s": plan.acquire_timeout_c, "long_query_time_s": plan.long_query_time_c,
            "long_query_wait_s": plan.long_query_wait_c, "lead_s": plan.long_wait_lead, "runs": runs}


HEAD_C = ["statement running when freeze starts", "pre-check", "ftwrl", "backup-stage"]


def _c_cell(r: Dict[str, Any]) -> str:
    if r["freeze_rc"] == 0:
        head = "locked (lock %s ms)" % fmt(r["lock_wait_ms"], 0)
    else:
        head = r["outcome"].replace("exit %d: " % r["freeze_rc"], "exit %d, " % r["freeze_rc"])
    return "%s in %.0f ms; stall %.0f/%.0f" % (head, r["freeze_ms"], r["stall_innodb_ms"], r["stall_myisam_ms"])


def table_c(data: Dict[str, Any]) -> List[List[str]]:
    """One row per statement and pre-check setting, one column per lock method."""
    rows = []
    index: Dict[Any, Dict[str, Dict[str, Any]]] = {}
    order = []
    for r in data["runs"]:
        key = (r["description"], r["mode"])
        if key not in index:
            index[key] = {}
            order.append(key)
        index[key][r["method"]] = r
    last = None
    for description, mode in order:
        cells = index[(description, mode)]
        rows.append([description if description != last else "", "off" if mode == "lock only" else "on"]
                    + [_c_cell(cells[m]) if m in cells else "-" for m in METHODS])
        last = description
    return rows


def waits_summary(data: Dict[str, Any]) -> Dict[str, Dict[str, List[str]]]:
    """From the runs without pre-check: which statements made each lock wait, and which
    writers stalled behind the waiting lock."""
    out: Dict[str, Dict[str, List[str]]] = {m: {"waits": [], "no_wait": []} for m in METHODS}
    for r in data["runs"]:
        if r["mode"] != "lock only":
            continue
        if r["freeze_rc"] != 0 or (r["lock_wait_ms"] or 0) > 500:
            stalled = [e for e, key in (("InnoDB", "stall_innodb_ms"), ("MyISAM", "stall_myisam_ms"))
                       if (r[key] or 0) > 500]
            out[r["method"]]["waits"].append("%s (writers stalled meanwhile: %s)"
                                             % (r["description"], " and ".join(stalled) or "none"))
        else:
            out[r["method"]]["no_wait"].append(r["description"])
    return out


# ------------------------------------------------------------------------------- D

def _tear_down_on_fs(fs: Any, envs: Any, writers: Any, server: Any) -> None:
    """Order matters: a frozen filesystem blocks everything behind it, so thaw it first,
    then release the locks, then stop the load, the server and the mount."""
    with contextlib.suppress(Exception):
        fs.ensure_thawed()
    for env in envs:
        env.cleanup()
    if writers:
        writers.stop(timeout=15)
    if server:
        server.cleanup()
    fs.close()


def section_d(plan: Plan) -> Dict[str, Any]:
    reason = loopfs.unavailable_reason()
    if reason:
        return {"skipped": reason}
    fs = loopfs.LoopFs(size_mb=256)
    server = None
    envs: Dict[bool, QuiesceEnv] = {}
    writers = None
    cycles: Dict[bool, List[Dict[str, Any]]] = {True: [], False: []}
    try:
        fs.setup()
        server = MariaDB(name="fsbench", datadir=os.path.join(fs.mnt, "data"))
        server.start()
        for flag in (True, False):
            envs[flag] = QuiesceEnv(server, driver=None, lock_timeout=60,
                                    release_on_fs_thaw="true" if flag else "false")
        writers = Writers(server, database="d_load", engines=("InnoDB", "MyISAM"), threads_per_engine=4,
                          max_seconds=900, max_commits=10_000_000)
        writers.start()
        writers.wait_for_progress(20)
        for i in range(plan.cycles_d):
            for flag in (True, False):
                log("D  release-on-fs-thaw=%-5s cycle %d/%d" % (str(flag).lower(), i + 1, plan.cycles_d))

                def snapshot() -> Dict[str, Any]:
                    stamps: Dict[str, Any] = {}
                    try:
                        stamps["fs_frozen"] = fs.freeze()
                        time.sleep(plan.fs_hold)
                    finally:
                        if fs.frozen:
                            stamps["fs_thawed"] = fs.thaw()
                    time.sleep(plan.poll_gap)
                    return stamps
                cycles[flag].append(lock_cycle(envs[flag], 0.0, plan.settle, between=snapshot,
                                               caller="vmware-tools"))
        writers.wait_for_progress(5)
    finally:
        _tear_down_on_fs(fs, envs.values(), writers, server)
    acks = ack_times(writers.snapshot()[0])
    rows = []
    for flag in (True, False):
        derived = []
        for c in cycles[flag]:
            if "fs_thawed" not in c or "thaw_began" not in c:
                derived.append({"error": c.get("error", "incomplete cycle")})
                continue
            ff0, ff1 = c["fs_frozen"]
            fu0, fu1 = c["fs_thawed"]
            d = {"fsfreeze_ms": (ff1 - ff0) * 1000, "fs_window_ms": (fu1 - ff0) * 1000,
                 "outcome": c.get("outcome"), "thaw_rc": c.get("thaw_rc"), "error": c.get("error"),
                 "freeze_ms": (c["freeze_ended"] - c["freeze_began"]) * 1000,
                 "held_ms": c.get("held_ms")}
            first = first_ack_after(acks, fu1)
            d["resume_after_fs_thaw_ms"] = (first - fu1) * 1000 if first is not None else None
            gap = gap_spanning(acks, ff0, fu1)
            if gap:
                d["blocked_ms"] = (gap[1] - gap[0]) * 1000
                d["beyond_fs_window_ms"] = d["blocked_ms"] - d["fs_window_ms"]
            derived.append(d)
        outcomes: Dict[str, int] = {}
        for d in derived:
            outcomes[str(d.get("outcome"))] = outcomes.get(str(d.get("outcome")), 0) + 1
        keys = ("fsfreeze_ms", "fs_window_ms", "resume_after_fs_thaw_ms", "blocked_ms", "beyond_fs_window_ms",
                "held_ms", "freeze_ms")
        rows.append({"release_on_fs_thaw": flag, "cycles": len(derived), "outcomes": outcomes,
                     "thaw_exit_codes": sorted({d.get("thaw_rc") for d in derived if d.get("thaw_rc") is not None}),
                     "errors": [d["error"] for d in derived if d.get("error")],
                     "median": {k: median(d.get(k) for d in derived) for k in keys},
                     "p90": {k: p90(d.get(k) for d in derived) for k in keys}, "raw": derived})
    return {"fs_hold_ms": plan.fs_hold * 1000, "poll_gap_ms": plan.poll_gap * 1000, "rows": rows,
            "writers": 8}


HEAD_D = ["release-on-fs-thaw", "outcome", "cycles", "thaw exit", "fsfreeze -f", "writes resume after fs thaw",
          "stall beyond fs-freeze window", "lock held"]


def table_d(data: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for r in data["rows"]:
        raw = r["raw"]
        rows.append(["true" if r["release_on_fs_thaw"] else "false",
                     ", ".join("%s %d/%d" % (k, n, r["cycles"]) for k, n in sorted(r["outcomes"].items())),
                     str(r["cycles"]),
                     ",".join(str(x) for x in r["thaw_exit_codes"]) or "-",
                     med_p90([d.get("fsfreeze_ms") for d in raw]),
                     med_p90([d.get("resume_after_fs_thaw_ms") for d in raw]),
                     med_p90([d.get("beyond_fs_window_ms") for d in raw]),
                     med_p90([d.get("held_ms") for d in raw])])
    return rows


# ------------------------------------------------------------------------------- G

G_VARIANTS = ("none",) + METHODS


def _g_cycle(env: Optional[QuiesceEnv], fs: Any, plan: Plan, frozen_fs: bool) -> Dict[str, Any]:
    """One snapshot: (lock,) [fsfreeze, hold, fs thaw, thaw-hook delay | hold], (thaw)."""
    caller = "vmware-tools" if frozen_fs else "gce"
    cycle: Dict[str, Any] = {"began": time.monotonic()}
    if env is not None:
        freeze = run_quiesce(env, "freeze", "--caller", caller)
        if freeze.rc != 0:
            cycle.update(error="freeze exit %d: %s" % (freeze.rc, freeze.message), ended=time.monotonic())
            return cycle
    try:
        if frozen_fs:
            fs.freeze()
            time.sleep(plan.snapshot_g)
    finally:
        if frozen_fs and fs.frozen:
            fs.thaw()
    time.sleep(plan.poll_gap if frozen_fs else plan.snapshot_g)
    if env is not None:
        thaw = run_quiesce(env, "thaw", "--caller", caller)
        if thaw.rc != 0:
            cycle["error"] = "thaw exit %d: %s" % (thaw.rc, thaw.message)
    time.sleep(plan.settle)
    cycle["ended"] = time.monotonic()
    return cycle


def section_g(plan: Plan, drivers: Sequence[str]) -> Dict[str, Any]:
    reason = loopfs.unavailable_reason()
    if reason:
        return {"skipped": reason}
    fs = loopfs.LoopFs(size_mb=256)
    server = None
    envs: List[QuiesceEnv] = []
    writers = None
    runs: Dict[str, List[Dict[str, Any]]] = {}
    try:
        fs.setup()
        server = MariaDB(name="stallbench", datadir=os.path.join(fs.mnt, "data"))
        server.start()
        variants = [("none", None)] + [(m, d) for m in METHODS for d in drivers]
        configured: Dict[str, Optional[QuiesceEnv]] = {}
        for method, driver in variants:
            key = method if driver is None else "%s/%s" % (method, driver)
            if driver is None:
                configured[key] = None
            else:
                env = QuiesceEnv(server, driver=driver, lock_method=method, lock_timeout=60)
                envs.append(env)
                configured[key] = env
        writers = Writers(server, database="g_load", engines=("InnoDB",), threads_per_engine=4,
                          max_seconds=1800, max_commits=10_000_000)
        writers.start()
        writers.wait_for_progress(20)
        for i in range(plan.cycles_g):
            for frozen_fs in (True, False):
                for key, env in configured.items():
                    log("G  %-26s %-13s cycle %d/%d" % (key, "fs frozen" if frozen_fs else "no fs freeze", i + 1,
                                                       plan.cycles_g))
                    runs.setdefault("%s|%s" % (key, frozen_fs), []).append(_g_cycle(env, fs, plan, frozen_fs))
        writers.wait_for_progress(5)
    finally:
        _tear_down_on_fs(fs, envs, writers, server)
    acks = ack_times(writers.snapshot()[0])
    rows = []
    for name, cycles in runs.items():
        key, frozen = name.split("|")
        stalls = [longest_stall(acks, c["began"], c["ended"]) * 1000 for c in cycles if not c.get("error")]
        rows.append({"variant": key, "fs_frozen": frozen == "True", "cycles": len(cycles),
                     "errors": [c["error"] for c in cycles if c.get("error")],
                     "median_ms": median(stalls), "p90_ms": p90(stalls)})
    return {"snapshot_ms": plan.snapshot_g * 1000, "poll_gap_ms": plan.poll_gap * 1000, "writers": 4, "rows": rows}


HEAD_G = ["lock", "snapshot", "cycles", "longest write stall", "over no lock"]


def table_g(data: Dict[str, Any]) -> List[List[str]]:
    baseline = {r["fs_frozen"]: r["median_ms"] for r in data["rows"] if r["variant"] == "none"}
    rows = []
    for r in sorted(data["rows"], key=lambda r: (not r["fs_frozen"], G_VARIANTS.index(r["variant"].split("/")[0]),
                                                 r["variant"])):
        base = baseline.get(r["fs_frozen"])
        over = (r["median_ms"] - base) if (base is not None and r["median_ms"] is not None) else None
        rows.append([r["variant"], "fs frozen %.0f ms" % data["snapshot_ms"] if r["fs_frozen"] else
                     "no fs freeze, %.0f ms" % data["snapshot_ms"], str(r["cycles"]),
                     "%s (%s)" % (fmt(r["median_ms"]), fmt(r["p90_ms"])),
                     "-" if r["variant"] == "none" else fmt(over)])
    return rows


# ------------------------------------------------------------------------------- E

MIB = 1 << 20
BLKIO_WRITE_BPS = "/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device"


def dirty_kb() -> Optional[int]:
    """The machine's dirty page cache (/proc/meminfo Dirty), in KiB."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("Dirty:"):
                return int(line.split()[1])
    return None


def make_dirty(path: str, size: int) -> float:
    """(Re)write size bytes of path without syncing; returns the seconds it took."""
    began = time.monotonic()
    chunk = os.urandom(MIB)
    with open(path, "r+b" if os.path.exists(path) else "wb") as handle:
        for _ in range(size // MIB):
            handle.write(chunk)
    return time.monotonic() - began


class WriteThrottle:
    """A cgroup-v1 blkio write limit on one block device (the loop device), undone on exit."""

    def __init__(self, dev: str, bytes_per_s: int):
        rdev = os.stat(dev).st_rdev
        self.majmin = "%d:%d" % (os.major(rdev), os.minor(rdev))
        self.bps = bytes_per_s

    def _write(self, value: int) -> None:
        with open(BLKIO_WRITE_BPS, "w") as handle:
            handle.write("%s %d\n" % (self.majmin, value))

    def __enter__(self) -> "WriteThrottle":
        self._write(self.bps)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._write(0)


def section_e(plan: Plan, drivers: Sequence[str]) -> Dict[str, Any]:
    reason = loopfs.unavailable_reason()
    if reason:
        return {"skipped": reason}
    # The image is sparse and grows with what is written: the largest dirty file, the datadir, slack.
    image_mb = max(plan.dirty_sizes + [plan.slow_size]) // MIB + 1536
    root = "/var/tmp"
    free = shutil.disk_usage(root).free
    if free < image_mb * MIB * 1.2:
        return {"skipped": "needs %d MB free in %s for the loop image, has %d MB" % (image_mb * 1.2, root, free // MIB)}
    throttle_reason = None if os.path.exists(BLKIO_WRITE_BPS) else "no cgroup-v1 blkio controller"
    fs = loopfs.LoopFs(size_mb=image_mb, base=tempfile.mkdtemp(prefix="quiesce-bench-dirty-", dir=root))
    server = None
    env = None
    writers = None
    runs: List[Dict[str, Any]] = []
    try:
        fs.setup()
        server = MariaDB(name="dirtybench", datadir=os.path.join(fs.mnt, "data"))
        server.start()
        env = QuiesceEnv(server, driver=None, lock_timeout=120)
        hook = _installed_hook(fs.base)

        def hook_thaw() -> Any:
            return run_command([hook, "thaw"], hook_environment(env), env.outdir)
        writers = Writers(server, database="e_load", engines=("InnoDB", "MyISAM"), threads_per_engine=4,
                          max_seconds=3600, max_commits=100_000_000)
        writers.start()
        writers.wait_for_progress(20)
        unrelated = os.path.join(fs.mnt, "unrelated.bin")
        variants = [("page cache", size, None) for size in plan.dirty_sizes]
        if throttle_reason is None:
            variants.append(("slow disk %d MB/s" % (plan.slow_bps // MIB), plan.slow_size, plan.slow_bps))
        for driver in drivers:
            env.write_config(driver=driver)
            for label, size, bps in variants:
                with (WriteThrottle(fs.dev, bps) if bps else contextlib.nullcontext()):
                    for i in range(plan.cycles_e):
                        log("E  %-15s %-18s %5d MB dirty, cycle %d/%d"
                            % (driver, label, size // MIB, i + 1, plan.cycles_e))
                        dirtied_s = make_dirty(unrelated, size) if size else 0.0
                        dirty = dirty_kb()
                        cycle = lock_cycle(env, plan.hold_a, plan.settle, thaw_command=hook_thaw)
                        cycle.update(variant=label, size=size, driver=driver, dirty_kb=dirty, dirtied_s=dirtied_s)
                        runs.append(cycle)
        writers.wait_for_progress(5)
    finally:
        if env is not None:
            env.cleanup()
        if writers is not None:
            writers.stop(timeout=15)
        if server is not None:
            server.cleanup()
        fs.close()
    acks = ack_times(writers.snapshot()[0])
    rows = []
    for driver, label, size in dict.fromkeys((r["driver"], r["variant"], r["size"]) for r in runs):
        cycles = [r for r in runs if (r["driver"], r["variant"], r["size"]) == (driver, label, size)]
        derived = []
        for c in cycles:
            d = analyse_a(c, acks)
            t = c.get("timings") or {}
            d.update({k + "_ms": t.get(k) for k in ("drain", "acquire", "under_lock", "sync", "flush")})
            d["dirty_mb"] = c["dirty_kb"] / 1024.0 if c.get("dirty_kb") is not None else None
            derived.append(d)
        keys = ("freeze_ms", "drain_ms", "acquire_ms", "under_lock_ms", "sync_ms", "flush_ms", "lock_to_return_ms",
                "extra_blocked_ms", "thaw_ms", "dirty_mb")
        rows.append({"variant": label, "driver": driver, "size_mb": size // MIB, "cycles": len(cycles),
                     "errors": [c["error"] for c in cycles if c.get("error")],
                     "median": {k: median(d.get(k) for d in derived) for k in keys},
                     "p90": {k: p90(d.get(k) for d in derived) for k in keys}, "raw": derived})
    return {"writers": 8, "hold_ms": plan.hold_a * 1000, "throttle": throttle_reason or "blkio write_bps_device",
            "rows": rows}


HEAD_E = ["unrelated dirty data", "driver", "cycles", "Dirty at freeze (MB)", "freeze", "drain (before lock)",
          "lock wait", "under the lock", "of which sync", "lock->freeze returns", "extra blocked", "targets"]


def targets_e(row: Dict[str, Any]) -> Dict[str, Optional[bool]]:
    m = row["median"]
    return {"under lock": None if m["under_lock_ms"] is None else m["under_lock_ms"] <= TARGETS["under_lock_ms"],
            "extra blocked": (None if m["extra_blocked_ms"] is None
                              else m["extra_blocked_ms"] <= TARGETS["extra_blocked_ms"])}


def table_e(data: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for row in data["rows"]:
        m = lambda key: [d.get(key) for d in row["raw"]]  # noqa: E731
        rows.append(["%d MB, %s" % (row["size_mb"], row["variant"]), row.get("driver") or "auto", str(row["cycles"]),
                     fmt(row["median"]["dirty_mb"]),
                     med_p90(m("freeze_ms")), med_p90(m("drain_ms")), med_p90(m("acquire_ms"), 1),
                     med_p90(m("under_lock_ms"), 1), med_p90(m("sync_ms"), 1), med_p90(m("lock_to_return_ms")),
                     med_p90(m("extra_blocked_ms")),
                     ", ".join("%s %s" % (k, mark(v)) for k, v in targets_e(row).items())])
    return rows


# ------------------------------------------------------------------------------- F

def _installed_hook(directory: str) -> str:
    """libexec/hook as installed, but importing this repository's code."""
    with open(os.path.join(REPO, "libexec", "hook")) as src:
        text = src.read().replace('"/usr/lib/quiesce"', repr(REPO))
    path = os.path.join(directory, "hook")
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    return path


def hook_environment(env: QuiesceEnv) -> Dict[str, str]:
    """What a hook runner gives: no PYTHONPATH; the config file is named in the environment
    only because /etc/quiesce/quiesce.conf is not this benchmark's."""
    plain = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "QUIESCE_CONFIG": env.conf}
    plain.update({k: v for k, v in env.env().items() if k not in ("PATH", "LANG", "PYTHONPATH")})
    return plain


def section_f(server: MariaDB, plan: Plan) -> Dict[str, Any]:
    env = QuiesceEnv(server, driver=None, lock_timeout=60)
    scratch = tempfile.mkdtemp(prefix="quiesce-bench-thaw-", dir="/tmp")
    try:
        hook = _installed_hook(scratch)
        empty_cache = os.path.join(scratch, "no-bytecode")
        os.makedirs(empty_cache)
        plain = hook_environment(env)
        # PYTHONPYCACHEPREFIX points the interpreter at an empty cache: every module compiles from source.
        thaws = [("hook thaw, byte-compiled", [hook, "thaw"], plain),
                 ("hook thaw, no bytecode", [hook, "thaw"], dict(plain, PYTHONPYCACHEPREFIX=empty_cache)),
                 ("quiesce thaw (parses the config first)", None, None)]
        bare = [("python3 -sB (the launchers' flags)", ["-sB"]), ("python3 -I", ["-I"]),
                ("python3 -sBS (no site)", ["-sBS"]), ("python3 -sB -X frozen_modules=off", ["-sB", "-X", "frozen_modules=off"])]
        rows = []
        for label, cmd, environment in thaws:
            samples = []
            for i in range(plan.cycles_f):
                log("F  %-40s %d/%d" % (label, i + 1, plan.cycles_f))
                freeze = run_quiesce(env, "freeze")
                if freeze.rc != 0:
                    samples.append({"error": "freeze exit %d: %s" % (freeze.rc, freeze.message)})
                    continue
                holder = (env.state() or {}).get("holder_pid")
                time.sleep(plan.hold_a)
                thaw = run_quiesce(env, "thaw") if cmd is None else run_command(cmd, environment, env.outdir)
                result = wait_result(env, holder, timeout=2.0)
                released = iso_to_mono(result.get("at"))
                samples.append({"wall_ms": thaw.ms, "rc": thaw.rc,
                                "release_ms": (released - thaw.began) * 1000 if released is not None else None,
                                "error": None if thaw.rc == 0 else "exit %d: %s" % (thaw.rc, thaw.message)})
                time.sleep(plan.settle)
            rows.append({"what": label, "samples": samples})
        for label, flags in bare:
            samples = []
            for i in range(plan.cycles_f):
                run = run_command(["/usr/bin/python3", *flags, "-c", "pass"], {"PATH": "/usr/bin:/bin"}, env.outdir)
                samples.append({"wall_ms": run.ms, "rc": run.rc})
            rows.append({"what": label, "samples": samples, "bare": True})
        imports = run_command(["/usr/bin/python3", "-sB", "-X", "importtime", "-c",
                               "import sys; sys.path.insert(0, %r); import quiesce.commands.fastthaw" % REPO],
                              {"PATH": "/usr/bin:/bin"}, env.outdir)
        fast_imports = [line for line in imports.stderr.splitlines() if "quiesce" in line]
    finally:
        env.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": rows, "fastthaw_importtime": fast_imports}


HEAD_F = ["command", "runs", "wall", "start -> holder released", "target"]


def table_f(data: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for row in data["rows"]:
        walls = [s.get("wall_ms") for s in row["samples"]]
        releases = [s.get("release_ms") for s in row["samples"]]
        goal = "-"
        if row["what"].startswith("hook thaw, byte"):
            m = median(releases)
            goal = "<= %.0f ms %s" % (TARGETS["thaw_release_ms"], mark(None if m is None else m <= TARGETS["thaw_release_ms"]))
        rows.append([row["what"], str(len(row["samples"])), med_p90(walls, 1),
                     "-" if row.get("bare") else med_p90(releases, 1), goal])
    return rows


# ------------------------------------------------------------------------------- output

def targets_overview(results: Dict[str, Any]) -> List[List[str]]:
    rows = []
    e = results.get("E")
    if e and not e.get("skipped"):
        for row in e["rows"]:
            m, t = row["median"], targets_e(row)
            what = "%d MB dirty, %s" % (row["size_mb"], row["variant"])
            driver = row.get("driver") or "-"
            rows.append(["time under the lock, %s" % what, driver, "<= %.0f ms" % TARGETS["under_lock_ms"],
                         "%s ms" % fmt(m["under_lock_ms"], 1), mark(t["under lock"])])
            rows.append(["extra blocked time, %s" % what, driver, "<= %.0f ms" % TARGETS["extra_blocked_ms"],
                         "%s ms" % fmt(m["extra_blocked_ms"]), mark(t["extra blocked"])])
    f = results.get("F")
    if f:
        for row in f["rows"]:
            if row["what"].startswith("hook thaw, byte"):
                m = median(s.get("release_ms") for s in row["samples"])
                rows.append(["hook thaw to release, byte-compiled", "-", "<= %.0f ms" % TARGETS["thaw_release_ms"],
                             "%s ms" % fmt(m, 1), mark(None if m is None else m <= TARGETS["thaw_release_ms"])])
    a = results.get("A")
    if not a:
        return rows
    for row in a["rows"]:
        m = row["median"]
        if row["writers"] and row["default"]:
            rows.append(["extra blocked time, %s" % row["load"], row["driver"], "<= %.0f ms" % TARGETS["extra_blocked_ms"],
                         "%s ms" % fmt(m["extra_blocked_ms"]), mark(targets_a(row).get("extra_blocked"))])
    for row in [r for r in a["rows"] if r["default"]]:
        m = row["median"]
        rows.append(["thaw wall time, %s" % row["load"], row["driver"], "<= %.0f ms" % TARGETS["thaw_ms"],
                     "%s ms" % fmt(m["thaw_ms"]), mark(targets_a(row).get("thaw"))])
    for row in a["rows"]:
        if not row["writers"] and row["default"]:
            m = row["median"]
            rows.append(["freeze wall time, idle", row["driver"], "<= %.0f ms" % TARGETS["freeze_idle_ms"],
                         "%s ms" % fmt(m["freeze_ms"]), mark(targets_a(row).get("freeze_idle"))])
    return rows


HEAD_T = ["target", "driver", "goal", "median", "result"]


def problems_lines(errors: Sequence[str]) -> List[str]:
    return ["", "  problems: " + "; ".join(errors[:5])] if errors else []


def render(results: Dict[str, Any], markdown: bool = False) -> str:
    table = render_markdown if markdown else render_table
    meta = results["meta"]
    out = []
    h = (lambda s: "**%s**" % s) if markdown else (lambda s: s)
    out.append(("Machine: %s. %s. " % (meta["machine"], meta["server"])) +
               ("quick run" if meta["quick"] else "default run") + " of bench/lock_window.py, %s, %.0f s%s."
               % (meta["date"], meta["runtime_s"],
                  ", quiesce at %s" % meta["quiesce_revision"] if meta.get("quiesce_revision") else ""))
    busy = max(meta["loadavg_start"], meta.get("loadavg_end", 0))
    out.append("Load average (1 min) at start %.1f, at end %.1f%s" % (
        meta["loadavg_start"], meta.get("loadavg_end", 0),
        ": other work was competing for the CPUs, expect slower and noisier figures." if busy >= 1.0 else "."))
    out.append("")
    for name in "ABCDEF":
        if results.get(name, {}).get("failed"):
            out.append(h("%s. failed: %s" % (name, results[name]["failed"])))
            out.append("")
    results = {k: v for k, v in results.items() if not (isinstance(v, dict) and v.get("failed"))}
    if "A" in results:
        a = results["A"]
        out.append(h("A. Lock window per freeze/thaw cycle (snapshot window %.0f ms). Median (p90) in ms." % a["hold_ms"]))
        if not markdown:
            out.append("   'extra blocked' = longest time with no commit at all, spanning the window, minus the window.")
        out.append("")
        out.append(table(HEAD_A, table_a(a), left=2))
        out.append("")
        out.append(h("A2. Where the time goes (medians, ms)."))
        out.append("")
        out.append(table(HEAD_A2, table_a_breakdown(a), left=2))
        problems = ["%s/%s: %s" % (r["load"], r["driver"], e) for r in a["rows"] for e in r["errors"]]
        problems += ["%s/%s: %d cycles with a commit inside the frozen window" % (r["load"], r["driver"],
                                                                                 r["commit_while_frozen"])
                     for r in a["rows"] if r["commit_while_frozen"]]
        if problems:
            out.append("")
            out.append("  problems: " + "; ".join(problems))
        out.append("")
    if "B" in results:
        b = results["B"]
        out.append(h("B. Lock method: operations per second during a %.0f ms frozen window (share of the "
                     "unfrozen rate). Median over cycles." % b["window_ms"]))
        if not markdown:
            out.append("   'DML in open txn' = INSERTs inside a transaction that commits only after thaw. Reads and")
            out.append("   DML can run faster while frozen than before: the blocked writers leave them the CPUs.")
        out.append("")
        out.append(table(HEAD_B, table_b(b)))
        errs = [e for r in b["rows"] for e in r["errors"]] + b["mix_errors"]
        if errs:
            out.append("")
            out.append("  problems: " + "; ".join(errs[:5]))
        out.append("")
    if "C" in results:
        c = results["C"]
        out.append(h("C. A long statement is running when freeze starts (acquire-timeout %g s; pre-check on: "
                     "long-query-time %g s, long-query-wait %g s, long-query-type auto; off: long-query-time "
                     "3600 s). Each cell: what freeze did, how long it took, and the longest time the InnoDB/MyISAM "
                     "writer went without a commit while freeze ran (ms)." % (c["acquire_timeout_s"], c["long_query_time_s"],
                                                                            c["long_query_wait_s"])))
        out.append("")
        out.append(table(HEAD_C, table_c(c), left=4))
        out.append("")
        summary = waits_summary(c)
        bullet = "- " if markdown else "  "
        for method in METHODS:
            out.append("%s%s waits for: %s" % (bullet, method, "; ".join(summary[method]["waits"]) or "nothing tried"))
            out.append("%s%s does not wait for: %s" % (bullet, method, "; ".join(summary[method]["no_wait"]) or "-"))
        if not markdown:
            out.append("  (a successful freeze stalls writers too: from the lock until freeze returns and thaw runs)")
        out.append("")
    if "D" in results:
        d = results["D"]
        if d.get("skipped"):
            out.append(h("D. Real filesystem freeze: skipped (%s)." % d["skipped"]))
        else:
            out.append(h("D. Real filesystem freeze: datadir on a loop-mounted ext4, fsfreeze held %.0f ms, thaw "
                         "hook %.0f ms after the fs thaw, 8 writers. Median (p90) in ms." % (d["fs_hold_ms"], d["poll_gap_ms"])))
            out.append("")
            out.append(table(HEAD_D, table_d(d), left=2))
            out.extend(problems_lines([e for r in d["rows"] for e in r["errors"]]))
        out.append("")
    if "E" in results:
        e = results["E"]
        if e.get("skipped"):
            out.append(h("E. Unrelated dirty data: skipped (%s)." % e["skipped"]))
        else:
            out.append(h("E. Unrelated dirty data on the datadir's filesystem (loop-mounted ext4), written without "
                         "sync before each freeze, %d writers, snapshot window %.0f ms, thaw by `hook thaw` as "
                         "installed; slow disk: %s on the loop device. Median (p90) in ms." % (e["writers"], e["hold_ms"], e["throttle"])))
            if not markdown:
                out.append("   'drain' = syncfs() before the lock (writers not blocked); 'under the lock' = from the lock")
                out.append("   to the holder's position being ready (coordinates, InnoDB log flush, syncing the server's files);")
                out.append("   'lock->freeze returns' adds writing the position and state files and reporting to freeze.")
            out.append("")
            out.append(table(HEAD_E, table_e(e)))
            out.extend(problems_lines([x for r in e["rows"] for x in r["errors"]]))
        out.append("")
    if "F" in results:
        f = results["F"]
        out.append(h("F. Thaw start-up with a lock held (idle server). Median (p90) in ms; 'holder released' is "
                     "from starting the command to the holder's release (its result's time stamp)."))
        out.append("")
        out.append(table(HEAD_F, table_f(f)))
        out.extend(problems_lines([s["error"] for r in f["rows"] for s in r["samples"] if s.get("error")]))
        out.append("")
    if "G" in results:
        g = results["G"]
        if g.get("skipped") or g.get("failed"):
            out.append(h("G. Stall per lock method: %s." % (g.get("skipped") or g.get("failed"))))
        else:
            out.append(h("G. Longest write stall per snapshot and lock method: datadir on a loop-mounted ext4, %d "
                         "InnoDB writers; with the filesystem frozen %.0f ms (thaw hook %.0f ms after the fs thaw) "
                         "or no freeze and the lock held %.0f ms. Median (p90) in ms; 'over no lock' is the "
                         "median minus the no-lock median." % (g["writers"], g["snapshot_ms"], g["poll_gap_ms"],
                                                               g["snapshot_ms"])))
            out.append("")
            out.append(table(HEAD_G, table_g(g)))
            out.extend(problems_lines([e for r in g["rows"] for e in r["errors"]]))
        out.append("")
    if any(k in results for k in "AEF"):
        out.append(h("Targets"))
        out.append("")
        out.append(table(HEAD_T, targets_overview(results), left=3))
        out.append("")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    parser.add_argument("--sections", default="ABCDEF", help="which sections to run (default ABCDEF; G on request)")
    parser.add_argument("--drivers", default=None,
                        help="comma-separated drivers for sections A and E (default: both if installed; --quick: one)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown to FILE")
    parser.add_argument("--render", metavar="JSON", help="run nothing: print the tables of an earlier --json output")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render, encoding="utf-8") as handle:
            results = json.load(handle)
        print(render(results))
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as handle:
                handle.write(render(results, markdown=True))
        return 0
    install_signal_handlers()
    byte_compile_product()
    plan = Plan(args.quick)
    sections = args.sections.upper()
    drivers = [d for d in (args.drivers.split(",") if args.drivers else DRIVERS) if d]
    for d in drivers:
        if d not in DRIVERS:
            parser.error("unknown driver %r" % d)
    drivers = [d for d in drivers if driver_available(d)]
    if args.quick and not args.drivers:
        drivers = drivers[:1]
    if not drivers and "A" in sections:
        log("no database driver is importable; run 'make deps'")
        return 2
    began = time.monotonic()
    results: Dict[str, Any] = {"meta": {"machine": machine_line(), "server": server_version_short(),
                                        "quick": args.quick, "drivers": drivers,
                                        "date": datetime.date.today().isoformat(),
                                        "quiesce_revision": product_revision(),
                                        "loadavg_start": os.getloadavg()[0]}}
    server = None

    def attempt(name: str, run: Callable[[], Dict[str, Any]]) -> None:
        # One section failing (a freeze error, a server that would not start) must not cost
        # the others; its error is reported in place of its table.
        try:
            results[name] = run()
        except Exception as exc:
            log("%s failed: %s: %s" % (name, type(exc).__name__, exc))
            results[name] = {"failed": "%s: %s" % (type(exc).__name__, exc)}

    try:
        if any(s in sections for s in "ABCF"):
            server = MariaDB(name="bench")
            server.start()
            if "F" in sections:
                attempt("F", lambda: section_f(server, plan))
            if "A" in sections:
                attempt("A", lambda: section_a(server, plan, drivers))
            if "B" in sections:
                attempt("B", lambda: section_b(server, plan))
            if "C" in sections:
                attempt("C", lambda: section_c(server, plan))
            server.cleanup()
            server = None
        if "D" in sections:
            attempt("D", lambda: section_d(plan))
        if "E" in sections:
            attempt("E", lambda: section_e(plan, drivers))
        if "G" in sections:
            attempt("G", lambda: section_g(plan, drivers))
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        return 130
    finally:
        if server is not None:
            server.cleanup()
    results["meta"]["runtime_s"] = time.monotonic() - began
    results["meta"]["loadavg_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True, default=str))
    else:
        print(render(results))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(render(results, markdown=True))
        log("Markdown tables written to %s" % args.markdown)
    return 1 if any(isinstance(v, dict) and v.get("failed") for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
