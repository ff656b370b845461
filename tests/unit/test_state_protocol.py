import os
import socket
import threading

import pytest

from quiesce.base import errors
from quiesce.base.errors import Busy, ConfigError, Exit
from quiesce.holder import protocol
from quiesce.records import state


def test_runtime_dir_created_private(tmp_path):
    path = str(tmp_path / "run" / "quiesce")
    assert state.ensure_runtime_dir(path)
    assert os.stat(path).st_mode & 0o777 == 0o700


def test_runtime_dir_absent_without_create(tmp_path):
    assert state.ensure_runtime_dir(str(tmp_path / "absent"), create=False) is False


def test_runtime_dir_symlink_and_shared_dirs_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symlink"):
        state.ensure_runtime_dir(str(link))
    os.chmod(real, 0o777)
    with pytest.raises(ConfigError, match="writable by group or others"):
        state.ensure_runtime_dir(str(real))


def test_atomic_json_write_and_read(tmp_path):
    path = str(tmp_path / "p.json")
    state.write_json_atomic(path, {"a": 1})
    state.write_json_atomic(path, {"a": 2})
    assert state.read_json(path) == {"a": 2}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["p.json"]
    assert state.read_json(str(tmp_path / "missing.json")) is None


def test_read_json_refuses_symlink(tmp_path):
    target = tmp_path / "t.json"
    target.write_text("{}")
    (tmp_path / "s.json").symlink_to(target)
    with pytest.raises(errors.StateError):
        state.read_json(str(tmp_path / "s.json"))


def test_exclusive_is_bounded(tmp_path):
    files = state.RuntimeFiles(str(tmp_path))
    with files.exclusive(1, "first"):
        with pytest.raises(Busy, match="another quiesce command"):
            with files.exclusive(0.05, "second"):
                pass
    with files.exclusive(0.05, "third"):
        pass


def test_holder_alive_tells_pid_reuse_apart():
    me = {"holder_pid": os.getpid(), "holder_start_ticks": state.process_start_ticks(os.getpid())}
    assert state.holder_alive(me)
    assert not state.holder_alive(dict(me, holder_start_ticks=me["holder_start_ticks"] + 1))
    assert not state.holder_alive({"holder_pid": None})


def test_read_line_fd_timeout_eof_and_message():
    r, w = os.pipe()
    try:
        with pytest.raises(TimeoutError):
            protocol.read_line_fd(r, 0.05)
        protocol.write_all_fd(w, protocol.encode({"status": "locked"}))
        assert protocol.decode(protocol.read_line_fd(r, 1)) == {"status": "locked"}
        os.close(w)
        w = None
        assert protocol.read_line_fd(r, 1) is None
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_request_over_unix_socket_and_peer_uid(tmp_path):
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    seen = {}

    def answer():
        conn, _ = server.accept()
        with conn:
            seen["uid"] = protocol.peer_uid(conn)
            seen["req"] = protocol.decode(protocol.recv_line(conn, 2))
            conn.sendall(protocol.encode({"outcome": "released"}))

    thread = threading.Thread(target=answer)
    thread.start()
    assert protocol.request(path, {"cmd": "thaw"}, 2) == {"outcome": "released"}
    thread.join(2)
    server.close()
    assert seen == {"uid": os.getuid(), "req": {"cmd": "thaw"}}


def test_every_exit_code_has_a_meaning_and_errors_round_trip():
    assert set(errors.EXIT_MEANINGS) == set(Exit)
    assert len({int(e) for e in Exit}) == len(Exit)
    for cls in (errors.ConfigError, errors.ConnectError, errors.PrivilegeError, errors.LockTimeout,
                errors.LockLost, errors.Busy, errors.StateError):
        rebuilt = errors.error_for_code(int(cls.exit_code), "m")
        assert type(rebuilt) is cls and str(rebuilt) == "m"
    assert errors.exit_code_for(RuntimeError()) == Exit.INTERNAL
