"""A Galera cluster of private MariaDB nodes on loopback (Debian 12's MariaDB and galera-4).

Each node is a harness MariaDB with wsrep on, its own Galera, IST and state-transfer ports
on 127.0.0.1, and the stock rsync state transfer. Nodes run as the `mysql` user, as
packaged servers do: run as root, the joiner's rsync daemon drops to `nobody` and cannot
write the data directory. The first node bootstraps the cluster; the others join it by a
full state transfer (SST) from it.
"""

import os
import pwd
import subprocess
import time
from typing import Dict, List, Optional

import pymysql

from .mariadb import MariaDB, ServerError, free_port

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
NODE_USER = "mysql"


class GaleraNode(MariaDB):
    def __init__(self, name: str, server_id: int, peers: List["GaleraNode"],
                 options: Optional[Dict[str, object]] = None, datadir: Optional[str] = None):
        self.galera_port = free_port()
        self.ist_port = free_port()
        self.sst_port = free_port()
        peer_list = ",".join("127.0.0.1:%d" % p.galera_port for p in peers)
        galera = {
            "binlog-format": "ROW",
            "innodb-autoinc-lock-mode": 2,
            "wsrep-on": "ON",
            "wsrep-provider": PROVIDER,
            "wsrep-cluster-name": "quiesce-test",
            "wsrep-cluster-address": "gcomm://" + peer_list,
            "wsrep-node-name": name,
            "wsrep-node-address": "127.0.0.1:%d" % self.galera_port,
            "wsrep-provider-options": '"gmcast.listen_addr=tcp://127.0.0.1:%d; ist.recv_addr=127.0.0.1:%d; '
                                      'gcache.size=64M"' % (self.galera_port, self.ist_port),
            "wsrep-sst-method": "rsync",
            "wsrep-sst-receive-address": "127.0.0.1:%d" % self.sst_port,
        }
        galera.update(options or {})
        super().__init__(name=name, server_id=server_id, options=galera, datadir=datadir)

    def _effective_options(self, extra):
        opts = super()._effective_options(extra)
        opts["user"] = NODE_USER
        return opts

    def _launch(self, options, extra_args, timeout) -> None:
        # The node (and rsync under it) writes its work dir, datadir, socket and logs.
        entry = pwd.getpwnam(NODE_USER)
        for path in {self.workdir, self.datadir}:
            subprocess.run(["chown", "-R", "%d:%d" % (entry.pw_uid, entry.pw_gid), path], check=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        super()._launch(options, extra_args, timeout)

    def wsrep(self) -> Dict[str, str]:
        return {r[0].lower(): r[1] for r in self.query("SHOW GLOBAL STATUS LIKE 'wsrep%%'")}

    def wait_synced(self, cluster_size: Optional[int] = None, timeout: float = 60.0) -> Dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.wsrep()
            except pymysql.err.OperationalError as exc:
                # A joiner may drop connections until its state transfer is done.
                status = {"wsrep_local_state_comment": str(exc)}
            if status.get("wsrep_local_state_comment") == "Synced" and (
                    cluster_size is None or int(status.get("wsrep_cluster_size") or 0) == cluster_size):
                return status
            if time.monotonic() > deadline:
                raise ServerError("%s not Synced (cluster size %s) within %.0f s: %s\n%s"
                                  % (self.name, cluster_size, timeout, status.get("wsrep_local_state_comment"),
                                     self.log_tail()))
            time.sleep(0.1)


class Cluster:
    """Three (or `size`) nodes; cleanup() kills them all and removes their files."""

    def __init__(self, size: int = 3):
        self.nodes: List[GaleraNode] = []
        try:
            first = GaleraNode("node1", 1, peers=[])
            self.nodes.append(first)
            first.start(extra_args=["--wsrep-new-cluster"], timeout=90)
            first.wait_synced(1)
            for index in range(2, size + 1):
                node = GaleraNode("node%d" % index, index, peers=list(self.nodes))
                self.nodes.append(node)
                # Started by a state transfer: the server accepts connections once it is done.
                node.start(timeout=120)
                node.wait_synced(index)
        except Exception:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        for node in reversed(self.nodes):
            node.cleanup()
