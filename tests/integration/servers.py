"""The servers the integration tests run against, beyond the host's own MariaDB.

FLAVOURS names every server kind; `server_class(name)` returns a MariaDB-compatible class
(same methods: start, stop, kill, sql/query/value, create_user, binlog_status, gtid,
copy_datadir, boot_copy, make_replica, replicate_from, ...) for it:

- "mariadb-10.11": Debian 12's MariaDB on the host (mariadb.MariaDB itself);
- "mariadb-11.8": Debian 13 (trixie) MariaDB in a chroot;
- "mysql-9.7": MySQL 9.7 from Debian unstable in a chroot, with GTIDs on (gtid_mode=ON,
  enforce_gtid_consistency) and otherwise MySQL's defaults (caching_sha2_password, a
  parallel applier of 4 workers preserving commit order).

Chroot servers run as on the host (root, private work directory under /tmp), through
chroot.Root.command; their datadir must lie under /tmp, which the chroot shares.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple, Type

from . import chroot
from .mariadb import MariaDB, ServerError

HOST_MARIADB = "mariadb-10.11"
MARIADB_LTS = "mariadb-11.8"
MYSQL = "mysql-9.7"
FLAVOURS = (HOST_MARIADB, MARIADB_LTS, MYSQL)
ALL_MARIADB = (HOST_MARIADB, MARIADB_LTS)

IMAGES = {
    MARIADB_LTS: chroot.Image("trixie", ("mariadb-server",)),
    # The mirror's unstable Release file may be past its Valid-Until date.
    MYSQL: chroot.Image("unstable", ("mysql-server-core", "python3-mysql.connector"),
                        aptopts=('Acquire::Check-Valid-Until "false"',)),
}
EXPECTED_VERSION = {HOST_MARIADB: "10.11.", MARIADB_LTS: "11.8.", MYSQL: "9.7."}


LOCKS = {HOST_MARIADB: ("ftwrl", "backup-stage"), MARIADB_LTS: ("ftwrl", "backup-stage"), MYSQL: ("ftwrl",)}


def with_locks(flavours: Sequence[str] = FLAVOURS) -> List[Tuple[str, str]]:
    """(flavour, lock method) for every lock each server kind offers, to parametrize
    "server_flavour, lock" with indirect=["server_flavour"]."""
    return [(flavour, lock) for flavour in flavours for lock in LOCKS[flavour]]


class ChrootServer(MariaDB):
    """A server whose binaries live in a chroot (ROOT is set by server_class)."""

    ROOT: Optional[chroot.Root] = None
    SERVER_BINARY = "/usr/sbin/mariadbd"
    KIND = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.datadir.startswith(chroot.SHARED + "/"):
            raise ServerError("a chroot server's datadir must lie under %s (shared with the chroot), not %s"
                              % (chroot.SHARED, self.datadir))

    def template_key(self) -> str:
        return self.KIND

    def server_command(self, args: Sequence[str]) -> List[str]:
        return self.ROOT.command([self.SERVER_BINARY, *args])

    def version(self) -> str:
        return self.ROOT.run([self.SERVER_BINARY, "--version"], timeout=60).stdout.decode().strip()


class ChrootMariaDB(ChrootServer):
    def install_command(self, cnf: str) -> List[str]:
        return self.ROOT.command(["mariadb-install-db", "--defaults-file=%s" % cnf, "--skip-test-db", "--force",
                                  "--auth-root-authentication-method=socket", "--skip-name-resolve",
                                  "--user=root"])


class MySQL(ChrootServer):
    flavour = "mysql"
    CNF_SECTION = "mysqld"
    SERVER_BINARY = "/usr/sbin/mysqld"
    TEMPLATE_KEYS = ("innodb-data-file-path", "innodb-buffer-pool-size")
    ENGINES = ("InnoDB", "MyISAM")
    NO_REPAIR = {"myisam-recover-options": "OFF"}
    REPLICA_OPTIONS: Dict[str, object] = {}     # log_replica_updates is on by default
    BINLOG_STATUS = "SHOW BINARY LOG STATUS"
    GTID_POSITION = "SELECT @@GLOBAL.gtid_executed"
    GTID_WAIT = "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)"
    REPLICA_GTID = GTID_POSITION
    TIME_MS = "TIME * 1000"

    @classmethod
    def flavour_options(cls) -> Dict[str, object]:
        return {
            "innodb-log-file-size": False, "innodb-redo-log-capacity": "8M",
            "skip-slave-start": False, "skip-replica-start": None,
            "binlog-format": False,             # deprecated; MySQL's default is ROW
            # Its default directory does not exist in a bare root; X Protocol is not used.
            "secure-file-priv": "", "mysqlx": "OFF",
            "gtid-mode": "ON", "enforce-gtid-consistency": "ON",
            "innodb-data-file-path": "ibdata1:12M:autoextend",     # MySQL needs at least 5 MB
            "innodb-temp-data-file-path": "ibtmp1:12M:autoextend",
        }

    def install_command(self, cnf: str) -> List[str]:
        return self.ROOT.command([self.SERVER_BINARY, "--defaults-file=%s" % cnf, "--initialize-insecure",
                                  "--user=root"])

    def after_install(self, datadir: str) -> None:
        # auto.cnf holds the server UUID: each copy must make its own, or replication refuses.
        os.unlink(os.path.join(datadir, "auto.cnf"))

    def create_user_statements(self, name: str, host: str, password: Optional[str]):
        statements = [("DROP USER IF EXISTS %s@%s", (name, host))]
        if password is None:
            statements.append(("CREATE USER %s@%s", (name, host)))
        else:
            statements.append(("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password)))
        return statements

    def replicate_from(self, primary: "MariaDB", parallel_threads: Optional[int] = 0,
                       parallel_mode: str = "", repl_user: str = "repl",
                       repl_password: str = "repl-secret", channel: str = "") -> None:
        primary.create_user(repl_user, repl_password, grants=("REPLICATION SLAVE",), host="127.0.0.1")
        if parallel_threads is not None:
            # MySQL counts a single applier as one worker (0 is deprecated).
            self.sql("SET GLOBAL replica_parallel_workers = %d" % max(1, parallel_threads))
        suffix = " FOR CHANNEL '%s'" % channel if channel else ""
        # GET_SOURCE_PUBLIC_KEY: caching_sha2_password's first login without TLS needs the RSA key.
        self.sql("CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=%%s, SOURCE_USER=%%s, "
                 "SOURCE_PASSWORD=%%s, SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1, "
                 "GET_SOURCE_PUBLIC_KEY=1%s" % suffix, (primary.port, repl_user, repl_password))
        self.sql("START REPLICA%s" % suffix)
        self.wait_replica_running(channel=channel)
        self.wait_caught_up(primary)

    def replica_status_statement(self, channel: str) -> str:
        return "SHOW REPLICA STATUS FOR CHANNEL '%s'" % channel if channel else "SHOW REPLICA STATUS"


_KINDS: Dict[str, Type[ChrootServer]] = {MARIADB_LTS: ChrootMariaDB, MYSQL: MySQL}
_classes: Dict[str, Type[MariaDB]] = {HOST_MARIADB: MariaDB}


def server_class(flavour: str) -> Type[MariaDB]:
    """The class whose instances are servers of this flavour (its chroot built on first use)."""
    if flavour not in _classes:
        base = _KINDS[flavour]
        root = chroot.root_for(flavour, IMAGES[flavour])
        _classes[flavour] = type(base.__name__ + "_" + flavour.replace("-", "_").replace(".", "_"), (base,),
                                 {"ROOT": root, "KIND": flavour})
    return _classes[flavour]


def forget_roots() -> None:
    """Remove every extracted root (their servers are killed first)."""
    for flavour in list(_classes):
        if flavour != HOST_MARIADB:
            del _classes[flavour]
    chroot.remove_all()


__all__ = ["FLAVOURS", "ALL_MARIADB", "HOST_MARIADB", "MARIADB_LTS", "MYSQL", "server_class", "forget_roots",
           "EXPECTED_VERSION", "LOCKS", "with_locks", "ServerError"]
