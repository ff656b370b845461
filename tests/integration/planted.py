"""A socket planted by an unprivileged user at /tmp/mysql.sock, and quiesce in front of it.

Run as root as the only process of private mount and pid namespaces (test_db_safety.py
starts it with `unshare --mount --propagation private --pid --fork --mount-proc`): mounts a
private tmpfs on /tmp (the real /tmp is untouched), runs fakeserver.py there as `nobody`
(greeting, then an auth switch to mysql_clear_password), and tries quiesce against it:
db.connect with clear-text auth allowed (so only the socket checks stand in the way), the
same after root has chowned the socket file to itself (then only the listener check does),
and `quiesce freeze` with socket = /tmp/mysql.sock. Prints one JSON object. Everything it
started dies with the pid namespace.

    OUTER_MOUNT_NS=$(readlink /proc/self/ns/mnt) unshare ... python3 planted.py DRIVER PASSWORD
"""

import ctypes
import json
import os
import pwd
import subprocess
import sys

from quiesce import db
from quiesce.config import Target

import fakeserver

SOCKET = "/tmp/mysql.sock"
RECORD = "/tmp/received"


def mount_private_tmp() -> None:
    # The caller passes its own mount namespace: mounting over /tmp in that one would hide the real /tmp.
    if os.readlink("/proc/self/ns/mnt") == os.environ.get("OUTER_MOUNT_NS") or os.getpid() != 1:
        raise SystemExit("planted.py: not in private mount and pid namespaces; refusing to mount over /tmp")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, b"mode=1777") != 0:
        raise OSError(ctypes.get_errno(), "mount tmpfs on /tmp")


def try_connect(driver: str, password: str) -> str:
    target = Target(name="default", socket=SOCKET, host=None, port=3306, user="root", password=password,
                    position_file=None)
    try:
        db.connect(target, driver, 5.0, allow_cleartext=True).close()
    except Exception as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return "connected"


def run_freeze(driver: str, password: str) -> dict:
    os.makedirs("/tmp/q/run", mode=0o700)
    conf = "/tmp/q/quiesce.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("socket = %s\nuser = root\npassword = %s\ndriver = %s\nruntime-dir = /tmp/q/run\n"
                     "position-file = /tmp/q/position.json\nconnect-timeout = 5\n"
                     % (SOCKET, password, driver))
    done = subprocess.run([sys.executable, "-m", "quiesce", "--config", conf, "freeze"], cwd="/",
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": os.environ["PYTHONPATH"]})
    return {"rc": done.returncode, "stdout": done.stdout.decode(errors="replace"),
            "stderr": done.stderr.decode(errors="replace")}


def main() -> None:
    driver, password = sys.argv[1], sys.argv[2]
    mount_private_tmp()
    server = fakeserver.start_as("nobody", "--socket", SOCKET, "--mode", "switch", "--record", RECORD)
    result = {"owner": pwd.getpwuid(os.stat(SOCKET).st_uid).pw_name}
    result["planted"] = try_connect(driver, password)
    result["freeze"] = run_freeze(driver, password)
    os.chown(SOCKET, 0, 0)
    result["chowned"] = try_connect(driver, password)
    server.kill()
    with open(RECORD, "rb") as handle:
        received = handle.read()
    result["received_bytes"] = len(received)
    result["password_received"] = password.encode() in received
    print(json.dumps(result))


if __name__ == "__main__":
    main()
