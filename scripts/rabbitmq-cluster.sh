#!/usr/bin/env bash
# A private three-node RabbitMQ cluster on this machine, beside (never touching) the system
# broker: its own node names, AMQP and distribution ports, data and logs under var/, sharing
# only epmd and the Erlang cookie. Quorum queues declared once the cluster is formed are
# replicated on all three nodes.
#
#   scripts/rabbitmq-cluster.sh start          # start the three nodes and join them
#   scripts/rabbitmq-cluster.sh urls           # the AMQP_URL to give clients (all three nodes)
#   scripts/rabbitmq-cluster.sh stop-node 1    # stop one node (its queues' leaders move)
#   scripts/rabbitmq-cluster.sh start-node 1   # bring it back (it rejoins by itself)
#   scripts/rabbitmq-cluster.sh status         # cluster_status of node 2
#   scripts/rabbitmq-cluster.sh stop           # stop all three; `wipe` also deletes var/
#
# Settings (environment): PVEKVM_CLUSTER_NAME (node prefix, default pvekvm_cluster),
# PVEKVM_CLUSTER_PORT (first AMQP port, default 5713; node i uses PORT+i-1 and 20000+PORT+i-1
# for Erlang distribution), PVEKVM_CLUSTER_VHOST (a vhost created on start, default /).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="${PVEKVM_CLUSTER_NAME:-pvekvm_cluster}"
PORT="${PVEKVM_CLUSTER_PORT:-5713}"
VHOST="${PVEKVM_CLUSTER_VHOST:-/}"
# Data and logs: var/rabbit-cluster/ of this checkout, or — when the nodes run as the rabbitmq
# user (started by root) and it cannot enter the checkout (a clone under a private mktemp
# directory) — a directory of that user's (PVEKVM_CLUSTER_DIR overrides both).
if [ -n "${PVEKVM_CLUSTER_DIR:-}" ]; then
  BASE="$PVEKVM_CLUSTER_DIR/$NAME"
elif [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 \
    && ! runuser -u rabbitmq -- test -x "$PWD" 2>/dev/null; then
  BASE="/var/lib/rabbitmq/pvekvm-cluster/$NAME"
else
  BASE="$PWD/var/rabbit-cluster/$NAME"
fi

node() { echo "${NAME}_$1@localhost"; }
amqp_port() { echo $((PORT + $1 - 1)); }
ctl() { local i=$1; shift; rabbitmqctl -q -n "$(node "$i")" "$@"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_node() {  # start_node I: start node I in the background (no-op when it answers)
  local i=$1; local dir="$BASE/$i" port
  port=$(amqp_port "$i")
  if port_open "$port"; then return 0; fi
  mkdir -p "$dir/mnesia" "$dir/log"
  # rabbitmq-server runs as the rabbitmq user when started by root
  if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$BASE"; fi
  echo "[]." >"$dir/enabled_plugins"
  printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users = none\n' "$port" >"$dir/rabbitmq.conf"
  : >"$dir/rabbitmq-env.conf"   # not the system's: it names the system node
  env RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
      RABBITMQ_NODENAME="$(node "$i")" RABBITMQ_NODE_PORT="$port" \
      RABBITMQ_DIST_PORT=$((20000 + port)) RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
      RABBITMQ_PID_FILE="$dir/pid" ERL_EPMD_ADDRESS=127.0.0.1 \
      ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
      setsid rabbitmq-server >"$dir/log/console.log" 2>&1 </dev/null &
}

await_node() {  # until node I's rabbit app answers (await_startup alone can return early)
  local deadline=$((SECONDS + 120))
  until rabbitmqctl -q -n "$(node "$1")" await_startup >/dev/null 2>&1 \
      && ctl "$1" list_vhosts >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "!! node $(node "$1") did not start" >&2; return 1; fi
    sleep 1
  done
}

stop_node() {  # stop node I if it runs, and wait until it has exited
  if rabbitmqctl -q -n "$(node "$1")" ping >/dev/null 2>&1; then
    timeout 120 rabbitmqctl -q -n "$(node "$1")" stop >/dev/null 2>&1 || true
  fi
  local deadline=$((SECONDS + 60))
  while port_open "$(amqp_port "$1")" && ((SECONDS < deadline)); do sleep 0.5; done
}

cmd="${1:-start}"
case "$cmd" in
  start)
    for i in 1 2 3; do start_node "$i"; done
    for i in 1 2 3; do await_node "$i"; done
    for i in 2 3; do
      if ! ctl "$i" cluster_status --formatter json | grep -q "\"$(node 1)\""; then
        { ctl "$i" stop_app && ctl "$i" reset && ctl "$i" join_cluster "$(node 1)" \
          && ctl "$i" start_app; } >/dev/null 2>&1
      fi
    done
    if [ "$VHOST" != "/" ]; then ctl 1 add_vhost "$VHOST" 2>/dev/null || true; fi
    ctl 1 set_permissions -p "$VHOST" guest ".*" ".*" ".*" >/dev/null
    ;;
  urls)
    vh=$([ "$VHOST" = "/" ] && echo "%2F" || echo "$VHOST")
    echo "amqp://guest:guest@127.0.0.1:$(amqp_port 1)/$vh,amqp://guest:guest@127.0.0.1:$(amqp_port 2)/$vh,amqp://guest:guest@127.0.0.1:$(amqp_port 3)/$vh"
    ;;
  stop-node) stop_node "$2" ;;
  start-node) start_node "$2"; await_node "$2" ;;
  status) ctl 2 cluster_status ;;
  stop|wipe)
    for i in 1 2 3; do stop_node "$i" & done
    wait
    if [ "$cmd" = wipe ]; then rm -rf "$BASE"; fi
    ;;
  *) echo "usage: $0 start|urls|stop-node I|start-node I|status|stop|wipe" >&2; exit 2 ;;
esac
