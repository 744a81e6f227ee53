# Shared shell helpers for scripts/test and scripts/demo. Source, don't run.
# Starts the local services the project needs when they are down and waits until they answer.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # wait_port PORT NAME [SECONDS]
  local deadline=$((SECONDS + ${3:-90}))
  until port_open "$1"; do
    if ((SECONDS > deadline)); then echo "!! $2 did not answer on port $1" >&2; return 1; fi
    sleep 0.5
  done
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    echo ">> starting RabbitMQ"
    rabbitmq-server -detached
  fi
  wait_port 5672 RabbitMQ 120
  rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  if ! port_open 15672; then
    echo ">> enabling the RabbitMQ management plugin (console on :15672)"
    rabbitmq-plugins -q enable rabbitmq_management >/dev/null
    wait_port 15672 "RabbitMQ management" 60 || true
  fi
}

ensure_mariadb() {
  if ! port_open 3306; then
    echo ">> starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  fi
  wait_port 3306 MariaDB 60
  local deadline=$((SECONDS + 60))
  until mysql -uroot -h127.0.0.1 -e 'SELECT 1' >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "!! MariaDB refuses connections" >&2; return 1; fi
    sleep 0.5
  done
}

# Debian packages the tests use beyond the services: the browser console test (chromium,
# chromium-driver, novnc), the RFC 2136 DNS test (bind9), the WHMCS module's tests (php-cli,
# php-curl, phpunit; smarty3 renders its client-area template), the Galera cluster (galera-4,
# rsync, mariadb-backup). Installed when missing; when apt cannot (no root, no mirror) the
# tests that need one skip naming it.
TEST_PACKAGES=(chromium chromium-driver novnc bind9 bind9-utils php-cli php-curl php-mbstring
  phpunit smarty3 galera-4 rsync mariadb-backup)

ensure_packages() {  # ensure_packages PACKAGE...  (installs the missing ones; never fails)
  local missing=() p log
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo ">> installing Debian packages: ${missing[*]}"
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 </dev/null; then
    echo "!! installing ${missing[*]} failed (the tests that need them skip):" >&2
    tail -n 10 "$log" >&2
  fi
  rm -f "$log"
}

ensure_services() {
  ensure_rabbitmq
  ensure_mariadb
  if [ -f scripts/pdns.sh ]; then bash scripts/pdns.sh; fi
}

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv"
    python3 -m venv .venv
  fi
  local stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
  if [ ! -f "$stamp" ]; then
    echo ">> installing pvekvm into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
  fi
}

fresh_database() {  # fresh_database NAME
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$1\`; CREATE DATABASE \`$1\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
}

ensure_vhost() {  # ensure_vhost NAME
  rabbitmqctl -q add_vhost "$1" >/dev/null 2>&1 || true
  rabbitmqctl -q set_permissions -p "$1" guest '.*' '.*' '.*' >/dev/null
}
