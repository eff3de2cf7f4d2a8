# Sourced by scripts/test and the benchmarks: install and start the real servers the tests use,
# each on a free random port (never a fixed one: other processes may hold 5000), and export
# where they are. Installs are cached under ~/.cache/envbuild-dev, so only the first run pays.
#
#   start_moto     moto_server (S3 + KMS)  -> ENVBUILD_TEST_MOTO=http://127.0.0.1:PORT
#   start_s3s      s3s-fs 0.14.1 (S3)      -> ENVBUILD_TEST_S3S=http://127.0.0.1:PORT
#   ensure_docker  dockerd, started if its socket does not answer
#   stop_servers   stops what start_* started (scripts/test traps it on exit)

ENVBUILD_TOOLS=${ENVBUILD_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/envbuild-dev/tools}
MOTO_VERSION=5.2.5
S3S_VERSION=0.14.1
_server_pids=()
_server_dirs=()

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http NAME URL PID LOG: waits until URL answers (any HTTP status) or the process dies.
wait_http() {
  local name=$1 url=$2 pid=$3 logfile=$4 deadline=$((SECONDS + 90))
  until curl -s -o /dev/null --max-time 2 "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited while starting; its log:" >&2; tail -n 30 "$logfile" >&2; return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$name did not answer on $url within 90 s; its log:" >&2; tail -n 30 "$logfile" >&2; return 1
    fi
    sleep 0.3
  done
}

start_moto() {
  local venv="$ENVBUILD_TOOLS/moto-$MOTO_VERSION"
  if [ ! -x "$venv/bin/moto_server" ]; then
    log "installing moto[server]==$MOTO_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  local port logfile
  for _ in 1 2 3; do
    port=$(free_port)
    logfile=$(mktemp /tmp/envbuild-moto.XXXXXX.log)
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 </dev/null &
    local pid=$!
    if wait_http moto "http://127.0.0.1:$port/moto-api/" "$pid" "$logfile"; then
      _server_pids+=("$pid")
      export ENVBUILD_TEST_MOTO="http://127.0.0.1:$port"
      log "moto $MOTO_VERSION on $ENVBUILD_TEST_MOTO (pid $pid)"
      return 0
    fi
    kill "$pid" 2>/dev/null || true   # the port may have been taken meanwhile: try another
  done
  return 1
}

start_s3s() {
  local bin="$ENVBUILD_TOOLS/bin/s3s-fs"
  # One already installed (say by hand, with the same pinned version) will do.
  if [ ! -x "$bin" ] && [ "$(s3s-fs --version 2>/dev/null)" = "s3s-fs $S3S_VERSION" ]; then
    bin=$(command -v s3s-fs)
  fi
  if [ ! -x "$bin" ]; then
    log "installing s3s-fs $S3S_VERSION (cargo install, a few minutes once)"
    # 0.15+ needs a newer rustc; pin the version that builds here.
    cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --quiet --root "$ENVBUILD_TOOLS"
  fi
  local root port logfile
  root=$(mktemp -d /tmp/envbuild-s3s.XXXXXX)
  _server_dirs+=("$root")
  for _ in 1 2 3; do
    port=$(free_port)
    logfile="$root.log"
    "$bin" --host 127.0.0.1 --port "$port" --access-key test --secret-key test "$root" >"$logfile" 2>&1 </dev/null &
    local pid=$!
    if wait_http s3s-fs "http://127.0.0.1:$port/" "$pid" "$logfile"; then
      _server_pids+=("$pid")
      export ENVBUILD_TEST_S3S="http://127.0.0.1:$port"
      log "s3s-fs $S3S_VERSION on $ENVBUILD_TEST_S3S (pid $pid)"
      return 0
    fi
    kill "$pid" 2>/dev/null || true
  done
  return 1
}

ensure_docker() {
  local sock=${DOCKER_SOCK:-/var/run/docker.sock}
  docker_ok() { timeout 10 docker -H "unix://$sock" info >/dev/null 2>&1; }
  command -v dockerd >/dev/null 2>&1 && [ -x /bin/busybox ] || apt_install docker.io busybox-static
  if docker_ok; then return 0; fi
  # Without systemd nothing mounts cgroups, and dockerd cannot start containers without them.
  if ! grep -qs ' /sys/fs/cgroup' /proc/self/mountinfo; then
    apt_install cgroupfs-mount
    cgroupfs-mount
  fi
  local pidfile=/var/run/docker.pid logfile=/var/log/envbuild-dockerd.log pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
  else
    rm -f "$pidfile"
    # --iptables=false: keep dockerd off the host firewall; builds use host or no networking.
    nohup dockerd --iptables=false -H "unix://$sock" --pidfile "$pidfile" >>"$logfile" 2>&1 </dev/null &
    pid=$!
  fi
  local deadline=$((SECONDS + 90))
  until docker_ok; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "dockerd exited; its log:" >&2; tail -n 40 "$logfile" >&2; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then echo "dockerd did not answer within 90 s" >&2; tail -n 40 "$logfile" >&2; return 1; fi
    sleep 0.5
  done
  log "docker engine $(docker -H "unix://$sock" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
}

stop_servers() {
  for pid in "${_server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${_server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for dir in "${_server_dirs[@]}"; do rm -rf "$dir" "$dir.log"; done
  _server_pids=()
}
