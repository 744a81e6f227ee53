#!/usr/bin/env bash
# A project-local PowerDNS authoritative server for the DNS tests: sqlite3 backend, HTTP API.
# Idempotent: installs the Debian packages when pdns_server is missing, creates ./var/pdns (config,
# database from the packaged schema) when absent, starts the server when its API does not answer,
# and waits until it does. The distro's own instance (port 53, /etc/powerdns) is never started or
# used: ours reads only var/pdns/pdns.conf.
# Environment: PDNS_API_PORT (8081), PDNS_DNS_PORT (5354), PDNS_API_KEY (pvekvm-test-key).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="$(pwd)/var/pdns"
API_PORT="${PDNS_API_PORT:-8081}"
DNS_PORT="${PDNS_DNS_PORT:-5354}"
API_KEY="${PDNS_API_KEY:-pvekvm-test-key}"
did=()

api_answers() {  # 0 when our API answers with our key and its database answers (zone list)
  python3 - "$API_PORT" "$API_KEY" <<'EOF' 2>/dev/null
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/v1/servers/localhost/zones",
                             headers={"X-API-Key": sys.argv[2]})
with urllib.request.urlopen(req, timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

stop_stale() {  # a test instance of ours whose database is gone (its checkout was deleted)
  local pid dir deadline
  for pid in $(pgrep -x pdns_server); do
    dir="$(tr '\0' ' ' </proc/"$pid"/cmdline | sed -n 's/.*--config-dir=\([^ ]*\).*/\1/p')"
    case "$dir" in
      */var/pdns)
        if [ ! -s "$dir/pdns.sqlite3" ] && kill "$pid"; then
          did+=("stopped PowerDNS $pid: $dir is gone")
        fi ;;
    esac
  done
  deadline=$((SECONDS + 10))
  while (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2  # poll interval while the stopped server lets go of its port
  done
}

if ! command -v pdns_server >/dev/null 2>&1 && [ ! -x /usr/sbin/pdns_server ]; then
  # No init system here: forbid the package scripts from starting the distro's service.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      pdns-server pdns-backend-sqlite3 sqlite3; } >"$log" 2>&1 </dev/null; then
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    echo "!! pdns.sh: installing PowerDNS failed:" >&2
    tail -n 30 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  did+=("installed pdns-server")
fi
PDNS_SERVER="$(command -v pdns_server || echo /usr/sbin/pdns_server)"

mkdir -p "$DIR"
if [ ! -s "$DIR/pdns.sqlite3" ]; then
  schema=""
  for f in /usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql \
           /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql \
           /usr/share/dbconfig-common/data/pdns-backend-sqlite3/install/sqlite3; do
    if [ -f "$f" ]; then schema="$f"; break; fi
  done
  if [ -z "$schema" ]; then
    schema="$(find /usr/share -name 'schema.sqlite3.sql*' 2>/dev/null | head -n1)"
  fi
  if [ -z "$schema" ]; then echo "!! pdns.sh: no sqlite3 schema found" >&2; exit 1; fi
  rm -f "$DIR/pdns.sqlite3.tmp"
  case "$schema" in
    *.gz) zcat "$schema" | sqlite3 "$DIR/pdns.sqlite3.tmp" ;;
    *) sqlite3 "$DIR/pdns.sqlite3.tmp" <"$schema" ;;
  esac
  mv "$DIR/pdns.sqlite3.tmp" "$DIR/pdns.sqlite3"
  did+=("created $DIR/pdns.sqlite3")
fi

cat >"$DIR/pdns.conf.new" <<EOF
# Written by scripts/pdns.sh: test instance, loopback only.
launch=gsqlite3
gsqlite3-database=$DIR/pdns.sqlite3
local-address=127.0.0.1
local-port=$DNS_PORT
socket-dir=$DIR
guardian=no
daemon=no
disable-syslog=yes
loglevel=4
api=yes
api-key=$API_KEY
webserver=yes
webserver-address=127.0.0.1
webserver-port=$API_PORT
webserver-allow-from=127.0.0.0/8
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
zone-cache-refresh-interval=0
security-poll-suffix=
default-soa-content=ns1.pvekvm.test. hostmaster.@ 0 10800 3600 604800 3600
EOF
if ! cmp -s "$DIR/pdns.conf.new" "$DIR/pdns.conf"; then
  mv "$DIR/pdns.conf.new" "$DIR/pdns.conf"
else
  rm -f "$DIR/pdns.conf.new"
fi

if ! api_answers; then
  stop_stale
fi
if api_answers; then
  did+=("PowerDNS already answering")
else
  if (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null; then
    echo "!! pdns.sh: port $API_PORT is taken by something that is not our PowerDNS" >&2
    exit 1
  fi
  setsid nohup "$PDNS_SERVER" --config-dir="$DIR" >>"$DIR/pdns.log" 2>&1 </dev/null &
  echo $! >"$DIR/pdns.pid"
  deadline=$((SECONDS + 30))
  until api_answers; do
    if ((SECONDS > deadline)) || ! kill -0 "$(cat "$DIR/pdns.pid")" 2>/dev/null; then
      echo "!! pdns.sh: PowerDNS did not come up; last log lines:" >&2
      tail -n 20 "$DIR/pdns.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  did+=("started PowerDNS (pid $(cat "$DIR/pdns.pid"))")
fi

IFS=","
echo ">> pdns: ${did[*]}; API http://127.0.0.1:$API_PORT, DNS 127.0.0.1:$DNS_PORT"
