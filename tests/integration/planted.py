"""A socket planted by an unprivileged user in a world-writable sticky directory (as /tmp
is), and quiesce in front of it.

Runs fakeserver.py there as `nobody` (greeting, then an auth switch to
mysql_clear_password) and tries quiesce against it: db.connect with clear-text auth
allowed (so only the socket checks stand in the way), the same after root has chowned
the socket file to itself (then only the listener check does), and `quiesce freeze` with
that socket. Prints one JSON object.

    python3 planted.py DIRECTORY DRIVER PASSWORD
"""

import json
import os
import pwd
import subprocess
import sys

from quiesce.base.config import Target
from quiesce.server import db

import fakeserver



def try_connect(socket_path: str, driver: str, password: str) -> str:
    target = Target(name="default", socket=socket_path, host=None, port=3306, user="root", password=password,
                    position_file=None)
    try:
        db.connect(target, driver, 5.0, allow_cleartext=True).close()
    except Exception as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return "connected"


def run_freeze(socket_path: str, driver: str, password: str) -> dict:
    private = os.path.join(os.path.dirname(socket_path), "q")
    os.makedirs(private + "/run", mode=0o700)
    conf = private + "/quiesce.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("socket = %s\nuser = root\npassword = %s\ndriver = %s\nruntime-dir = %s/run\n"
                     "position-file = %s/position.json\nmetrics-file = none\nconnect-timeout = 5\n"
                     % (socket_path, password, driver, private, private))
    done = subprocess.run([sys.executable, "-m", "quiesce", "--config", conf, "freeze"], cwd="/",
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": os.environ["PYTHONPATH"]})
    return {"rc": done.returncode, "stdout": done.stdout.decode(errors="replace"),
            "stderr": done.stderr.decode(errors="replace")}


def main() -> None:
    directory, driver, password = sys.argv[1:4]
    socket_path, record = os.path.join(directory, "mysql.sock"), os.path.join(directory, "received")
    server = fakeserver.start_as("nobody", "--socket", socket_path, "--mode", "switch", "--record", record)
    try:
        result = {"owner": pwd.getpwuid(os.stat(socket_path).st_uid).pw_name}
        result["planted"] = try_connect(socket_path, driver, password)
        result["freeze"] = run_freeze(socket_path, driver, password)
        os.chown(socket_path, 0, 0)
        result["chowned"] = try_connect(socket_path, driver, password)
    finally:
        server.kill()
        server.wait()
    with open(record, "rb") as handle:
        received = handle.read()
    result["received_bytes"] = len(received)
    result["password_received"] = password.encode() in received
    print(json.dumps(result))


if __name__ == "__main__":
    main()
