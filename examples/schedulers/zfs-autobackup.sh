#!/bin/sh
# zfs-autobackup with quiesce holding the lock while it snapshots. It runs every
# --pre-snapshot-cmd in order (split into words like a shell line, each word quoted), then
# one atomic "zfs snapshot" per pool for all selected datasets, then every
# --post-snapshot-cmd, also when a pre command or the snapshot failed (a thaw with nothing
# frozen does nothing). A failed pre command means no snapshot. The exit status of the post
# commands is ignored: quiesce's history, metrics and alert rules say when a lock was lost
# (docs/monitoring.md).
# Select the datasets with: zfs set autobackup:mysql=true tank/mysql
#   zfs-autobackup.sh [OPTIONS...] BACKUP_NAME [TARGET_PATH]
#   e.g. zfs-autobackup.sh --ssh-target backup1 mysql backup1/tank
# With --ssh-source, the commands run on the source host over ssh: install quiesce there.
# One freeze locks every server quiesce.conf configures ([instance:NAME] sections).
set -eu
exec zfs-autobackup \
    --pre-snapshot-cmd '/usr/sbin/quiesce freeze --caller zfs-autobackup' \
    --post-snapshot-cmd '/usr/sbin/quiesce thaw --caller zfs-autobackup' \
    "$@"
