"""The one place that knows the database drivers.

mysql-connector-python is preferred; PyMySQL is a drop-in alternative because several
distributions package only PyMySQL. Everything above this module sees Connection and
DbError, never a driver type.
"""

import functools
import math
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from quiesce.base.config import VERIFYING_SSL_MODES, Target
from quiesce.base.errors import ConfigError, ConnectError, QuiesceError
from quiesce.server import serverproc, serverview, trust

# Server and client error numbers we act on.
ER_DBACCESS_DENIED = 1044
ER_ACCESS_DENIED = 1045
ER_ACCESS_DENIED_NO_PASSWORD = 1698
ER_TABLEACCESS_DENIED = 1142
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_LOCK_WAIT_TIMEOUT = 1205
ER_QUERY_INTERRUPTED = 1317
ER_CONNECTION_KILLED = 1927
ER_SERVER_SHUTDOWN = 1053
ER_CLIENT_INTERACTION_TIMEOUT = 4031
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
LOST_ERRORS = {CR_SERVER_GONE, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED, ER_CONNECTION_KILLED,
               ER_SERVER_SHUTDOWN, ER_CLIENT_INTERACTION_TIMEOUT}

# The longest wait handed to a driver: PyMySQL refuses more, sockets overflow far beyond.
MAX_SOCKET_TIMEOUT = 365 * 24 * 3600.0

CLIENT_SSL = 0x800   # capability flag: the server can switch the connection to TLS

# Authentication plugins that put the password itself on the wire.
CLEARTEXT_PLUGINS = ("mysql_clear_password", "dialog")


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


# Connector/Python's own timeout exceptions carry error numbers of server-side timeouts.
_DRIVER_TIMEOUTS = ("ConnectionTimeoutError", "ReadTimeoutError", "WriteTimeoutError")
# Driver complaints about a connection that is already closed (no server error number).
_CLOSED_MARKERS = ("connection not available", "not connected", "already closed")


def _as_db_error(exc: BaseException) -> DbError:
    errno = getattr(exc, "errno", None)
    message = getattr(exc, "msg", None)
    args = getattr(exc, "args", ())
    if message is None and len(args) >= 2 and isinstance(args[0], int):
        errno, message = args[0], args[1]
    if isinstance(exc, (socket.timeout, TimeoutError)) or type(exc).__name__ in _DRIVER_TIMEOUTS:
        return DbError(CR_SERVER_LOST, "timed out waiting for the server")
    if message is None:
        message = str(exc) or exc.__class__.__name__
    if not isinstance(errno, int) or errno < 1000:
        # OS errno leaking through a driver exception is not a server error number.
        errno = CR_SERVER_LOST if isinstance(exc, OSError) else None
    if errno is None and (not message or any(m in str(message).lower() for m in _CLOSED_MARKERS)):
        # PyMySQL says InterfaceError(0, '') once its connection is closed.
        return DbError(CR_SERVER_GONE, "the connection to the server is closed")
    return DbError(errno, str(message).strip().splitlines()[0] if str(message).strip() else "")


def is_lost(error: DbError) -> bool:
    """Did this error end the session (and so any lock it held)?"""
    return error.errno in LOST_ERRORS


