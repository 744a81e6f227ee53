# Container helpers shared by scripts/containers, scripts/test --containers and scripts/stack.
# Source, don't run. Everything here is idempotent and built from Debian's packages and PyPI:
# no image is ever pulled from an image registry.
#
#   ensure_engine      install docker.io when dockerd is missing, start dockerd when no engine
#                      answers on /var/run/docker.sock (left running by design, like RabbitMQ
#                      and MariaDB; `scripts/containers stop-engine` stops one we started)
#   ensure_compose     `docker compose`, else Debian's docker-compose (installed when missing)
#   ensure_images      the base image (debootstrap, ~25 s) and the service and app images,
#                      each rebuilt only when the hash of its inputs changed
# Image names: LOCAL_IMAGES below; their upstream equivalents are docker-compose.yml's defaults.

export DOCKER_BUILDKIT=0  # the engine from docker.io has no buildx; the classic builder suffices
CONTAINERS_VAR=${CONTAINERS_VAR:-var/containers}
ENGINE_LOG=/var/log/pvekvm-dockerd.log
ENGINE_PID=/run/pvekvm-dockerd.pid

BASE_IMAGE=pvekvm-local/debian:bookworm
PYTHON_IMAGE_LOCAL=pvekvm-local/python:3.11
declare -A LOCAL_IMAGES=(
  [rabbitmq]=pvekvm-local/rabbitmq:management
  [mariadb]=pvekvm-local/mariadb:10.11
  [powerdns]=pvekvm-local/powerdns:4.7
  [mailcatcher]=pvekvm-local/mailcatcher:latest
  [app]=pvekvm-local/app:latest
)

engine_answers() { timeout 5 docker version >/dev/null 2>&1; }

apt_install() {  # apt_install PACKAGE...  (quiet; the log on failure)
  local log
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } \
      >"$log" 2>&1 </dev/null; then
    echo "!! installing $* failed:" >&2
    tail -n 30 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

ensure_engine() {
  if engine_answers; then return 0; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    echo ">> installing the Docker engine (Debian's docker.io) and debootstrap"
    apt_install docker.io debootstrap || return 1
  fi
  command -v docker >/dev/null 2>&1 || { echo "!! no docker client" >&2; return 1; }
  if ! engine_answers; then
    echo ">> starting dockerd (log $ENGINE_LOG)"
    setsid nohup dockerd >>"$ENGINE_LOG" 2>&1 </dev/null &
    echo $! >"$ENGINE_PID"
    local deadline=$((SECONDS + 60))
    until engine_answers; do
      if ((SECONDS > deadline)) || ! kill -0 "$(cat "$ENGINE_PID")" 2>/dev/null; then
        echo "!! dockerd did not answer; last log lines:" >&2
        tail -n 20 "$ENGINE_LOG" >&2
        return 1
      fi
      sleep 0.3
    done
  fi
}

stop_engine() {  # only a dockerd this script started (its pid file), with its containers
  if [ ! -f "$ENGINE_PID" ]; then echo ">> no dockerd started by these scripts"; return 0; fi
  local pid
  pid=$(cat "$ENGINE_PID")
  if kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
    echo ">> stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
  fi
  rm -f "$ENGINE_PID"
}

COMPOSE=()
ensure_compose() {
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); return 0; fi
  if ! command -v docker-compose >/dev/null 2>&1; then
    echo ">> installing Debian's docker-compose"
    apt_install docker-compose || return 1
  fi
  COMPOSE=(docker-compose)
}

inputs_hash() {  # inputs_hash TEXT PATH...: one hash of a text and the files under the paths
  {
    printf '%s\n' "$1"
    shift
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z |
      xargs -0 sha1sum
  } | sha1sum | cut -c1-16
}

image_hash_of() { docker image inspect -f '{{ index .Config.Labels "pvekvm.inputs" }}' "$1" 2>/dev/null; }

