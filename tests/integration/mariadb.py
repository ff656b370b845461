"""Private, throw-away MariaDB servers for the integration tests.

Each server runs Debian's own mariadbd with its own work directory under /tmp (short paths:
a unix socket path must stay under 108 bytes), a datadir copied from a template that
mariadb-install-db builds once per test process, a unix socket, a TCP port on 127.0.0.1,
binary logging and a server id. Nothing else on the machine is touched.

Every server started here is registered; an atexit handler kills whatever is still running
when the process ends, and servers left behind by an earlier process that died (its owner
pid is recorded in the work directory) are killed when the next one starts a server.

Only the standard library and PyMySQL are needed, so the benchmark can import this too.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pymysql

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MARIADBD = shutil.which("mariadbd", path=SYSTEM_PATH) or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db", path=SYSTEM_PATH) or "/usr/bin/mariadb-install-db"
TMP_ROOT = "/tmp"
WORKDIR_PREFIX = "quiesce-db-"
TEMPLATE_PREFIX = "quiesce-tmpl-"

# Options every test server gets. A value of None writes a bare flag; overriding an option
# with False removes it. Chosen for a fast start and a small footprint, while keeping the
# settings a production server has for what quiesce cares about (binlog, durability).
BASE_OPTIONS: Dict[str, object] = {
    "bind-address": "127.0.0.1",
    "skip-name-resolve": None,
    "log-bin": "binlog",            # relative: the binlogs live in the datadir, like a snapshot sees them
    "relay-log": "relay-bin",
    "binlog-format": "MIXED",
    "sync-binlog": 1,
    "innodb-flush-log-at-trx-commit": 1,
    "innodb-buffer-pool-size": "32M",
    "innodb-log-file-size": "8M",
    "innodb-log-buffer-size": "4M",
    "innodb-data-file-path": "ibdata1:4M:autoextend",
    # Synchronous I/O: robust in containers, and no request is in flight while a server is
    # paused for a point-in-time copy (see copy_datadir).
    "innodb-use-native-aio": 0,
    "innodb-buffer-pool-load-at-startup": 0,
    "innodb-buffer-pool-dump-at-shutdown": 0,
    "performance-schema": 0,
    "key-buffer-size": "8M",
    "max-connections": 200,
    "table-open-cache": 400,
    "skip-slave-start": None,
    "innodb-temp-data-file-path": "ibtmp1:1M:autoextend",
}

# Options that must be identical when the template datadir is created and later used.
_TEMPLATE_KEYS = ("innodb-data-file-path", "innodb-log-file-size", "innodb-buffer-pool-size")

_registry_lock = threading.RLock()
_live: "set[MariaDB]" = set()
_template: Optional[str] = None          # the host's template (test_mariadb_helper inspects it)
_templates: Dict[str, str] = {}         # template key -> directory holding data/
_swept = False


class ServerError(RuntimeError):
    """The server did not start or stop as asked; the message carries its error log tail."""


def _merge(*layers: Optional[Dict[str, object]]) -> Dict[str, object]:
    merged: Dict[str, object] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            key = key.replace("_", "-")
            if value is False:
                merged.pop(key, None)
            else:
                merged[key] = value
    return merged


def _render_cnf(options: Dict[str, object], section: str = "mariadbd") -> str:
    lines = ["[%s]" % section]
    for key, value in options.items():
        lines.append(key if value is None else "%s = %s" % (key, value))
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (start() retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_start_time(pid: int) -> Optional[str]:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            data = handle.read()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_cmdline(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def reap_stale_servers() -> List[int]:
    """Kill servers from earlier test processes that died without cleaning up.

    Only servers whose defaults file lies in one of our work directories, that share our
    root directory, and whose recorded owner (pid + start time, written at creation) is
    readable and no longer exists are touched: a test run going on in parallel, or in a
    chroot or container whose /tmp we do not see, keeps its servers. Work and template
    directories of dead owners are removed as well.
    """
    killed: List[int] = []
    live_dirs: List[str] = []
    marker = "--defaults-file=%s/%s" % (TMP_ROOT, WORKDIR_PREFIX)
    try:
        our_root = os.stat("/")
    except OSError:
        return killed
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        argv = _read_cmdline(pid)
        if not argv or not argv[0].endswith("mariadbd"):
            continue
        cnf = next((a for a in argv if a.startswith(marker)), None)
        if cnf is None:
            continue
        workdir = os.path.dirname(cnf.split("=", 1)[1])
        try:
            root = os.stat("/proc/%d/root" % pid)
            if (root.st_dev, root.st_ino) != (our_root.st_dev, our_root.st_ino):
                continue
        except OSError:
            continue
        if not _owner_gone(workdir):
            live_dirs.append(workdir)   # its owner lives, or we cannot tell whose it is
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
        shutil.rmtree(workdir, ignore_errors=True)
    _sweep_stale_dirs(live_dirs)
    return killed


def _write_owner(directory: str) -> None:
    with open(os.path.join(directory, "owner"), "w") as handle:
        handle.write("%d %s\n" % (os.getpid(), _proc_start_time(os.getpid())))


def _owner_gone(directory: str) -> bool:
    """True only if the directory's recorded owner process provably no longer exists."""
    try:
        with open(os.path.join(directory, "owner")) as handle:
            owner_pid, owner_start = handle.read().split()
        return _proc_start_time(int(owner_pid)) != owner_start
    except (OSError, ValueError):
        return False


