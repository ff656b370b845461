#!/bin/sh
# Veeam Backup & Replication, Linux VM job: Guest Processing > Scripts > pre-freeze.
# Veeam uploads this file to /tmp and runs it over SSH with no arguments, as the job's
# account; a non-zero exit fails the job (or is ignored, as the job's script setting
# says). quiesce needs root: a non-root job account needs a sudoers rule such as
#   veeam ALL=(root) NOPASSWD: /usr/sbin/quiesce freeze --caller veeam, /usr/sbin/quiesce thaw --caller veeam
# If the job also asks VMware Tools to quiesce, quiesce's backupScripts.d hook runs in
# the same backup: that second freeze joins this lock, and the last thaw releases it.
# --caller veeam tells this script's freeze and thaw apart from VMware Tools' (and from an
# administrator's, since Veeam too logs in over SSH).
QUIESCE=/usr/sbin/quiesce
if [ "$(id -u)" -eq 0 ]; then
    exec "$QUIESCE" freeze --caller veeam </dev/null
fi
exec sudo -n "$QUIESCE" freeze --caller veeam </dev/null
