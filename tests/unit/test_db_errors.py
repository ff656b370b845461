"""How driver exceptions become DbError, and which of them mean the session is gone.

The exception objects are the drivers' own, built as the drivers build them.
"""

import socket

import pytest

from quiesce.server import db
from .privileges import needs_root


def test_server_error_keeps_its_number():
    import pymysql
    error = db._as_db_error(pymysql.err.OperationalError(1045, "Access denied for user 'x'"))
    assert (error.errno, error.message) == (1045, "Access denied for user 'x'")
    assert not db.is_lost(error)


@pytest.mark.parametrize("errno", (2006, 2013, 2055, 1927, 1053, 4031))
def test_lost_connection_numbers(errno):
    import pymysql
    assert db.is_lost(db._as_db_error(pymysql.err.OperationalError(errno, "gone")))


def test_pymysql_closed_connection_is_lost():
    import pymysql
    # What PyMySQL raises for a statement on a connection it already closed.
    assert db.is_lost(db._as_db_error(pymysql.err.InterfaceError(0, "")))


def test_connector_closed_connection_is_lost(connector_errors):
    errors = connector_errors
    assert db.is_lost(db._as_db_error(errors.OperationalError("MySQL Connection not available")))


@pytest.mark.parametrize("name", ("ReadTimeoutError", "WriteTimeoutError", "ConnectionTimeoutError"))
def test_connector_timeouts_are_lost(name, connector_errors):
    errors = connector_errors
    error = db._as_db_error(getattr(errors, name)(errno=3024))
    assert db.is_lost(error) and "timed out" in error.message


def test_socket_timeout_is_lost():
    assert db.is_lost(db._as_db_error(socket.timeout("timed out")))


@pytest.mark.parametrize("errno", (1044, 1205, 1227, 1317, None))
def test_other_errors_are_not_lost(errno):
    assert not db.is_lost(db.DbError(errno, "something"))


def test_messages_are_one_line():
    import pymysql
    error = db._as_db_error(pymysql.err.OperationalError(2013, "Lost connection\nsecond line"))
    assert error.message == "Lost connection"


@needs_root
def test_password_pymysql_cannot_send_is_named_without_any_of_it(tmp_path):
    import pymysql  # noqa: F401 (the test is about this driver)
    from quiesce.base.config import Target
    from quiesce.base.errors import ConfigError
    directory = tmp_path / "run"
    directory.mkdir(mode=0o755)
    path = str(directory / "mysqld.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        target = Target(name="default", socket=path, host=None, port=3306, user="root",
                        password="pa\u20acss", position_file="/nonexistent")
        with pytest.raises(ConfigError) as caught:
            db.connect(target, "pymysql", 2.0)
    message = str(caught.value)
    assert "latin-1" in message and "fix:" in message and "\n" not in message
    assert not any(part in message for part in ("\u20ac", "\\u20ac", "position", "pa\u20ac", "ss'"))
