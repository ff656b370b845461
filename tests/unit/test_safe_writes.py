"""The one atomic file writer, attacked where the metrics file goes: a textfile directory
that another account may be able to write.

The attacker is simulated in-process: files planted at the temporary name, or a symlink
renamed over it while quiesce writes (the window a real attacker finds with inotify).
"""

import os
import stat
import subprocess
import sys

import pytest

from quiesce.base.errors import ConfigError
from quiesce.records import history, metrics, recorder
from .privileges import needs_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENTRIES = history.appended([], {"at": "2026-11-30T12:00:00.000Z", "since": "2026-11-30T12:00:00.000Z",
                                "outcome": "released", "ok": True, "held_ms": 250.0})


def _temp_name(directory, name, pid):
    # Where the writer puts its temporary file: predictable, which is what an attacker uses.
    return os.path.join(directory, ".%s.%d.tmp" % (name, pid))


@pytest.fixture
def secret(tmp_path):
    """A root file that must keep its mode and content (stands for /etc/shadow)."""
    path = tmp_path / "secret"
    path.write_text("password = hunter2\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def textfile_dir(tmp_path):
    path = tmp_path / "textfile"
    path.mkdir(mode=0o755)
    return str(path)


def _unchanged(secret):
    st = os.lstat(secret)
    with open(secret) as handle:
        return stat.S_IMODE(st.st_mode) == 0o600 and handle.read() == "password = hunter2\n"


def test_a_symlink_renamed_over_the_temporary_file_does_not_chmod_its_target(textfile_dir, secret, monkeypatch):
    path = os.path.join(textfile_dir, "quiesce.prom")
    real_fsync = os.fsync
    swapped = []

    def attacker_fsync(fd):
        # While the data is being synced: replace the temporary file by a link to the secret.
        real_fsync(fd)
        if not swapped:
            for name in os.listdir(textfile_dir):
                if name.startswith(".quiesce.prom.") and name.endswith(".tmp"):
                    link = os.path.join(textfile_dir, "evil")
                    os.symlink(secret, link)
                    os.rename(link, os.path.join(textfile_dir, name))
                    swapped.append(name)

    monkeypatch.setattr(os, "fsync", attacker_fsync)
    try:
        metrics.update(path, ENTRIES)
    except (ConfigError, OSError):
        pass  # refusing is fine; following the link is not
    monkeypatch.undo()
    assert swapped, "the writer made no temporary file in the directory"
    assert _unchanged(secret), "the link's target was changed"
    assert not os.path.islink(path), "the attacker's link was put in place of the metrics file"


def test_a_fifo_at_the_temporary_name_does_not_hang_the_writer(textfile_dir):
    # In a child: a hung open() cannot be interrupted in-process. Ten seconds is far more
    # than the few milliseconds this takes, and the old writer blocked forever.
    code = ("import os, sys; sys.path.insert(0, %r)\n"
            "from quiesce.records import history, metrics\n"
            "os.mkfifo(os.path.join(%r, '.quiesce.prom.%%d.tmp' %% os.getpid()))\n"
            "metrics.update(os.path.join(%r, 'quiesce.prom'), history.appended([], "
            "{'at': '2026-11-30T12:00:00.000Z', 'outcome': 'released', 'ok': True}))\n"
            % (REPO, textfile_dir, textfile_dir))
    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=10,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("the writer blocked on a FIFO planted at its temporary name")
    st = os.lstat(os.path.join(textfile_dir, "quiesce.prom"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644


def test_a_hard_link_at_the_temporary_name_does_not_truncate_its_target(textfile_dir, secret):
    path = os.path.join(textfile_dir, "quiesce.prom")
    os.link(secret, _temp_name(textfile_dir, "quiesce.prom", os.getpid()))
    metrics.update(path, ENTRIES)
    assert _unchanged(secret)
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and stat.S_IMODE(st.st_mode) == 0o644
    assert "quiesce_last_success 1" in open(path).read()


def test_a_symlink_at_the_temporary_name_is_not_followed(textfile_dir, secret):
    path = os.path.join(textfile_dir, "quiesce.prom")
    os.symlink(secret, _temp_name(textfile_dir, "quiesce.prom", os.getpid()))
    metrics.update(path, ENTRIES)
    assert _unchanged(secret)
    assert stat.S_ISREG(os.lstat(path).st_mode)


@pytest.mark.parametrize("problem", ["others can write", "group can write", "owned by another user"])
def test_a_textfile_directory_others_can_write_is_refused_unless_allowed(textfile_dir, problem):
    if problem == "others can write":
        os.chmod(textfile_dir, 0o1777)
    elif problem == "group can write":
        os.chmod(textfile_dir, 0o775)
    else:
        if os.geteuid() != 0:
            pytest.skip("chown needs root")
        os.chown(textfile_dir, 65534, 65534)
    path = os.path.join(textfile_dir, "quiesce.prom")
    with pytest.raises(ConfigError) as info:
        metrics.update(path, ENTRIES)
    message = str(info.value)
    assert textfile_dir in message and "metrics-dir-shared = yes" in message and "\n" not in message
    assert os.listdir(textfile_dir) == []
    # The administrator says the directory is meant to be shared.
    assert metrics.update(path, ENTRIES, dir_shared=True) == path
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o644


def test_refused_metrics_are_logged_and_the_history_is_still_written(tmp_path, textfile_dir):
    from quiesce.base import config
    conf = tmp_path / "quiesce.conf"
    conf.write_text("position-file = %s\nmetrics-file = %s/quiesce.prom\n" % (tmp_path / "position.json", textfile_dir))
    conf.chmod(0o600)
    settings = config.parse(["--config", str(conf), "status"])
    os.chmod(textfile_dir, 0o777)

    class Log:
        def __init__(self):
            self.warnings = []

        def warning(self, *args):
            self.warnings.append(args[0] % args[1:])

    log = Log()
    recorder.record(settings, dict(ENTRIES[0], at="2026-11-30T12:00:01.000Z"), log)
    assert len(history.read(str(tmp_path / "history.jsonl"))) == 1
    assert len(log.warnings) == 1 and "metrics-dir-shared" in log.warnings[0], log.warnings
    assert os.listdir(textfile_dir) == []


# ---------------------------------------------------------------- every writer, the same guarantees

def _writers(tmp_path):
    """Each place that writes a file whole, with what it writes: (name, path, write, expected mode)."""
    from quiesce.agents import register
    from quiesce.records import state
    layout = register.Layout(root=str(tmp_path / "root"), libdir="/usr/lib/quiesce")
    os.makedirs(str(tmp_path / "root" / "etc"))

    def record_save():
        record = register.Record(layout)
        record.add("link", "/etc/x")
        record.save()

    return [
        ("state.write_json_atomic", str(tmp_path / "position.json"),
         lambda: state.write_json_atomic(str(tmp_path / "position.json"), {"a": 1}, mode=0o644), 0o644),
        ("register._write_file", str(tmp_path / "root" / "etc" / "pre.sh"),
         lambda: register._write_file(str(tmp_path / "root" / "etc" / "pre.sh"), b"#!/bin/sh\n", 0o700, False),
         0o700),
        ("register.Record.save", layout.root + "/var/lib/quiesce/hooks", record_save, 0o644),
        ("metrics.update", str(tmp_path / "quiesce.prom"),
         lambda: metrics.update(str(tmp_path / "quiesce.prom"), ENTRIES), 0o644),
    ]


@needs_root
@pytest.mark.parametrize("which", ["state.write_json_atomic", "register._write_file", "register.Record.save",
                                   "metrics.update"])
def test_every_writer_sets_the_exact_mode_and_syncs_the_file_and_its_directory(tmp_path, monkeypatch, which):
    name, path, write, mode = next(w for w in _writers(tmp_path) if w[0] == which)
    synced = []
    real_fsync = os.fsync

    def watching_fsync(fd):
        st = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", (st.st_dev, st.st_ino)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watching_fsync)
    old_umask = os.umask(0o077)
    try:
        write()
    finally:
        os.umask(old_umask)
    st, parent = os.lstat(path), os.stat(os.path.dirname(path))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode, "%s: mode %o" % (name, st.st_mode)
    assert ("file", (st.st_dev, st.st_ino)) in synced, name
    # The directory after the file: the rename itself is on disk.
    assert synced[-1] == ("dir", (parent.st_dev, parent.st_ino)), "%s did not sync %s" % (name, os.path.dirname(path))
    assert [n for n in os.listdir(os.path.dirname(path)) if n.endswith((".tmp", ".new", "-new"))] == []


def test_history_writers_take_turns_on_the_history_lock(tmp_path, monkeypatch):
    from quiesce.base import config
    conf = tmp_path / "quiesce.conf"
    conf.write_text("position-file = %s\nmetrics-file = none\n" % (tmp_path / "state" / "position.json"))
    conf.chmod(0o600)
    settings = config.parse(["--config", str(conf), "status"])
    path = history.path_for(settings.targets[0].position_file)
    warnings = []
    log = type("Log", (), {"warning": lambda self, *args: warnings.append(args[0] % args[1:])})()
    monkeypatch.setattr(history, "WRITER_WAIT", 0.05)
    os.makedirs(os.path.dirname(path))
    with history.lock_for(path):
        recorder.record(settings, ENTRIES[0], log)
    assert history.read(path) == [] and "the history" in warnings[0], warnings
    recorder.record(settings, ENTRIES[0], log)
    assert len(history.read(path)) == 1
    # Its own lock file, not runtime-dir's "lock" reused in the state directory.
    assert sorted(os.listdir(os.path.dirname(path))) == ["history.jsonl", "history.lock"]
