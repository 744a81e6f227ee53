#!/usr/bin/env bash
# A private three-node MariaDB Galera cluster on this machine, beside (never touching) the
# system server: three `mariadbd` processes with their own option files, data directories,
# sockets and ports, the galera-4 provider, rsync state transfer (SST) for a node that joins
# empty and incremental transfer (IST) from the gcache for one that was briefly away.
#
#   scripts/galera-cluster.sh start          # start the three nodes (bootstrapping safely)
#   scripts/galera-cluster.sh urls           # the DATABASE_URL to give clients (all three nodes)
#   scripts/galera-cluster.sh dir            # the directory holding each node's data and logs
#   scripts/galera-cluster.sh stop-node 1    # clean shutdown of one node (the others go on)
#   scripts/galera-cluster.sh kill-node 1    # SIGKILL one node (a crash)
#   scripts/galera-cluster.sh pause-node 1   # SIGSTOP one node (a hang: its sockets stay open)
#   scripts/galera-cluster.sh resume-node 1  # SIGCONT it: it finds itself evicted and rejoins
#   scripts/galera-cluster.sh start-node 1   # bring it back: it rejoins (IST, else SST)
#   scripts/galera-cluster.sh wipe-node 3    # stop it and delete its data (it joins by SST)
#   scripts/galera-cluster.sh status         # each node's wsrep state, cluster size, seqno
#   scripts/galera-cluster.sh stop           # stop all three; `wipe` also deletes their data
#
# Safe bootstrap (Galera's rule): a new cluster is started (--wsrep-new-cluster) only when no
# node runs, and only from the node whose grastate.dat says `safe_to_bootstrap: 1` (the last
# to leave a cleanly stopped cluster). When every node crashed none says so: each node's last
# committed position is recovered (`mariadbd --wsrep-recover`), the most advanced one is
# marked safe and bootstraps; the others join it. A node started while another runs joins.
#
# Settings (environment): PVEKVM_GALERA_NAME (cluster name and data directory, default
# pvekvm_galera), PVEKVM_GALERA_PORT (base port P, default 22100: node i listens for SQL on
# P+i, group communication on P+10+i, IST on P+20+i, SST on P+30+i), PVEKVM_GALERA_DATABASE
# (the database `urls` names, default pvekvm), PVEKVM_GALERA_DIR (where the data goes, default
# var/galera/ of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="${PVEKVM_GALERA_NAME:-pvekvm_galera}"
PORT="${PVEKVM_GALERA_PORT:-22100}"
DATABASE="${PVEKVM_GALERA_DATABASE:-pvekvm}"
# Started by root, the servers run as the mysql user (the rsync daemon of a state transfer
# drops root's rights to nobody otherwise); when that user cannot enter the checkout (a clone
# under a private temp directory) the data goes to a directory of its own.
RUN_AS=""
if [ "$(id -u)" = 0 ]; then RUN_AS=$(id mysql >/dev/null 2>&1 && echo mysql || echo root); fi
if [ -n "${PVEKVM_GALERA_DIR:-}" ]; then
  BASE="$PVEKVM_GALERA_DIR/$NAME"
elif [ "$RUN_AS" = mysql ] && ! runuser -u mysql -- test -x "$PWD" 2>/dev/null; then
  BASE="/var/tmp/pvekvm-galera/$NAME"
else
  BASE="$PWD/var/galera/$NAME"
fi
PROVIDER=/usr/lib/galera/libgalera_smm.so
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

