"""Every snapshot agent's caller, emulated faithfully, against a real MariaDB.

The files under test are those `quiesce register AGENT` creates (in a scratch root) and
the shipped examples; each agent runs them as it really does (agentcallers.py). The
database must be locked while the emulated snapshot is taken and writable after.

Driver: PyMySQL only. What is under test is how each agent runs the hook files (exec
or sh, pipes, timeouts); the freeze and thaw behind them are those test_freeze_thaw.py
runs with both drivers.
"""

import os
import time

import pytest

from quiesce.agents import catalog

from . import agentcallers as callers
from .checks import assert_clean, assert_frozen, assert_writable
from .prodhelpers import Background, wait_running_for

SMALL_OUTPUT = 4096      # bytes: Azure never reads its pipes, which hold 64 KiB


@pytest.fixture
def install(quiesce_env):
    return callers.Installation(quiesce_env)


def _snapshot(mariadb, env):
    """What every agent does between pre and post: the lock must hold now."""
    assert_frozen(mariadb)
    assert os.path.exists(env.position_file)


def _backup(mariadb, env, pre, post):
    """pre, the snapshot, post: each hook exits 0 and says little; nothing is left behind."""
    for phase, call in (("pre", pre), ("post", post)):
        outcome = call()
        assert outcome.rc == 0, (phase, outcome)
        assert len(outcome.output) < SMALL_OUTPUT, (phase, outcome)
        if phase == "pre":
            assert env.holder_pids()
            _snapshot(mariadb, env)
    assert_clean(env, mariadb)


def _long_statement(mariadb, env, seconds):
    """A statement the freeze must wait for (long-query-type=all), running for `seconds`."""
    env.write_config(long_query_time=0.3, long_query_type="all", long_query_wait=20)
    statement = Background(mariadb, ["SELECT SLEEP(%g)" % seconds])
    wait_running_for(mariadb, statement.conn_id, 0.4)
    return statement


# ------------------------------------------------------------------ Google Compute Engine

def test_gce_guest_flush(mariadb, quiesce_env, install):
    install.register(catalog.GCE)
    # gce() reads stderr to EOF: it must come when freeze returns, though the holder lives on.
    _backup(mariadb, quiesce_env,
            lambda: callers.gce(install.path("/etc/google/snapshots/pre.sh"), "1/2,3/4"),
            lambda: callers.gce(install.path("/etc/google/snapshots/post.sh"), "/dev/nvme0n1,/dev/nvme0n2"))


@pytest.mark.parametrize("caller", ["gce", "aws"])
def test_caller_timeout_kills_freeze_and_nothing_is_locked_after(mariadb, quiesce_env, install, caller):
    # GCE kills only the direct child at timeout_in_seconds; the SSM agent kills the whole
    # `sh -c` process group at ExecutionTimeout. Either way the holder was waiting for a long
    # statement: once that ends, the holder must see that nobody waits for it, and not lock.
    env = quiesce_env
    install.register(catalog.GCE)
    statement = _long_statement(mariadb, env, 4)
    if caller == "gce":
        pre = callers.gce(install.path("/etc/google/snapshots/pre.sh"), "1/2", timeout=1.5)
    else:
        pre = callers.aws(install, "pre-script", timeout=1.5)
    assert pre.rc is None, pre                 # killed by the caller
    statement.done.wait(10)
    assert not env.wait_no_holder(15), "the holder outlived a freeze its caller killed"
    assert not os.path.exists(env.position_file), "the holder locked after its freeze was killed"
    assert env.state() is None
    assert_writable(mariadb)
    # GCE then takes no snapshot and runs no post.sh; DLM runs no post-script.
    assert_clean(env, mariadb)


# ------------------------------------------------------------------ Azure

def test_azure_backup(mariadb, quiesce_env, install):
    install.register(catalog.AZURE)
    plugin = callers.AzurePlugin(install)
    try:
        _backup(mariadb, quiesce_env, lambda: plugin.run("pre"), lambda: plugin.run("post"))
    finally:
        plugin.finish()


def test_azure_post_after_failed_pre_succeeds_and_nothing_is_locked(mariadb, quiesce_env, install):
    env = quiesce_env
    install.register(catalog.AZURE)
    env.write_config(user="nobody_here")
    plugin = callers.AzurePlugin(install)
    try:
        pre = plugin.run("pre")
        assert pre.rc == 3, pre
        post = plugin.run("post")         # Azure runs post once pre ran
        assert post.rc == 0, post
    finally:
        plugin.finish()
    assert_clean(env, mariadb)


def test_azure_post_beside_a_timed_out_pre_stops_it_locking(mariadb, quiesce_env, install):
    # The pre is still waiting for a long statement when Azure's timeout passes: Azure takes
    # the snapshot without it and runs post beside it. The pre must not lock afterwards.
    env = quiesce_env
    install.register(catalog.AZURE)
    statement = _long_statement(mariadb, env, 4)
    plugin = callers.AzurePlugin(install)
    try:
        pre = plugin.run("pre", timeout=1)
        assert pre.rc is None, pre        # still running; Azure does not kill it
        post = plugin.run("post")
        assert post.rc == 0, post
        statement.done.wait(10)
    finally:
        codes = plugin.finish()
    assert codes[0] == 5, codes           # the freeze gave up instead of locking
    assert not os.path.exists(env.position_file), "the freeze locked after the snapshot"
    assert_clean(env, mariadb)


