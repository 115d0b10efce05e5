# Sourced by .ci/run: start a private PostgreSQL on 127.0.0.1 and export its URL.
# Leaves ALIGNKIT_TEST_PG_URL unset (PostgreSQL tests skip) when no server is installed or
# it cannot start; reuses a server already listening on the port (a second run). Written
# to be sourced under `set -euo pipefail`: no command here may fail the caller.
# Stop it with: pg_ctl -D "$ALIGNKIT_PG_DIR/data" stop (as the postgres user when root).
alignkit_pg_port=54329
alignkit_pg_url="postgresql+psycopg://postgres@127.0.0.1:${alignkit_pg_port}/postgres"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ]; then
  if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$alignkit_pg_port" 2>/dev/null; then
    export ALIGNKIT_TEST_PG_URL="$alignkit_pg_url"
  else
    pg_dir=$(mktemp -d /tmp/alignkit-pg.XXXXXX)
    chown postgres "$pg_dir" 2>/dev/null || true
    as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
    if as_pg "$pg_bin/initdb -D $pg_dir/data -A trust -U postgres >/dev/null" &&
       as_pg "$pg_bin/pg_ctl -D $pg_dir/data -o '-c listen_addresses=127.0.0.1 -p $alignkit_pg_port -k $pg_dir' -l $pg_dir/log -w start >/dev/null"; then
      export ALIGNKIT_TEST_PG_URL="$alignkit_pg_url"
      export ALIGNKIT_PG_DIR="$pg_dir"
    else
      echo "start_postgres.sh: PostgreSQL did not start (see $pg_dir/log); its tests will skip" >&2
    fi
  fi
fi