class Connection:
    """A connection with autocommit on and no reconnect: a reconnected session holds no lock."""

    def __init__(self, driver: str, raw: Any, timeout: Optional[float]):
        self.driver = driver
        self._raw = raw
        self._abandoned = False
        self._cursor: Any = None
        self.set_timeout(timeout)
        self.thread_id = int(self.query("SELECT CONNECTION_ID() AS id")[0]["id"])

    def _socket(self) -> Optional[socket.socket]:
        return _raw_socket(self.driver, self._raw)

    def peer_pid(self) -> Optional[int]:
        """The server process at the other end, where it runs on this host."""
        try:
            return serverview.peer_pid(self._socket())
        except OSError:
            return None

    def fileno(self) -> int:
        sock = self._socket()
        return sock.fileno() if sock is not None else -1

    def set_timeout(self, seconds: Optional[float]) -> None:
        """Bound every following read and write on this connection (None: wait forever).

        Both drivers set the socket's timeout from their own settings before each read or
        write, so the bound has to be given to the driver, not to the socket.
        """
        if seconds is not None:
            seconds = min(seconds, MAX_SOCKET_TIMEOUT)
        if self.driver == "pymysql":
            self._raw._read_timeout = seconds
            self._raw._write_timeout = seconds
            return
        if hasattr(type(self._raw), "read_timeout"):
            # Connector/Python 9.x and later: whole seconds only.
            whole = None if seconds is None else max(1, int(math.ceil(seconds)))
            self._raw.read_timeout = whole
            self._raw.write_timeout = whole
        sock = self._socket()
        if sock is not None:
            # Older releases use the socket's own timeout as it stands.
            sock.settimeout(seconds)

    def query(self, sql: str) -> List[Dict[str, Any]]:
        if self._abandoned:
            raise DbError(CR_SERVER_GONE, "the connection to the server was abandoned")
        try:
            if self.driver == "pymysql":
                with self._raw.cursor() as cursor:
                    cursor.execute(sql)
                    rows = cursor.fetchall() if cursor.description else ()
                    names = [d[0] for d in cursor.description or ()]
            else:
                # Connector/Python pings the server for every new cursor: one more round trip
                # per statement, and one more wait. The cursor is kept until something fails.
                if self._cursor is None:
                    self._cursor = self._raw.cursor()
                self._cursor.execute(sql)
                rows = self._cursor.fetchall() if self._cursor.with_rows else ()
                names = list(self._cursor.column_names or ())
        except Exception as exc:  # every driver error funnels into DbError here
            self._cursor = None
            raise _as_db_error(exc) from None
        return [dict(zip(names, (_text(v) for v in row))) for row in rows]

    def execute(self, sql: str) -> None:
        self.query(sql)

    def abandon(self) -> None:
        """Drop the connection at once: no COM_QUIT, nothing that waits for the server.

        For a server frozen solid. The server ends the session (and its locks) whenever it
        next runs and sees the socket closed.
        """
        self._abandoned = True
        sock = self._socket()
        _shut_down(sock)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        if self._abandoned:
            return
        try:
            self._raw.close()
        except Exception:
            # Closing a dead connection fails in driver-specific ways; the socket is gone either way.
            pass


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


def _raw_socket(driver: str, raw: Any) -> Optional[socket.socket]:
    if driver == "pymysql":
        return getattr(raw, "_sock", None)
    return getattr(getattr(raw, "_socket", None), "sock", None)