# ------------------------------------------------------------------ AWS Data Lifecycle Manager

def test_aws_dlm_pre_post_and_dry_run(mariadb, quiesce_env, install):
    env = quiesce_env
    dry = callers.aws(install, "dry-run", timeout=30)
    assert dry.rc == 0, dry
    _backup(mariadb, env, lambda: callers.aws(install, "pre-script"), lambda: callers.aws(install, "post-script"))


def test_aws_dlm_failed_pre_leaves_nothing_locked_without_post(mariadb, quiesce_env, install):
    env = quiesce_env
    env.write_config(user="nobody_here")
    pre = callers.aws(install, "pre-script")
    assert pre.rc == 3, pre
    # DLM now takes a crash-consistent snapshot and never runs post-script.
    assert_clean(env, mariadb)


# ------------------------------------------------------------------ Nutanix

def test_nutanix_guest_tools(mariadb, quiesce_env, install):
    install.register(catalog.NUTANIX)
    _backup(mariadb, quiesce_env, lambda: callers.exec_direct(install.path("/usr/local/sbin/pre_freeze")),
            lambda: callers.exec_direct(install.path("/usr/local/sbin/post_thaw")))


# ------------------------------------------------------------------ two agents in one backup

@pytest.mark.parametrize("first", ["veeam", "vmware"])
def test_veeam_job_script_and_vmware_tools_in_one_backup(mariadb, quiesce_env, install, first):
    # Veeam runs its job's pre-freeze script, then asks VMware for a quiesced snapshot,
    # which runs backupScripts.d; thaws come in reverse. Both orders of freeze are tried:
    # the lock lasts until the last thaw, whichever that is.
    env = quiesce_env
    install.register(catalog.VMWARE)
    link = install.path("/etc/vmware-tools/backupScripts.d/zz-quiesce")
    pre_script = install.example("veeam-pre-freeze.sh", env.root)
    post_script = install.example("veeam-post-thaw.sh", env.root)
    freezes = {"veeam": lambda: callers.veeam(pre_script, timeout=60),
               "vmware": lambda: callers.vmware(link, "freeze")}
    thaws = {"veeam": lambda: callers.veeam(post_script, timeout=60),
             "vmware": lambda: callers.vmware(link, "thaw")}
    second = "vmware" if first == "veeam" else "veeam"
    assert freezes[first]().rc == 0
    holders = env.holder_pids()
    joined = freezes[second]()
    assert joined.rc == 0, joined
    assert env.holder_pids() == holders, "the second freeze started a second lock"
    _snapshot(mariadb, env)
    assert thaws[second]().rc == 0
    assert_frozen(mariadb)                 # still held for the first caller
    last = thaws[first]()
    assert last.rc == 0, last              # which releases it
    assert_writable(mariadb)
    assert_clean(env, mariadb)


def test_a_freeze_does_not_join_a_lost_lock_and_both_thaws_say_so(mariadb, quiesce_env, install):
    env = quiesce_env
    install.register(catalog.VMWARE)
    link = install.path("/etc/vmware-tools/backupScripts.d/zz-quiesce")
    before = set(mariadb.connection_ids())
    assert callers.vmware(link, "freeze").rc == 0
    for conn_id in set(mariadb.connection_ids()) - before:
        mariadb.sql("KILL %d" % conn_id)
    # At once: the join looks at the session itself, so no pause is needed for the holder to notice.
    joined = callers.exec_direct(install.command, ["freeze"], caller="veeam")
    assert joined.rc == 6 and b"lost" in joined.output, joined
    assert callers.vmware(link, "thaw").rc == 6
    assert_clean(env, mariadb)


def test_a_later_thaw_reports_the_loss_of_a_joined_lock(mariadb, quiesce_env, install):
    # GCE's post.sh and a Nutanix post_thaw both come after one lock that was lost meanwhile:
    # each must say so, whichever comes second.
    env = quiesce_env
    install.register(catalog.GCE)
    install.register(catalog.NUTANIX)
    before = set(mariadb.connection_ids())
    assert callers.gce(install.path("/etc/google/snapshots/pre.sh"), "1/2").rc == 0
    assert callers.exec_direct(install.path("/usr/local/sbin/pre_freeze"), caller="nutanix-guest-tools").rc == 0
    for conn_id in set(mariadb.connection_ids()) - before:
        mariadb.sql("KILL %d" % conn_id)
    assert callers.exec_direct(install.path("/usr/local/sbin/post_thaw"), caller="nutanix-guest-tools").rc == 6
    later = callers.gce(install.path("/etc/google/snapshots/post.sh"), "1/2")
    assert later.rc == 6, later
    assert callers.exec_direct(install.command, ["thaw"]).rc == 0      # nothing more to report
    assert_clean(env, mariadb)
