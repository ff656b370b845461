"""The one place that knows the database drivers.

mysql-connector-python is preferred; PyMySQL is a drop-in alternative because several
distributions package only PyMySQL. Everything above this module sees Connection and
DbError, never a driver type.
"""

import os
import socket
from typing import Any, Dict, List, Optional

from .config import Target
from .errors import ConfigError

# Server and client error numbers we act on.
ER_DBACCESS_DENIED = 1044
ER_ACCESS_DENIED = 1045
ER_ACCESS_DENIED_NO_PASSWORD = 1698
ER_TABLEACCESS_DENIED = 1142
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_LOCK_WAIT_TIMEOUT = 1205
ER_QUERY_INTERRUPTED = 1317
ER_CONNECTION_KILLED = 1927
CR_CONNECTION_ERROR = 2002
CR_CONN_HOST_ERROR = 2003
CR_UNKNOWN_HOST = 2005
CR_SERVER_GONE = 2006
CR_SERVER_LOST = 2013
CR_SERVER_LOST_EXTENDED = 2055

AUTH_ERRORS = {ER_ACCESS_DENIED, ER_ACCESS_DENIED_NO_PASSWORD, ER_DBACCESS_DENIED}
UNREACHABLE_ERRORS = {CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, CR_UNKNOWN_HOST}
PRIVILEGE_ERRORS = {ER_SPECIFIC_ACCESS_DENIED, ER_TABLEACCESS_DENIED, ER_DBACCESS_DENIED}
INTERRUPTED_ERRORS = {ER_LOCK_WAIT_TIMEOUT, ER_QUERY_INTERRUPTED, ER_CONNECTION_KILLED}
LOST_ERRORS = {CR_SERVER_GONE, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED, ER_CONNECTION_KILLED}


class DbError(Exception):
    def __init__(self, errno: Optional[int], message: str):
        super().__init__("%s%s" % ("(%d) " % errno if errno else "", message))
        self.errno = errno
        self.message = message


# Older Connector/Python releases (Ubuntu ships 8.0.15) break on current Pythons;
# "auto" passes them over when PyMySQL is there.
MIN_AUTO_CONNECTOR = (8, 0, 30)


def _connector_version(module) -> tuple:
    try:
        return tuple(int(x) for x in module.version.VERSION[:3])
    except (AttributeError, TypeError, ValueError):
        return (0, 0, 0)


def _driver_module(name: str):
    if name in ("auto", "mysql-connector"):
        try:
            import mysql.connector
        except ImportError:
            if name == "mysql-connector":
                raise ConfigError("driver mysql-connector is not installed; fix: install "
                                  "mysql-connector-python or set driver = pymysql")
        else:
            if name == "mysql-connector" or _connector_version(mysql.connector) >= MIN_AUTO_CONNECTOR:
                return "mysql-connector", mysql.connector
            try:
                import pymysql
                return "pymysql", pymysql
            except ImportError:
                return "mysql-connector", mysql.connector
    try:
        import pymysql
        return "pymysql", pymysql
    except ImportError:
        raise ConfigError("no MySQL driver found; fix: install mysql-connector-python or PyMySQL "
                          "(Debian/Ubuntu: python3-pymysql)")


def _as_db_error(exc: BaseException) -> DbError:
    errno = getattr(exc, "errno", None)
    message = getattr(exc, "msg", None)
    args = getattr(exc, "args", ())
    if message is None and len(args) >= 2 and isinstance(args[0], int):
        errno, message = args[0], args[1]
    if isinstance(exc, (socket.timeout, TimeoutError)):
        errno, message = CR_SERVER_LOST, "timed out waiting for the server"
    if message is None:
        message = str(exc) or exc.__class__.__name__
    if not isinstance(errno, int) or errno < 1000:
        # OS errno leaking through a driver exception is not a server error number.
        errno = CR_SERVER_LOST if isinstance(exc, OSError) else None
    return DbError(errno, str(message).splitlines()[0] if message else "")


class Connection:
    """A connection with autocommit on and no reconnect: a reconnected session holds no lock."""

    def __init__(self, driver: str, raw: Any):
        self.driver = driver
        self._raw = raw
        self.thread_id = int(self.query("SELECT CONNECTION_ID() AS id")[0]["id"])

    def _socket(self) -> socket.socket:
        if self.driver == "pymysql":
            return self._raw._sock
        return self._raw._socket.sock

    def fileno(self) -> int:
        return self._socket().fileno()

    def set_timeout(self, seconds: Optional[float]) -> None:
        """Bound every following read and write on this connection (None: wait forever)."""
        self._socket().settimeout(seconds)

    def query(self, sql: str) -> List[Dict[str, Any]]:
        try:
            if self.driver == "pymysql":
                with self._raw.cursor() as cursor:
                    cursor.execute(sql)
                    rows = cursor.fetchall() if cursor.description else ()
                    names = [d[0] for d in cursor.description or ()]
            else:
                cursor = self._raw.cursor()
                try:
                    cursor.execute(sql)
                    rows = cursor.fetchall() if cursor.with_rows else ()
                    names = list(cursor.column_names or ())
                finally:
                    cursor.close()
        except Exception as exc:  # every driver error funnels into DbError here
            raise _as_db_error(exc) from None
        return [dict(zip(names, (_text(v) for v in row))) for row in rows]

    def execute(self, sql: str) -> None:
        self.query(sql)

    def close(self) -> None:
        try:
            self._raw.close()
        except Exception:
            # Closing a dead connection fails in driver-specific ways; the socket is gone either way.
            pass


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


def connect(target: Target, driver: str, timeout: float) -> Connection:
    name, module = _driver_module(driver)
    kwargs: Dict[str, Any] = {"user": target.user, "password": target.password or "",
                              "autocommit": True, "charset": "utf8mb4"}
    if target.host:
        kwargs.update(host=target.host, port=target.port)
    else:
        kwargs.update(unix_socket=target.socket)
    try:
        if name == "pymysql":
            raw = module.connect(connect_timeout=timeout, read_timeout=None, write_timeout=None,
                                 local_infile=False, **kwargs)
        else:
            raw = module.connect(connection_timeout=timeout, use_pure=True, allow_local_infile=False,
                                 get_warnings=False, raise_on_warnings=False, **kwargs)
        conn = Connection(name, raw)
    except Exception as exc:
        raise _as_db_error(exc) from None
    conn.set_timeout(timeout)
    return conn


def server_process_running() -> bool:
    """Is any mysqld/mariadbd process on this host? Tells "not running" from "cannot reach"."""
    from . import paths
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # cannot tell: assume running, so that we never skip a real server
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry) as handle:
                if handle.read().strip() in paths.SERVER_PROCESS_NAMES:
                    return True
        except OSError:
            continue
    return False
