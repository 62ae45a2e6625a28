#!/bin/sh
# Runs postgres_spec.lua against a throwaway PostgreSQL server reached through psqlODBC:
# initdb in a temporary directory, scram-sha-256 password login, loopback only, a free
# port; the server is stopped and the directory removed however the test ends.
#
#   run_postgres.sh /path/to/rtbackup
#
# Exit 77 (skipped) when the PostgreSQL server binaries or the psqlODBC driver are not
# installed. Runs as root too: the server then runs as the "postgres" (else "nobody") user.
set -eu

RTBACKUP=${1:?usage: run_postgres.sh RTBACKUP_BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)
SOURCE=$(cd "$HERE/../../.." && pwd)
DRIVER="PostgreSQL Unicode"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    echo "skipped: no PostgreSQL server binaries (Debian package postgresql)"
    exit 77
fi
if ! odbcinst -q -d -n "$DRIVER" >/dev/null 2>&1; then
    echo "skipped: ODBC driver '$DRIVER' is not registered (Debian package odbc-postgresql)"
    exit 77
fi

WORK=$(mktemp -d /tmp/rtb-pg.XXXXXX)
AS=""
if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root.
    if id postgres >/dev/null 2>&1; then USER_NAME=postgres; else USER_NAME=nobody; fi
    chown "$USER_NAME" "$WORK"
    AS="runuser -u $USER_NAME --"
fi

cleanup() {
    $AS "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        2>/dev/null || shuf -i 20000-60000 -n 1
}

# The administrator's password only ever sits in a file of the temporary directory.
ADMIN_PASSWORD="admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$ADMIN_PASSWORD" > "$WORK/pwfile"
chmod 644 "$WORK/pwfile"
$AS "$PGBIN/initdb" -D "$WORK/data" -U admin --auth=scram-sha-256 --pwfile="$WORK/pwfile" \
    -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log"; exit 1; }

PORT=$(free_port)
# %e puts each log line's SQLSTATE first, so the spec can read why a login was refused.
$AS "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w -t 30 \
    -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c log_line_prefix='%e '" start >/dev/null

# The role the tests log in as; its password has every character that breaks an
# unquoted connection string.
TEST_PASSWORD='s3cr;et}pa{ss=wörd'
PGPASSWORD=$ADMIN_PASSWORD "$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U admin -d postgres \
    -v ON_ERROR_STOP=1 -v pw="$TEST_PASSWORD" <<'SQL'
CREATE ROLE rtb_test LOGIN PASSWORD :'pw';
CREATE DATABASE mosaiq OWNER rtb_test ENCODING 'UTF8';
SQL

# The drivers as registered, but without psqlODBC's communication log (Debian turns it
# on, and it would leave a file in /tmp for every connection).
INST=$(odbcinst -j | sed -n 's/^DRIVERS\.*: //p')
sed 's/^CommLog=1/CommLog=0/' "$INST" > "$WORK/odbcinst.ini"
export ODBCSYSINI="$WORK"

# A port where nothing listens: the server-down case.
DOWN_PORT=$(free_port)

cd "$SOURCE"
RTB_PG_PORT=$PORT RTB_PG_DOWN_PORT=$DOWN_PORT RTB_PG_PASSWORD=$TEST_PASSWORD \
RTB_PG_LOG="$WORK/server.log" RTB_PG_DRIVER="$DRIVER" \
    "$RTBACKUP" run "$SOURCE/tests/spec/run_specs.lua" --output=TAP "$HERE/postgres_spec.lua"
