#!/bin/sh
# First start: the sqlite3 database from the packaged schema. PDNS_AUTH_API_KEY: API on.
set -e
db=/var/lib/powerdns/pdns.sqlite3
if [ ! -s "$db" ]; then
  sqlite3 "$db.tmp" </usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql
  mv "$db.tmp" "$db"
fi
chown -R pdns:pdns /var/lib/powerdns /run/pdns
if [ -n "${PDNS_AUTH_API_KEY:-}" ]; then
  printf 'api=yes\napi-key=%s\nwebserver=yes\nwebserver-address=0.0.0.0\nwebserver-allow-from=0.0.0.0/0\n' \
    "$PDNS_AUTH_API_KEY" >/etc/powerdns/pdns.d/api.conf
fi
exec /usr/sbin/pdns_server --setuid=pdns --setgid=pdns "$@"
