#!/usr/bin/env bash
# A throwaway PostgreSQL server for the sweep tests: `start DIR` prints its URL, `stop DIR` removes it.
#
# The cluster lives in DIR (created, owned by the server's user), listens on 127.0.0.1 on a free port and on a
# unix socket in DIR, and trusts local connections. PostgreSQL refuses to run as root, so as root the server runs
# as the unprivileged user litpg (created if absent).
set -euo pipefail

command=${1:-}
dir=${2:-}
if [ -z "$command" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$bin" ] || bin=$(dirname "$(command -v initdb || echo /nonexistent/initdb)")
if [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "postgres.sh: no initdb/pg_ctl (install Debian's postgresql)" >&2
  exit 1
fi

as_server() {
  if [ "$(id -u)" = 0 ]; then
    su litpg -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

case "$command" in
start)
  if [ "$(id -u)" = 0 ] && ! id litpg >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin litpg
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown litpg "$dir"
  chmod 700 "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  user=$(as_server id -un)
  as_server "$bin/initdb" -D "$dir/data" -U "$user" --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  options="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
  as_server "$bin/pg_ctl" -D "$dir/data" -o "$options" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  as_server "$bin/createdb" -h "$dir" -p "$port" -U "$user" lit_interp
  echo "postgresql+psycopg://$user@127.0.0.1:$port/lit_interp"
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_server "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
