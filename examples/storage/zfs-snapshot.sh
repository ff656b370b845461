#!/bin/sh
# A ZFS snapshot of the dataset(s) that hold the MySQL/MariaDB datadir and logs, taken
# while quiesce holds the lock. zfs snapshot -r is atomic across the datasets below the
# one named; ZFS cannot be frozen, so no --freeze-fs.
#   zfs-snapshot.sh tank/mysql
set -eu
dataset=${1:?usage: $0 POOL/DATASET}
exec quiesce run --caller zfs -- zfs snapshot -r "$dataset@quiesce-$(date -u +%Y%m%dT%H%M%SZ)"
