# Start and stop a loopback docker-registry for scripts/demo and scripts/bench.
# Source after common.sh. start_loopback_registry DIR sets REGISTRY_HOST and REGISTRY_PID.

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_loopback_registry() {
  local dir=$1 port
  mkdir -p "$dir/storage"
  port=$(free_port)
  cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$port
YAML
  docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  REGISTRY_PID=$!
  REGISTRY_HOST=127.0.0.1:$port
  local i
  for i in $(seq 100); do
    if /usr/bin/python3 -c "import urllib.request as u; u.urlopen('http://$REGISTRY_HOST/v2/', timeout=1)" 2>/dev/null; then
      return 0
    fi
    kill -0 "$REGISTRY_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/registry.log" >&2
  die "docker-registry did not start on $REGISTRY_HOST"
}

stop_loopback_registry() {
  if [[ -n ${REGISTRY_PID:-} ]]; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=
  fi
}
