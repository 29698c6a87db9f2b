#!/bin/sh
# Entrypoint of the gateway image (docker/gateway.Dockerfile): prepare the data directory, then run the command
# (CMD: spcs-whisper gateway) as the image's user, uid/gid 1000, never as root.
#
# In SPCS the data directory ($SPCS_WHISPER_DATA_DIR=/data) is the gateway's block volume (spec/gateway.yaml), whose
# root directory is typically owned by root, and a block volume takes no uid/gid in the service specification (those
# fields are for stage volumes only):
#   https://docs.snowflake.com/en/developer-guide/snowpark-container-services/specification-reference
#   https://docs.snowflake.com/en/developer-guide/snowpark-container-services/block-storage-volume
# The gateway keeps its job queue (jobs.sqlite3, with the Snowflake export marks) and the uploaded audio (blobs/)
# there, so the image starts as root and this script
#   - as root: creates the directory when missing, hands it to 1000:1000 when uid 1000 could not write it, and hands
#     over what a root process left inside (lost+found excepted), then drops to 1000:1000 with setpriv (util-linux,
#     in every Debian image) and execs the command;
#   - as any other user (docker run --user 1000, a platform's fixed user): execs the command when that user can
#     write the directory, and stops with a message when it cannot.
# tests/unit/test_rule_image_user.py runs this script against a root-owned directory.
set -eu

data_dir=${SPCS_WHISPER_DATA_DIR:-/data}

fail() {
    echo "gateway-entrypoint: $*" >&2
    exit 1
}

if [ "$#" -eq 0 ]; then
    fail "no command to run (the image's CMD is: spcs-whisper gateway)"
fi

if [ "$(id -u)" != 0 ]; then
    mkdir -p "$data_dir" 2>/dev/null || true
    if [ ! -d "$data_dir" ] || [ ! -w "$data_dir" ] || [ ! -x "$data_dir" ]; then
        fail "$data_dir is not writable by uid $(id -u); start the container as root (the image's default), so this" \
            "script can hand it to uid 1000, or make it writable for uid $(id -u)"
    fi
    exec "$@"
fi

mkdir -p "$data_dir" || fail "cannot create $data_dir"
if ! setpriv --reuid=1000 --regid=1000 --init-groups -- sh -c 'test -w "$1" && test -x "$1"' sh "$data_dir"; then
    chown 1000:1000 "$data_dir" || fail "cannot hand $data_dir to uid 1000 (chown failed)"
    chmod u+rwx "$data_dir" || fail "cannot make $data_dir writable for uid 1000 (chmod failed)"
fi
find "$data_dir" -xdev -path "$data_dir/lost+found" -prune -o ! -user 1000 -exec chown -h 1000:1000 {} + \
    || fail "cannot hand the files in $data_dir to uid 1000 (chown failed)"

home=$(getent passwd 1000 | cut -d: -f6)
if [ -n "$home" ]; then
    export HOME="$home"
fi
exec setpriv --reuid=1000 --regid=1000 --init-groups -- "$@"