def _sweep_stale_dirs(in_use: Iterable[str]) -> None:
    """Remove work and template directories left by test processes that died."""
    busy = set(in_use)
    for entry in os.listdir(TMP_ROOT):
        if entry.startswith((WORKDIR_PREFIX, TEMPLATE_PREFIX)):
            path = os.path.join(TMP_ROOT, entry)
            if path not in busy and _owner_gone(path):
                shutil.rmtree(path, ignore_errors=True)


def _build_template(server: "MariaDB") -> str:
    """A fresh datadir once per process and server kind; every server starts from a copy of it."""
    global _template
    key = server.template_key()
    with _registry_lock:
        ready = _templates.get(key)
        if ready and os.path.isdir(os.path.join(ready, "data", "mysql")):
            return ready
        root = tempfile.mkdtemp(prefix=TEMPLATE_PREFIX, dir=TMP_ROOT)
        _write_owner(root)
        datadir = os.path.join(root, "data")
        cnf = os.path.join(root, "install.cnf")
        install_opts = {k: server.options[k] for k in server.TEMPLATE_KEYS if k in server.options}
        install_opts["datadir"] = datadir
        with open(cnf, "w") as handle:
            handle.write(_render_cnf(install_opts, server.CNF_SECTION))
        result = subprocess.run(server.install_command(cnf), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=180,
                                env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})
        if result.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise ServerError("initialising a datadir for %s failed (%d):\n%s"
                              % (key, result.returncode, result.stdout.decode(errors="replace")[-4000:]))
        server.after_install(datadir)
        _templates[key] = root
        if key == "host":
            _template = root
        atexit.register(shutil.rmtree, root, True)
        return root


def copy_tree(src: str, dest: str) -> None:
    """Plain file copy of a directory tree (what a block-level snapshot holds)."""
    if os.path.exists(dest) and os.listdir(dest):
        raise FileExistsError("copy destination %s is not empty" % dest)
    os.makedirs(dest, exist_ok=True)
    subprocess.run(["cp", "-a", "--sparse=always", src + "/.", dest], check=True,
                   stdin=subprocess.DEVNULL, timeout=300)


