#!/bin/sh
# A read-only btrfs snapshot of the subvolume that holds the MySQL/MariaDB datadir, taken
# while quiesce holds the lock; the position file (quiesce.conf: position-file) belongs in
# that subvolume too, so that the snapshot holds its own coordinates.
#   btrfs-snapshot.sh /srv/mysql /srv/.snapshots
# A btrfs snapshot is atomic: no --freeze-fs (it would wait for the thaw).
set -eu
subvolume=${1:?usage: $0 SUBVOLUME SNAPSHOT_DIR}
snapshots=${2:?usage: $0 SUBVOLUME SNAPSHOT_DIR}
name=$(date -u +%Y%m%dT%H%M%SZ)
exec quiesce run --caller btrfs -- btrfs subvolume snapshot -r "$subvolume" "$snapshots/$name"