sql_port() { echo $((PORT + $1)); }
gcomm_port() { echo $((PORT + 10 + $1)); }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
sql() {  # sql I STATEMENT: one value from node I (empty when it does not answer)
  mariadb --no-defaults -h127.0.0.1 -P"$(sql_port "$1")" -uroot -N -B --connect-timeout=2 \
    -e "$2" 2>/dev/null || true
}
state() { sql "$1" "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='wsrep_local_state_comment'"; }
pid_of() { cat "$BASE/$1/launched.pid" 2>/dev/null || true; }  # the mariadbd we started
ours() {  # ours PID I: PID is node I's mariadbd (not another process that got its number since)
  [ -n "$1" ] && { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -q -- "--defaults-file=$BASE/$2/my.cnf"
}
running() { ours "$(pid_of "$1")" "$1"; }

write_config() {  # the node's own option file (the server reads no other: --defaults-file)
  local i=$1 dir="$BASE/$1"
  mkdir -p "$dir/data"
  cat >"$dir/my.cnf" <<EOF
[mysqld]
datadir=$dir/data
socket=$dir/sock
pid-file=$dir/pid
log-error=$dir/error.log
port=$(sql_port "$i")
bind-address=127.0.0.1
skip-name-resolve
$( [ -n "$RUN_AS" ] && echo "user=$RUN_AS" )
# small: three nodes share two cores with everything else
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_log_buffer_size=8M
key_buffer_size=8M
performance_schema=OFF
max_connections=400
# Galera's requirements: row events, InnoDB, interleaved auto-increment locks
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
# Galera needs a primary key on every table (rows are certified and applied by key)
innodb_force_primary_key=ON
# durability comes from the other nodes holding each commit: flush once a second, as
# Galera's documentation suggests (a node that crashed rejoins by IST/SST)
innodb_flush_log_at_trx_commit=2
wsrep_on=ON
wsrep_provider=$PROVIDER
wsrep_cluster_name=$NAME
wsrep_cluster_address=gcomm://127.0.0.1:$(gcomm_port 1),127.0.0.1:$(gcomm_port 2),127.0.0.1:$(gcomm_port 3)
wsrep_node_name=node$i
wsrep_node_address=127.0.0.1:$(gcomm_port "$i")
wsrep_node_incoming_address=127.0.0.1:$(sql_port "$i")
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:$(gcomm_port "$i");ist.recv_addr=127.0.0.1:$((PORT + 20 + i));gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S;evs.install_timeout=PT6S"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$((PORT + 30 + i))
wsrep_slave_threads=2
EOF
}

launch() {  # launch I [extra options]: start node I's mariadbd in the background
  local i=$1 pos; shift
  pos=$(start_position "$i")
  write_config "$i"
  if [ ! -d "$BASE/$i/data/mysql" ] && [ "$*" = "--wsrep-new-cluster" ]; then
    mariadb-install-db --no-defaults --datadir="$BASE/$i/data" --skip-test-db \
      --auth-root-authentication-method=normal $( [ -n "$RUN_AS" ] && echo "--user=$RUN_AS" ) \
      >"$BASE/$i/install.log" 2>&1
  fi
  if [ "$RUN_AS" = mysql ]; then chown -R mysql:mysql "$BASE/$i"; fi
  setsid "$MARIADBD" --defaults-file="$BASE/$i/my.cnf" $pos "$@" >>"$BASE/$i/console.log" 2>&1 </dev/null &
  echo $! >"$BASE/$i/launched.pid"
}

await_synced() {  # until node I answers SQL and says Synced
  local i=$1 deadline=$((SECONDS + ${2:-180}))
  until [ "$(state "$i")" = Synced ]; do
    if ! running "$i"; then
      echo "!! galera node $i exited: $(tail -5 "$BASE/$i/error.log" 2>/dev/null)" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then echo "!! galera node $i did not sync" >&2; return 1; fi
    sleep 0.5
  done
}

any_primary() {  # the index of a running node that is in the primary component (or nothing)
  local i
  for i in 1 2 3; do
    if running "$i" && [ "$(sql "$i" "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='wsrep_cluster_status'")" = Primary ]; then
      echo "$i"; return 0
    fi
  done
}

safe_node() {  # the node whose grastate.dat says safe_to_bootstrap: 1 (or nothing)
  local i
  for i in 1 2 3; do
    if grep -qs '^safe_to_bootstrap: *1' "$BASE/$i/data/grastate.dat"; then echo "$i"; return 0; fi
  done
}

recovered_position() {  # uuid:seqno last committed by stopped node I (mariadbd --wsrep-recover)
  local i=$1 line
  write_config "$i"
  if [ "$RUN_AS" = mysql ]; then chown -R mysql:mysql "$BASE/$i"; fi
  rm -f "$BASE/$i/recover.log"
  "$MARIADBD" --defaults-file="$BASE/$i/my.cnf" --wsrep-recover --log-error="$BASE/$i/recover.log" \
    >/dev/null 2>&1 || true
  line=$(grep -o 'WSREP: Recovered position: [^ ]*' "$BASE/$i/recover.log" | tail -1 || true)
  echo "${line#*position: }"
}

start_position() {  # the option a crashed node I starts with (what systemd's galera_recovery does):
  # its grastate.dat says seqno -1, so its position is read back from InnoDB; it then rejoins
  # by IST (or bootstraps the same cluster history, not a new one)
  local pos
  if grep -qs '^seqno: *-1' "$BASE/$1/data/grastate.dat" && [ -d "$BASE/$1/data/mysql" ]; then
    pos=$(recovered_position "$1")
    if [ -n "$pos" ]; then echo "--wsrep_start_position=$pos"; fi
  fi
}

bootstrap_node() {  # which node may start a new cluster (none running): see the rule above
  local i best="" best_seqno=-2 s
  i=$(safe_node)
  if [ -n "$i" ]; then echo "$i"; return 0; fi
  if [ ! -f "$BASE/1/data/grastate.dat" ] && [ ! -f "$BASE/2/data/grastate.dat" ] \
      && [ ! -f "$BASE/3/data/grastate.dat" ]; then
    echo 1; return 0   # a new cluster: node 1 is created and bootstraps
  fi
  for i in 1 2 3; do
    [ -f "$BASE/$i/data/grastate.dat" ] || continue
    s=$(recovered_position "$i"); s=${s##*:}
    if [ -n "$s" ] && [ "$s" -gt "$best_seqno" ]; then best=$i; best_seqno=$s; fi
  done
  if [ -z "$best" ]; then echo "!! no node's position could be recovered" >&2; return 1; fi
  sed -i 's/^safe_to_bootstrap: *0/safe_to_bootstrap: 1/' "$BASE/$best/data/grastate.dat"
  echo "$best"
}

start_node() {  # start_node I: join the running cluster, or bootstrap it when I is the one
  local i=$1 boot
  if running "$i"; then return 0; fi
  if [ -n "$(any_primary)" ]; then launch "$i"; return 0; fi
  boot=$(bootstrap_node)
  if [ "$boot" = "$i" ]; then launch "$i" --wsrep-new-cluster; await_synced "$i"
  else
    start_node "$boot"; await_synced "$boot"; launch "$i"
  fi
}

stop_node() {  # clean shutdown of node I (SIGTERM), waiting until it has exited
  local i=$1 p deadline=$((SECONDS + 120))
  p=$(pid_of "$i")
  if ! ours "$p" "$i"; then return 0; fi
  kill -TERM "$p"
  kill -CONT "$p" 2>/dev/null || true  # a paused node would not act on the TERM
  while ours "$p" "$i"; do
    if ((SECONDS > deadline)); then kill -KILL "$p"; fi
    sleep 0.2
  done
}

kill_node() {  # SIGKILL node I (a crash: no clean shutdown, grastate keeps seqno -1)
  local p; p=$(pid_of "$1")
  if ours "$p" "$1"; then
    kill -KILL "$p"
    while ours "$p" "$1"; do sleep 0.1; done
  fi
}

has_data() {  # the nodes that hold a data directory (or nothing)
  local i
  for i in 1 2 3; do [ -f "$BASE/$i/data/grastate.dat" ] && echo "$i"; done
  return 0
}

seed() {  # a new cluster: node 1 bootstraps and stops cleanly; nodes 2 and 3 start from a copy
  # of its data (what an SST would send them, without holding the donor's lock twice in a row)
  local i
  launch 1 --wsrep-new-cluster
  await_synced 1
  stop_node 1
  for i in 2 3; do
    mkdir -p "$BASE/$i/data"
    cp -a "$BASE/1/data/." "$BASE/$i/data/"
    rm -f "$BASE/$i/data/galera.cache"
    sed -i 's/^safe_to_bootstrap: *1/safe_to_bootstrap: 0/' "$BASE/$i/data/grastate.dat"
  done
}

cmd="${1:-start}"
case "$cmd" in
  start)
    [ -x "$PROVIDER" ] || [ -f "$PROVIDER" ] || { echo "!! $PROVIDER missing (apt-get install galera-4)" >&2; exit 3; }
    if ! running 1 && ! running 2 && ! running 3 && [ -z "$(has_data)" ]; then seed; fi
    for i in 1 2 3; do start_node "$i"; done
    for i in 1 2 3; do await_synced "$i"; done
    ;;
  urls) echo "mysql://root@127.0.0.1:$(sql_port 1),127.0.0.1:$(sql_port 2),127.0.0.1:$(sql_port 3)/$DATABASE" ;;
  stop-node) stop_node "$2" ;;
  pause-node) p=$(pid_of "$2"); if ours "$p" "$2"; then kill -STOP "$p"; fi ;;
  resume-node) p=$(pid_of "$2"); if ours "$p" "$2"; then kill -CONT "$p"; fi ;;
  kill-node) kill_node "$2" ;;
  start-node) start_node "$2"; await_synced "$2" ;;
  wipe-node)  # stop node I and delete its data: its next start joins by a full SST (rsync)
    stop_node "$2"; rm -rf "$BASE/$2" ;;
  pid) pid_of "$2" ;;
  dir) echo "$BASE" ;;  # where the nodes' data and logs are (var/galera, or /var/tmp: above)
  status)
    for i in 1 2 3; do
      echo "node $i (:$(sql_port "$i")): $(sql "$i" "SELECT GROUP_CONCAT(CONCAT(VARIABLE_NAME,'=',VARIABLE_VALUE) SEPARATOR ' ') FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('wsrep_local_state_comment','wsrep_cluster_size','wsrep_cluster_status','wsrep_last_committed','wsrep_flow_control_paused')" | tr 'A-Z' 'a-z' || true)"
    done
    ;;
  stop|wipe)
    # node 1 last, on its own: the last to leave is the one marked safe_to_bootstrap
    stop_node 3 & stop_node 2 & wait
    stop_node 1
    if [ "$cmd" = wipe ]; then rm -rf "$BASE"; fi
    ;;
  *) echo "usage: $0 start|urls|stop-node I|kill-node I|pause-node I|resume-node I|start-node I|wipe-node I|status|stop|wipe" >&2; exit 2 ;;
esac
