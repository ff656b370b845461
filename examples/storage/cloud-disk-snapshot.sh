#!/bin/sh
# A cloud disk snapshot taken by a CLI, with the filesystems that hold the server's files
# frozen while it runs (--freeze-fs). The command must return as soon as the snapshot's
# point in time is fixed (the provider's documentation says when; aws ec2
# create-snapshots returns then), or the filesystems stay frozen until it does.
#   cloud-disk-snapshot.sh aws ec2 create-snapshots --instance-specification InstanceId=i-0123456789abcdef0
set -eu
[ $# -gt 0 ] || { echo "usage: $0 SNAPSHOT-COMMAND [ARGS...]" >&2; exit 2; }
exec quiesce run --caller cloud --freeze-fs -- "$@"
