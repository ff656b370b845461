#!/bin/sh
# Veeam Backup & Replication, Linux VM job: Guest Processing > Scripts > pre-freeze.
# Veeam uploads this file to /tmp and runs it over SSH with no arguments, as the job's
# account; a non-zero exit fails the job (or is ignored, as the job's script setting
# says). quiesce needs root: a non-root job account needs a sudoers rule such as
#   veeam ALL=(root) NOPASSWD: /usr/sbin/quiesce freeze, /usr/sbin/quiesce thaw
# If the job also asks VMware Tools to quiesce, quiesce's backupScripts.d hook runs in
# the same backup: that second freeze joins this lock, and each thaw reports the outcome.
QUIESCE=/usr/sbin/quiesce
if [ "$(id -u)" -eq 0 ]; then
    exec "$QUIESCE" freeze </dev/null
fi
exec sudo -n "$QUIESCE" freeze </dev/null
