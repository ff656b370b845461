"""The filesystem probe's writer: a child process that does one probe call at a time.

Started by probewriter.start() as `python3 -I -S -B fsprobe_writer.py DIRFD FD CMDFD
REPLYFD NAME`, with nothing open but the probe file, its directory and two pipes. It
is a process and not a thread of the holder because a process cannot finish exiting
while one of its threads sleeps in a frozen write: the holder must always be able to
exit or be killed, and so close the database session, whatever the filesystem does.

Run as a script, it imports nothing but os and sys.
"""

import os
import sys

# Commands from the probe, one byte each; every one is answered with "ERRNO\n" (0: done).
COMMANDS = {"write": b"w", "sync": b"s"}


def main(argv):
    """Do each probe call sent and answer when it returns.

    When the command pipe closes (stop, or the holder is gone) remove the probe file and
    exit; a call stuck in a frozen write finishes first, at the thaw.
    """
    dfd, fd, cmd, rep = (int(a) for a in argv[:4])
    name = argv[4]
    try:
        os.write(rep, b"0\n")
        while True:
            c = os.read(cmd, 1)
            if not c:
                break
            err = 0
            try:
                if c == COMMANDS["write"]:
                    os.pwrite(fd, b"\0", 0)
                else:
                    os.fdatasync(fd)
            except OSError as e:
                err = e.errno or -1
            os.write(rep, b"%d\n" % err)
    except OSError:
        pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
        try:
            os.unlink(name, dir_fd=dfd)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
