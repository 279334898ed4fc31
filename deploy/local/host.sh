#!/bin/sh
# Runs inside a host's network namespace and private mount namespace (see cluster.sh): makes the host's own
# directory the only one it sees, then becomes the service. Arguments: CLUSTER_DIR HOST REPO COMMAND...
set -eu
cluster_dir="$1" host="$2" repo="$3"
shift 3
hostname "$host"
case "$repo/ $cluster_dir/" in
  /tmp/*|*" /tmp/"*)
    # The checkout (or the cluster's folder) lives under /tmp, which a fresh /tmp would hide: the host keeps the
    # machine's /tmp and gets a temp folder of its own inside its own directory instead.
    mkdir -p "$cluster_dir/hosts/$host/tmp"
    export TMPDIR="$cluster_dir/host/tmp" ;;
  *) mount -t tmpfs -o size=512m,mode=1777 tmp /tmp ;;
esac
# Its own folder at the common path, read-write; then the repository (the "image") read-only around it.
mount --bind "$cluster_dir/hosts/$host" "$cluster_dir/host"
mount --rbind "$repo" "$repo"
mount -o remount,bind,ro "$repo"
mount -t tmpfs -o size=1m,mode=000 hidden "$cluster_dir/hosts"
mount -t tmpfs -o size=1m,mode=000 hidden "$cluster_dir/admin"
cd "$cluster_dir/host"
exec "$@"
