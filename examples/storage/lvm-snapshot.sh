#!/bin/sh
# An LVM snapshot of the logical volume that holds the MySQL/MariaDB datadir, taken while
# quiesce holds the lock. lvcreate suspends the volume itself, which freezes the
# filesystem on it: no --freeze-fs (it would wait for the thaw).
#   lvm-snapshot.sh vg0/mysql 10G
set -eu
volume=${1:?usage: $0 VG/LV SIZE}
size=${2:?usage: $0 VG/LV SIZE}
name=$(basename "$volume")-$(date -u +%Y%m%dT%H%M%SZ)
exec quiesce run --caller lvm -- lvcreate --snapshot --size "$size" --name "$name" "$volume"