def _shut_down(sock: Optional[socket.socket]) -> None:
    """End both directions now; unlike close(), this also wakes a thread blocked reading it."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (yet, or any more)


class _Deadline:
    """Shut a socket down once `seconds` have passed, until finish() is called.

    The drivers bound each read, not the exchange: a server that answers one byte a second
    would hold a connect attempt for ever. Shutting the socket down makes the blocked
    driver call fail at once. The socket may not exist yet when time runs out, so it is
    looked up (and shut down) again until the attempt has given up.
    """

    def __init__(self, seconds: float, find_socket: Callable[[], Optional[socket.socket]]):
        self.expired = False
        self._find_socket = find_socket
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(seconds,), name="connect-deadline", daemon=True)
        self._thread.start()

    def _run(self, seconds: float) -> None:
        if self._finished.wait(seconds):
            return
        while True:
            with self._lock:
                if self._finished.is_set():
                    return
                self.expired = True
                _shut_down(self._find_socket())
            if self._finished.wait(0.05):
                return

    def finish(self) -> None:
        with self._lock:
            self._finished.set()


class _RefuseCleartext:
    """PyMySQL auth-plugin handler: refuse to send the password in clear text."""

    def __init__(self, connection: Any, address: str):
        self._address = address

    def authenticate(self, packet: Any) -> Any:
        raise ConnectError(_cleartext_refusal(self._address, "pymysql"))


def _cleartext_refusal(address: str, driver: str) -> str:
    if driver == "pymysql":
        fix = ("give the account a hashing authentication plugin, or set allow-cleartext-auth = true "
               "if nobody else can run a server at that address")
    else:
        fix = ("give the account a hashing authentication plugin, or set driver = pymysql and "
               "allow-cleartext-auth = true if nobody else can run a server at that address "
               "(mysql-connector sends clear-text passwords only over TLS)")
    return ("the server at %s asked for the password in clear text (%s) on a connection without TLS; "
            "refused; fix: %s" % (address, "/".join(CLEARTEXT_PLUGINS), fix))


def _peer_check(target: Target) -> Callable[[socket.socket], None]:
    """Who may be at the other end of the connected socket (trust.py)."""
    if not target.host:
        return lambda sock: trust.check_peer(sock, str(target.socket))
    remote_allowed = target.ssl_mode in VERIFYING_SSL_MODES or target.allow_unverified_host
    return lambda sock: trust.check_tcp_peer(sock, target.address, remote_allowed)


def _server_offers_tls(raw: Any, driver: str) -> bool:
    if driver == "pymysql":
        capabilities = raw.server_capabilities
    else:
        capabilities = (raw._handshake or {}).get("capabilities", 0)
    return bool(capabilities & CLIENT_SSL)


def _check_peer_first(raw: Any, read_greeting: str, driver: str, target: Target) -> None:
    """Check who is at the other end between connecting and reading the greeting, and that
    the server offers TLS where it is required, before the driver sends anything; the driver
    calls its greeting reader on itself and authenticates only after it returns."""
    original = getattr(raw, read_greeting)
    check = _peer_check(target)
    tls_required = bool(target.host) and target.ssl_mode not in ("preferred", "disabled")

    def checked() -> Any:
        check(_raw_socket(driver, raw))
        greeting = original()
        # Both drivers would otherwise go on without TLS, and send the login in the clear.
        if tls_required and not _server_offers_tls(raw, driver):
            raise ConnectError("the server at %s does not offer TLS, which ssl-mode = %s requires; refused "
                               "before sending credentials; fix: enable TLS on the server (ssl-cert, ssl-key), "
                               "or use its socket" % (target.address, target.ssl_mode))
        return greeting
    setattr(raw, read_greeting, checked)


def _pymysql_tls(target: Target) -> Dict[str, Any]:
    if not target.host or target.ssl_mode == "disabled":
        return {}
    import ssl  # here, not at the top: thaw imports this module and must start fast
    verifying = target.ssl_mode in VERIFYING_SSL_MODES
    try:
        context = ssl.create_default_context(cafile=target.ssl_ca if verifying else None)
    except (OSError, ssl.SSLError):
        raise ConfigError("ssl-ca file %s holds no CA certificate quiesce can use; fix: set ssl-ca to the CA "
                          "certificate (PEM) that signed the server's certificate" % target.ssl_ca) from None
    context.check_hostname = target.ssl_mode == "verify-identity"
    context.verify_mode = ssl.CERT_REQUIRED if verifying else ssl.CERT_NONE
    # PyMySQL uses TLS only if the server offers it: "preferred"; _check_peer_first refuses
    # a server without it for the other modes.
    return {"ssl": context}


def _connector_tls(target: Target) -> Dict[str, Any]:
    if not target.host or target.ssl_mode in ("preferred", "required"):
        return {}   # Connector/Python uses TLS whenever the server offers it, unverified
    if target.ssl_mode == "disabled":
        return {"ssl_disabled": True}
    return {"ssl_ca": target.ssl_ca, "ssl_verify_cert": True,
            "ssl_verify_identity": target.ssl_mode == "verify-identity"}


def _open_pymysql(module, kwargs: Dict[str, Any], timeout: float, target: Target, allow_cleartext: bool):
    try:
        kwargs["password"].encode("latin-1")
    except UnicodeEncodeError:
        # The codec's own message quotes the character and its position: part of the secret.
        raise ConfigError("the password has characters PyMySQL cannot send (latin-1 only); fix: set "
                          "driver = mysql-connector, or give the account a password of latin-1 characters") from None
    plugin_map: Dict[Any, Any] = {}
    if not allow_cleartext:
        # PyMySQL builds the handler as plugin_map[name](connection).
        refuse = functools.partial(_RefuseCleartext, address=target.address)
        plugin_map = {name: refuse for name in CLEARTEXT_PLUGINS}
    raw = module.connections.Connection(
        connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout, local_infile=False,
        defer_connect=True, auth_plugin_map=plugin_map, **kwargs, **_pymysql_tls(target))
    _check_peer_first(raw, "_get_server_information", "pymysql", target)
    return raw, raw.connect


def _open_connector(module, kwargs: Dict[str, Any], timeout: float, target: Target, allow_cleartext: bool):
    # Connector/Python itself refuses mysql_clear_password without TLS and has no "dialog".
    raw = module.connection.MySQLConnection()
    _check_peer_first(raw, "_do_handshake", "mysql-connector", target)
    options = dict(kwargs, connection_timeout=max(1, int(math.ceil(timeout))), use_pure=True,
                   allow_local_infile=False, get_warnings=False, raise_on_warnings=False, **_connector_tls(target))
    return raw, lambda: raw.connect(**options)


# How both drivers' messages report a TLS certificate that does not verify (OpenSSL's words).
_CERTIFICATE_FAILED = "certificate verify failed"


def _certificate_refusal(target: Target, message: str) -> str:
    reason = message.split(_CERTIFICATE_FAILED, 1)[1].lstrip(": ").split(" (_ssl", 1)[0].strip() or "invalid"
    return ("the TLS certificate of the server at %s does not verify against ssl-ca %s (%s); refused before "
            "sending credentials; fix: set ssl-ca to the CA that signed the server's certificate%s"
            % (target.address, target.ssl_ca, reason,
               ", and host to a name or address the certificate lists" if target.ssl_mode == "verify-identity"
               else ""))


def connect(target: Target, driver: str, timeout: float, allow_cleartext: bool = False) -> Connection:
    """Connect, read the greeting and authenticate within `timeout` seconds in all.

    Only to a unix socket or local port that root or the server's account serves, or to
    another host that proved its identity with a certificate (trust.py, target.ssl_mode)
    unless target.allow_unverified_host; never hand the password over in clear text unless
    allow_cleartext.
    """
    name, module = _driver_module(driver)
    timeout = min(timeout, MAX_SOCKET_TIMEOUT)
    kwargs: Dict[str, Any] = {"user": target.user, "password": target.password or "",
                              "autocommit": True, "charset": "utf8mb4"}
    if target.host:
        kwargs.update(host=target.host, port=target.port)
        trust.check_local_port(target.host, target.port)
    else:
        kwargs.update(unix_socket=target.socket)
        trust.check_socket_file(str(target.socket))
    opener = _open_pymysql if name == "pymysql" else _open_connector
    try:
        raw, open_raw = opener(module, kwargs, timeout, target, allow_cleartext)
    except QuiesceError:
        raise
    except Exception as exc:  # a setting the driver rejects
        raise _as_db_error(exc) from None
    began = time.monotonic()
    deadline = _Deadline(timeout, lambda: _raw_socket(name, raw))
    too_slow = DbError(CR_SERVER_LOST, "no greeting and authentication from the server within %g s "
                                       "(connect-timeout)" % timeout)
    try:
        open_raw()
        conn = Connection(name, raw, timeout)
    except QuiesceError:
        raise
    except Exception as exc:
        error = exc if isinstance(exc, DbError) else _as_db_error(exc)
        if name == "mysql-connector" and "mysql_clear_password requires SSL" in error.message:
            raise ConnectError(_cleartext_refusal(target.address, "mysql-connector")) from None
        if _CERTIFICATE_FAILED in error.message:
            raise ConnectError(_certificate_refusal(target, error.message)) from None
        # The driver's own per-read timeout may fire a moment before the deadline does.
        out_of_time = deadline.expired or time.monotonic() - began >= timeout
        raise (too_slow if out_of_time else error) from None
    finally:
        deadline.finish()
    if deadline.expired:
        # Time ran out just as the connect finished: the socket may already be shut down.
        conn.abandon()
        raise too_slow
    return conn


def server_process_running() -> bool:
    """Is a MySQL/MariaDB server running on this host? Tells "not running" from "cannot reach".

    A process merely named mysqld does not count (serverproc.py): anyone could start one and
    turn "nothing to quiesce" into a failed freeze.
    """
    found = serverproc.servers()
    return True if found is None else bool(found)  # /proc unreadable: never skip a real server
