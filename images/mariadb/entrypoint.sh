#!/bin/bash
# First start: system tables, root account as the MARIADB_* variables say, the database, then
# /docker-entrypoint-initdb.d/*.sql into it (on a server without networking); then the real server.
set -euo pipefail
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- mariadbd "$@"; fi
if [ "$1" != mariadbd ]; then exec "$@"; fi
DATA=/var/lib/mysql
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld "$DATA"
if [ ! -e "$DATA/.initialised" ]; then
  if [ -z "${MARIADB_ROOT_PASSWORD:-}" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" ]; then
    echo "set MARIADB_ROOT_PASSWORD or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1" >&2; exit 1
  fi
  mariadb-install-db --user=mysql --datadir="$DATA" --skip-test-db \
    --auth-root-authentication-method=normal >/dev/null
  sock=/run/mysqld/init.sock
  "$@" --user=mysql --skip-networking --socket="$sock" &
  pid=$!
  for _ in $(seq 1 300); do
    mariadb-admin --socket="$sock" -uroot ping >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "mariadbd died during initialisation" >&2; exit 1; }
    sleep 0.1
  done
  pw=${MARIADB_ROOT_PASSWORD:-}
  {
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    echo "DELETE FROM mysql.user WHERE user = '';"
    echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '${pw//\'/\'\'}';"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '${pw//\'/\'\'}';"
    if [ -n "${MARIADB_DATABASE:-}" ]; then
      echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    fi
  } | mariadb --socket="$sock" -uroot
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] || continue
    echo "initdb: $f"
    mariadb --socket="$sock" -uroot --password="$pw" ${MARIADB_DATABASE:+"$MARIADB_DATABASE"} <"$f"
  done
  mariadb-admin --socket="$sock" -uroot --password="$pw" shutdown
  wait "$pid" || true
  touch "$DATA/.initialised"
fi
exec "$@" --user=mysql