class MariaDB:
    """One private mariadbd.

    >>> db = MariaDB(); db.start(); db.query("SELECT 1"); db.cleanup()

    Servers of other kinds (in a chroot, or MySQL: servers.py) are subclasses that override
    the class attributes and the hooks below; tests use the same methods on all of them.
    """

    flavour = "mariadb"
    CNF_SECTION = "mariadbd"
    TEMPLATE_KEYS = _TEMPLATE_KEYS
    # Non-transactional engines this server has (the load and the consistency checks use them).
    ENGINES = ("InnoDB", "MyISAM", "Aria")
    # Options a copy boots with so that an unflushed table shows in CHECK TABLE.
    NO_REPAIR = {"myisam-recover-options": "OFF", "aria-recover-options": "OFF"}

    def __init__(self, name: str = "primary", server_id: int = 1,
                 options: Optional[Dict[str, object]] = None, datadir: Optional[str] = None):
        self.name = name
        self.server_id = server_id
        self.options = _merge(BASE_OPTIONS, self.flavour_options(), options)
        self.workdir = tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=TMP_ROOT)
        _write_owner(self.workdir)
        self._own_datadir = datadir is None
        self.datadir = os.path.abspath(datadir) if datadir else os.path.join(self.workdir, "data")
        self.socket = os.path.join(self.workdir, "mysqld.sock")
        self.error_log = os.path.join(self.workdir, "error.log")
        self.cnf = os.path.join(self.workdir, "my.cnf")
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.start_seconds: Optional[float] = None
        self.start_count = 0

    # ----------------------------------------------------------------- kind-specific hooks
    @classmethod
    def flavour_options(cls) -> Dict[str, object]:
        """Overrides of BASE_OPTIONS for this kind of server."""
        return {}

    def template_key(self) -> str:
        return "host"

    def install_command(self, cnf: str) -> List[str]:
        # --force: no host name lookup (a fresh container may have no /etc/hosts).
        cmd = [INSTALL_DB, "--defaults-file=%s" % cnf, "--skip-test-db", "--force",
               "--auth-root-authentication-method=socket", "--skip-name-resolve"]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        return cmd

    def after_install(self, datadir: str) -> None:
        """Adjust a freshly initialised template datadir."""

    def server_command(self, args: Sequence[str]) -> List[str]:
        return [MARIADBD, *args]

    def version(self) -> str:
        return mariadb_version()

    # ----------------------------------------------------------------- life cycle
    def __repr__(self) -> str:
        return "<%s %s pid=%s socket=%s port=%s>" % (type(self).__name__, self.name, self.pid, self.socket,
                                                     self.port)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _effective_options(self, extra: Optional[Dict[str, object]]) -> Dict[str, object]:
        opts = _merge(self.options, extra)
        opts.update({
            "datadir": self.datadir,
            "socket": self.socket,
            "port": self.port,
            "pid-file": os.path.join(self.workdir, "mysqld.pid"),
            "log-error": self.error_log,
            "tmpdir": os.path.join(self.workdir, "tmp"),
            "server-id": self.server_id,
        })
        if os.geteuid() == 0:
            opts["user"] = "root"
        return opts

    def start(self, options: Optional[Dict[str, object]] = None, timeout: float = 60.0,
              extra_args: Sequence[str] = ()) -> float:
        """Start and wait until a root connection over the socket works. Returns seconds taken.

        `options` are my.cnf overrides for this start only (False removes an option);
        `extra_args` go on the command line.
        """
        global _swept
        if self.running:
            raise ServerError("%r is already running" % self)
        with _registry_lock:
            if not _swept:
                _swept = True
                reap_stale_servers()
        if not os.path.isdir(os.path.join(self.datadir, "mysql")):
            template = _build_template(self)
            copy_tree(os.path.join(template, "data"), self.datadir)
        os.makedirs(os.path.join(self.workdir, "tmp"), exist_ok=True)
        last_error = None
        for _attempt in range(5):
            self.port = free_port()
            began = time.monotonic()
            try:
                self._launch(options, extra_args, timeout)
            except ServerError as exc:
                last_error = exc
                if "Address already in use" in str(exc) or "Bind on TCP/IP port" in str(exc):
                    continue
                raise
            self.start_seconds = time.monotonic() - began
            self.start_count += 1
            return self.start_seconds
        raise last_error  # type: ignore[misc]

    def _launch(self, options, extra_args, timeout) -> None:
        with open(self.cnf, "w") as handle:
            handle.write(_render_cnf(self._effective_options(options), self.CNF_SECTION))
        log_offset = os.path.getsize(self.error_log) if os.path.exists(self.error_log) else 0
        console = open(os.path.join(self.workdir, "console.log"), "ab")
        try:
            with _registry_lock:
                self.proc = subprocess.Popen(
                    self.server_command(["--defaults-file=%s" % self.cnf, *extra_args]),
                    stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                    cwd=self.workdir, start_new_session=True,
                    env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "TZ": "UTC"})
                _live.add(self)
        finally:
            console.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError("%r exited with %s during start:\n%s"
                                  % (self, self.proc.returncode, self.log_tail(since=log_offset)))
            if os.path.exists(self.socket):
                try:
                    self.connect(connect_timeout=2).close()
                    return
                except pymysql.err.OperationalError:
                    pass
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError("%r did not accept connections within %.0f s:\n%s"
                                  % (self, timeout, self.log_tail(since=log_offset)))
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> bool:
        """Clean shutdown (SIGTERM); SIGKILL after `timeout`. True if it stopped cleanly."""
        if not self.proc or self.proc.poll() is not None:
            return True
        clean = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            clean = False
            self.proc.kill()
            self.proc.wait(10)
        with _registry_lock:
            _live.discard(self)
        return clean

    def kill(self) -> None:
        """SIGKILL: the server dies as in a power cut (the next start runs crash recovery)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a copy paused it
            except ProcessLookupError:
                pass
            self.proc.kill()
            self.proc.wait(10)
        with _registry_lock:
            _live.discard(self)

    def restart(self, options: Optional[Dict[str, object]] = None, timeout: float = 60.0) -> float:
        self.stop()
        return self.start(options=options, timeout=timeout)

    def cleanup(self) -> None:
        """Kill the server (fast: the files are thrown away) and remove its work directory."""
        self.kill()
        # The datadir goes with the work dir unless it was given (a copy belongs to whoever made it).
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40, since: int = 0) -> str:
        try:
            with open(self.error_log, "rb") as handle:
                handle.seek(since)
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        try:
            with open(os.path.join(self.workdir, "console.log"), "rb") as handle:
                console = handle.read().decode("utf-8", "replace")
        except OSError:
            console = ""
        return "\n".join((text + console).splitlines()[-lines:])

    def error_log_text(self) -> str:
        try:
            with open(self.error_log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    # ----------------------------------------------------------------- SQL
    def connect(self, database: Optional[str] = None, user: str = "root",
                password: Optional[str] = None, tcp: bool = False, **kwargs) -> pymysql.connections.Connection:
        params = dict(user=user, autocommit=True, connect_timeout=5, charset="utf8mb4")
        if password is not None:
            params["password"] = password
        if tcp:
            params.update(host="127.0.0.1", port=self.port)
        else:
            params["unix_socket"] = self.socket
        if database:
            params["database"] = database
        params.update(kwargs)
        return pymysql.connect(**params)

    def sql(self, statement: str, args=None, database: Optional[str] = None) -> int:
        """Run one statement on a new root connection; returns the affected row count."""
        conn = self.connect(database=database)
        try:
            with conn.cursor() as cur:
                return cur.execute(statement, args)
        finally:
            conn.close()

    def query(self, statement: str, args=None, database: Optional[str] = None,
              as_dict: bool = False) -> List:
        conn = self.connect(database=database)
        try:
            cursor_class = pymysql.cursors.DictCursor if as_dict else pymysql.cursors.Cursor
            with conn.cursor(cursor_class) as cur:
                cur.execute(statement, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def value(self, statement: str, args=None, database: Optional[str] = None):
        rows = self.query(statement, args, database)
        return rows[0][0] if rows else None

    def create_user(self, name: str, password: Optional[str] = None,
                    grants: Iterable[str] = ("ALL PRIVILEGES",), on: str = "*.*",
                    host: str = "localhost") -> None:
        if isinstance(grants, str):
            grants = (grants,)
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for statement, args in self.create_user_statements(name, host, password):
                    cur.execute(statement, args)
                grants = [g for g in grants if g]
                if grants:
                    cur.execute("GRANT %s ON %s TO %%s@%%s" % (", ".join(grants), on), (name, host))
        finally:
            conn.close()

    def create_user_statements(self, name: str, host: str, password: Optional[str]):
        if password is None:
            return [("CREATE OR REPLACE USER %s@%s", (name, host))]
        return [("CREATE OR REPLACE USER %s@%s IDENTIFIED BY %s", (name, host, password))]

    BINLOG_STATUS = "SHOW MASTER STATUS"
    GTID_POSITION = "SELECT @@GLOBAL.gtid_binlog_pos"

    def gtid(self) -> Optional[str]:
        """The server's GTID position as quiesce records it (MariaDB: gtid_binlog_pos)."""
        return self.value(self.GTID_POSITION) or None

    def binlog_status(self) -> Dict[str, object]:
        """{'file', 'position', 'gtid'} of the running server."""
        rows = self.query(self.BINLOG_STATUS, as_dict=True)
        gtid = self.gtid()
        if not rows:
            return {"file": None, "position": None, "gtid": gtid}
        return {"file": rows[0]["File"], "position": int(rows[0]["Position"]), "gtid": gtid}

    def binlog_files(self) -> List[Tuple[str, int]]:
        return [(r[0], int(r[1])) for r in self.query("SHOW BINARY LOGS")]

    TIME_MS = "TIME_MS"     # MySQL's process list has whole seconds only

    def connection_ids(self) -> Dict[int, Dict[str, object]]:
        """Client connections in the process list (not the one asking), by id."""
        rows = self.query("SELECT ID, USER, HOST, DB, COMMAND, TIME, %s AS TIME_MS, STATE, INFO "
                          "FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                          "AND COMMAND NOT IN ('Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker') "
                          "AND USER <> 'system user'" % self.TIME_MS, as_dict=True)
        return {int(r["ID"]): r for r in rows}

    # ----------------------------------------------------------------- copies
    def copy_datadir(self, dest: str, pause: bool = True) -> float:
        """Point-in-time copy of the datadir into `dest` (created; must be empty).

        The copy is a plain file copy, as a block-level snapshot would hold. A copy of a
        running server is not atomic across files by itself: InnoDB's background threads
        (page cleaner, purge) keep writing even while commits are blocked. With pause=True
        the server is stopped with SIGSTOP for the duration of the copy (and its I/O is
        synchronous, see BASE_OPTIONS), which makes the copy one instant, like a snapshot of
        a frozen filesystem. That gives crash consistency only: application consistency
        across engines and the binlog still comes from the lock under test.
        Returns the seconds the copy took.
        """
        began = time.monotonic()
        paused = pause and self.running
        if paused:
            os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            copy_tree(self.datadir, dest)
        finally:
            if paused:
                os.kill(self.proc.pid, signal.SIGCONT)
        return time.monotonic() - began

    def boot_copy(self, dest: str, name: Optional[str] = None,
                  options: Optional[Dict[str, object]] = None, timeout: float = 120.0) -> "MariaDB":
        """Start a second server on a copied datadir (fresh socket, port and work dir).

        It runs crash recovery like a restored snapshot. MyISAM/Aria automatic repair is
        switched off so that a table left unflushed shows up in CHECK TABLE instead of being
        mended silently.
        """
        copy = type(self)(name=name or self.name + "-copy", server_id=self.server_id,
                          options=_merge(self.options, self.NO_REPAIR, options), datadir=dest)
        try:
            copy.start(timeout=timeout)
        except Exception:
            copy.cleanup()
            raise
        return copy

    # ----------------------------------------------------------------- replication
    REPLICA_OPTIONS: Dict[str, object] = {"log-slave-updates": None}

    def make_replica(self, name: str = "replica", server_id: Optional[int] = None,
                     parallel_threads: Optional[int] = 0, parallel_mode: str = "optimistic",
                     options: Optional[Dict[str, object]] = None,
                     repl_user: str = "repl", repl_password: str = "repl-secret",
                     channel: str = "") -> "MariaDB":
        """Start a new server replicating from this one over TCP with GTID (slave_pos).

        parallel_threads=None keeps the server's default applier (MySQL: 4 workers).
        """
        replica = type(self)(name=name, server_id=server_id or self.server_id + 1,
                             options=_merge(self.REPLICA_OPTIONS, options))
        try:
            replica.start()
            replica.replicate_from(self, parallel_threads=parallel_threads, parallel_mode=parallel_mode,
                                   repl_user=repl_user, repl_password=repl_password, channel=channel)
        except Exception:
            replica.cleanup()
            raise
        return replica

    def replicate_from(self, primary: "MariaDB", parallel_threads: Optional[int] = 0,
                       parallel_mode: str = "optimistic", repl_user: str = "repl",
                       repl_password: str = "repl-secret", channel: str = "") -> None:
        """Add a replication channel (named: a multi-source connection) from primary and start it."""
        primary.create_user(repl_user, repl_password, grants=("REPLICATION SLAVE",), host="127.0.0.1")
        name = " '%s'" % channel if channel else ""
        if parallel_threads is not None:
            self.sql("SET GLOBAL slave_parallel_threads = %d" % parallel_threads)
            if parallel_threads:
                self.sql("SET GLOBAL slave_parallel_mode = %s", (parallel_mode,))
        self.sql("CHANGE MASTER%s TO MASTER_HOST='127.0.0.1', MASTER_PORT=%%s, MASTER_USER=%%s, "
                 "MASTER_PASSWORD=%%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1" % name,
                 (primary.port, repl_user, repl_password))
        self.sql("START SLAVE%s" % name)
        self.wait_replica_running(channel=channel)
        self.wait_caught_up(primary)

    def replica_status(self, channel: str = "") -> Optional[Dict[str, object]]:
        """The channel's status row, with MySQL's Replica_/Source_ names also under Slave_/Master_."""
        rows = self.query(self.replica_status_statement(channel), as_dict=True)
        if not rows:
            return None
        row = dict(rows[0])
        for key, value in rows[0].items():
            row.setdefault(key.replace("Replica_", "Slave_").replace("Source_", "Master_"), value)
        return row

    def replica_status_statement(self, channel: str) -> str:
        return "SHOW SLAVE '%s' STATUS" % channel if channel else "SHOW SLAVE STATUS"

    def wait_replica_running(self, timeout: float = 30.0, channel: str = "") -> Dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.replica_status(channel) or {}
            if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
                return status
            if time.monotonic() > deadline:
                raise ServerError("replication did not start within %.0f s: IO=%s SQL=%s %s %s"
                                  % (timeout, status.get("Slave_IO_Running"), status.get("Slave_SQL_Running"),
                                     status.get("Last_IO_Error"), status.get("Last_SQL_Error")))
            time.sleep(0.05)

    def wait_caught_up(self, primary: "MariaDB", timeout: float = 30.0) -> None:
        gtid = primary.gtid()
        result = self.value(self.GTID_WAIT, (gtid or "", timeout))
        if result != 0:
            raise ServerError("replica did not reach %s within %.0f s" % (gtid, timeout))

    GTID_WAIT = "SELECT MASTER_GTID_WAIT(%s, %s)"
    # What a replica channel's recorded GTID position is (MySQL: the replica's whole executed set).
    REPLICA_GTID = "SELECT @@GLOBAL.gtid_slave_pos"

    # ----------------------------------------------------------------- probes
    def try_write(self, timeout: float = 1.0, database: str = "quiesce_probe") -> Optional[float]:
        """Commit one row to an InnoDB and a MyISAM table (create_probe_tables() first).

        Returns the seconds taken, or None if that did not finish within `timeout`: the
        blocked connection is then killed from a second connection.
        """
        began = time.monotonic()
        conn = self.connect(database=database, read_timeout=timeout + 10)
        conn_id = conn.thread_id()
        done = threading.Event()
        killed = []

        def watchdog():
            if not done.wait(max(0.0, timeout - (time.monotonic() - began))):
                killed.append(True)
                try:
                    self.sql("KILL %d" % conn_id)
                except pymysql.MySQLError:
                    pass
        killer = threading.Thread(target=watchdog, daemon=True)
        killer.start()
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION lock_wait_timeout = %d" % max(1, int(timeout + 0.999)))
                cur.execute("INSERT INTO probe_innodb (at) VALUES (NOW(6))")
                cur.execute("INSERT INTO probe_myisam (at) VALUES (NOW(6))")
        except pymysql.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if killed or code in (1205, 1927, 2013, 2006, 1317):
                return None
            raise
        finally:
            done.set()
            killer.join()
            try:
                conn.close()
            except Exception:
                pass
        elapsed = time.monotonic() - began
        return elapsed if elapsed <= timeout else None

    def create_probe_tables(self, database: str = "quiesce_probe") -> None:
        """Create the tables try_write uses (DDL: do it before anything is locked)."""
        self.sql("CREATE DATABASE IF NOT EXISTS %s" % database)
        self.sql("CREATE TABLE IF NOT EXISTS %s.probe_innodb (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                 "at DATETIME(6)) ENGINE=InnoDB" % database)
        self.sql("CREATE TABLE IF NOT EXISTS %s.probe_myisam (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                 "at DATETIME(6)) ENGINE=MyISAM" % database)


def mariadb_version() -> str:
    out = subprocess.run([MARIADBD, "--version"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         timeout=30, check=True).stdout.decode()
    return out.strip()


def kill_all_started() -> None:
    """Kill every server this process started and has not stopped (atexit safety net)."""
    with _registry_lock:
        servers = list(_live)
    for server in servers:
        try:
            server.cleanup()
        except Exception:
            pass


atexit.register(kill_all_started)
