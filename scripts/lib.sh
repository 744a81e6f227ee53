# Shared shell helpers for scripts/test and scripts/demo. Source, don't run.
# Starts the local services the project needs when they are down and waits until they answer;
# on a Debian machine without them, installs RabbitMQ (management plugin enabled below) and
# MariaDB from Debian's packages first, as scripts/pdns.sh does for PowerDNS.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # wait_port PORT NAME [SECONDS]
  local deadline=$((SECONDS + ${3:-90}))
  until port_open "$1"; do
    if ((SECONDS > deadline)); then echo "!! $2 did not answer on port $1" >&2; return 1; fi
    sleep 0.5
  done
}

install_service_packages() {  # install_service_packages PACKAGE...  (fails with the log's tail)
  # No init system here: the packages' scripts must not start the distro's services (we start
  # them ourselves, below), so a policy-rc.d forbids it for the time of the install.
  local made_policy="" log
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  echo ">> installing Debian packages: $*"
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "$@"; } >"$log" 2>&1 </dev/null; then
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    echo "!! installing $* failed:" >&2
    tail -n 20 "$log" >&2
    rm -f "$log"
    return 1
  fi
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  rm -f "$log"
}

ensure_rabbitmq() {
  if ! port_open 5672 && ! command -v rabbitmq-server >/dev/null 2>&1 \
      && [ ! -x /usr/sbin/rabbitmq-server ]; then
    install_service_packages rabbitmq-server || return 1
  fi
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

mariadb_trial_root() {
  # Debian's root@localhost logs in over the Unix socket only; the project's settings connect
  # as root without a password over 127.0.0.1 (a test and trial machine; a deployment makes its
  # own users: README "Least-privilege users"). Run only on the server installed just now.
  echo ">> MariaDB installed: root may log in from 127.0.0.1 without a password (as the" \
       "example settings expect; see README for production users)"
  mysql -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
    ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password
      USING PASSWORD('');"
}

ensure_mariadb() {
  local fresh=""
  if ! port_open 3306 && [ ! -x /usr/sbin/mariadbd ]; then
    install_service_packages mariadb-server mariadb-client || return 1
    fresh=1
  fi
  if ! port_open 3306; then
    echo ">> starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  fi
  wait_port 3306 MariaDB 60
  if [ -n "$fresh" ]; then mariadb_trial_root || return 1; fi
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
