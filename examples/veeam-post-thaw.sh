#!/bin/sh
# Veeam Backup & Replication, Linux VM job: Guest Processing > Scripts > post-thaw.
# Veeam uploads this file to /tmp and runs it over SSH with no arguments, as the job's
# account. Exit 6 means the lock did not last until now (the backup may be
# inconsistent); a non-zero exit fails the job or is ignored, as the job's script
# setting says. quiesce needs root: a non-root job account needs a sudoers rule such as
#   veeam ALL=(root) NOPASSWD: /usr/sbin/quiesce freeze --caller veeam, /usr/sbin/quiesce thaw --caller veeam
QUIESCE=/usr/sbin/quiesce
if [ "$(id -u)" -eq 0 ]; then
    exec "$QUIESCE" thaw --caller veeam </dev/null
fi
exec sudo -n "$QUIESCE" thaw --caller veeam </dev/null
