# Sourced by .ci/run: start a private PostgreSQL on 127.0.0.1 and export its URL.
# Leaves ALIGNKIT_TEST_PG_URL unset (PostgreSQL tests skip) when no server is installed.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -n "$pg_bin" ]; then
  pg_dir=$(mktemp -d /tmp/alignkit-pg.XXXXXX)
  chown postgres "$pg_dir" 2>/dev/null || true
  as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
  as_pg "$pg_bin/initdb -D $pg_dir/data -A trust -U postgres >/dev/null"
  as_pg "$pg_bin/pg_ctl -D $pg_dir/data -o '-c listen_addresses=127.0.0.1 -p 54329 -k $pg_dir' -l $pg_dir/log -w start >/dev/null"
  export ALIGNKIT_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:54329/postgres"
fi