build_image() {  # build_image TAG HASH CONTEXT [docker build args...]
  local tag=$1 hash=$2 context=$3 log start=$SECONDS
  shift 3
  if [ "$(image_hash_of "$tag")" = "$hash" ]; then return 0; fi
  mkdir -p "$CONTAINERS_VAR"
  log="$CONTAINERS_VAR/build-${tag//[\/:]/_}.log"
  echo ">> building $tag"
  if ! docker build --force-rm --network host --label "pvekvm.inputs=$hash" -t "$tag" "$@" "$context" \
      >"$log" 2>&1 </dev/null; then
    echo "!! building $tag failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    return 1
  fi
  echo "   built $tag in $((SECONDS - start)) s"
}

ensure_base_image() {
  local hash start=$SECONDS
  hash=$(inputs_hash "${PVEKVM_DEBIAN_SUITE:-bookworm} ${PVEKVM_DEBIAN_MIRROR:-}" images/base)
  if [ "$(image_hash_of "$BASE_IMAGE")" = "$hash" ]; then return 0; fi
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap || return 1
  echo ">> building $BASE_IMAGE (debootstrap --variant=minbase)"
  local tmp=$BASE_IMAGE-building
  mkdir -p "$CONTAINERS_VAR"
  bash images/base/build.sh "$tmp" || return 1
  # docker import takes no labels: one empty build step adds the inputs hash.
  printf 'FROM %s\n' "$tmp" | docker build --label "pvekvm.inputs=$hash" -t "$BASE_IMAGE" - \
    >"$CONTAINERS_VAR/build-base-label.log" 2>&1 || { cat "$CONTAINERS_VAR/build-base-label.log" >&2; return 1; }
  docker rmi "$tmp" >/dev/null 2>&1 || true
  echo "   built $BASE_IMAGE in $((SECONDS - start)) s"
}

python_context() {  # images/python plus this machine's own trusted CAs (pip behind a proxy)
  local ctx=$CONTAINERS_VAR/ctx-python
  rm -rf "$ctx" && mkdir -p "$ctx/extra-ca"
  cp images/python/Dockerfile "$ctx/"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/extra-ca/" 2>/dev/null || true
  touch "$ctx/extra-ca/.keep"
}

ensure_images() {  # ensure_images [NAME...]: the base, then the named images (default: all)
  local names=("$@") base_id name pids=() failed=0
  if ((${#names[@]} == 0)); then names=(rabbitmq mariadb powerdns mailcatcher app); fi
  ensure_base_image || return 1
  base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")
  # Independent images build side by side (mostly package downloads); the app needs python.
  for name in "${names[@]}"; do
    case $name in
      app)
        (python_context &&
         build_image "$PYTHON_IMAGE_LOCAL" "$(inputs_hash "$base_id" "$CONTAINERS_VAR/ctx-python")" \
           "$CONTAINERS_VAR/ctx-python" --build-arg "BASE_IMAGE=$BASE_IMAGE" &&
         build_image "${LOCAL_IMAGES[app]}" "$(inputs_hash \
             "$(docker image inspect -f '{{.Id}}' "$PYTHON_IMAGE_LOCAL")" \
             Dockerfile .dockerignore pyproject.toml schema.sql config pvekvm workers steps \
             producers pvesim)" \
           . --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE_LOCAL") &
        ;;
      rabbitmq | mariadb | powerdns | mailcatcher)
        build_image "${LOCAL_IMAGES[$name]}" "$(inputs_hash "$base_id" "images/$name")" \
          "images/$name" --build-arg "BASE_IMAGE=$BASE_IMAGE" &
        ;;
      *) echo "!! unknown image $name" >&2; return 2 ;;
    esac
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return "$failed"
}

local_image_env() {  # the settings that point docker-compose.yml at the local images
  export PVEKVM_RABBITMQ_IMAGE=${LOCAL_IMAGES[rabbitmq]}
  export PVEKVM_MARIADB_IMAGE=${LOCAL_IMAGES[mariadb]}
  export PVEKVM_PDNS_IMAGE=${LOCAL_IMAGES[powerdns]}
  export PVEKVM_MAIL_IMAGE=${LOCAL_IMAGES[mailcatcher]}
  export PVEKVM_APP_IMAGE=${LOCAL_IMAGES[app]}
  export PVEKVM_PYTHON_IMAGE=$PYTHON_IMAGE_LOCAL
}
