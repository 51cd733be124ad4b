#!/usr/bin/env bash
# Starts and stops the services the tests need. Sourced by scripts/test.sh,
# which calls `start_services` before the tests and `stop_services` on exit.
#
# Usable by hand too:
#
#   source scripts/services.sh && start_services && cargo test -p hitbox-redis; stop_services
#
# What `start_services` does:
#   - installs Debian's redis-server (and redis-tools, for redis-cli) and
#     memcached with apt-get when they are missing; never relies on a Redis
#     or memcached that may already run on the machine;
#   - starts, on free loopback ports and with data under
#     .test-services/run-<pid>/ (one directory per run, so two runs in one
#     checkout do not collide):
#       * a standalone server,
#       * a cluster of three masters (no replicas),
#       * one sentinel (redis-server --sentinel, the same binary) watching
#         the standalone server under the service name `hitbox`,
#       * a memcached (64 MB);
#   - waits until every server answers PING and the cluster reports
#     cluster_state:ok, and fails loudly after about 30 seconds;
#   - exports:
#       HITBOX_TEST_REDIS_URL            redis://127.0.0.1:PORT
#       HITBOX_TEST_REDIS_CLUSTER_URL    redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3
#       HITBOX_TEST_REDIS_SENTINEL_URL   redis-sentinel://127.0.0.1:PORT?sentinelServiceName=hitbox
#       HITBOX_TEST_REDIS_SERVER_BIN     the redis-server binary, for tests that start
#                                        (and kill) servers of their own
#       HITBOX_TEST_MEMCACHED_URL        tcp://127.0.0.1:PORT
#       HITBOX_TEST_MEMCACHED_BIN        the memcached binary, for tests that start (and
#                                        kill) servers of their own
#
# `stop_services` shuts down what this run started and removes its data.

_HITBOX_SERVICES_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_HITBOX_WAIT_SECS="${HITBOX_SERVICES_WAIT_SECS:-30}"
_HITBOX_RUN_DIR=""
_HITBOX_PORTS_TAKEN=" "
_HITBOX_PORT=""
_HITBOX_PIDS=()

_hitbox_log() { echo "services: $*" >&2; }

_hitbox_die() {
    echo "services: ERROR: $*" >&2
    # Show what the servers said before their data goes away with them.
    local log
    for log in "$_HITBOX_RUN_DIR"/*/redis.log "$_HITBOX_RUN_DIR"/*/stdout.log; do
        [ -s "$log" ] || continue
        echo "services: --- last lines of $log" >&2
        tail -n 15 "$log" >&2
    done
    stop_services
    return 1
}

# Installs redis-server and redis-cli when they are missing.
_hitbox_install_redis() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "services: ERROR: redis-server is missing and apt-get is not available to install it" >&2
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        sudo="sudo"
    fi
    _hitbox_log "installing redis-server with apt-get"
    # Keep the package from starting a system-wide Redis of its own: the
    # tests start the servers they need on ports of their choosing.
    local policy_rc=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy_rc" ] && [ -w /usr/sbin ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy_rc" && chmod +x "$policy_rc" && made_policy=1
    fi
    local status=0
    $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || status=$?
    if [ "$status" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends redis-server redis-tools >/dev/null || status=$?
    fi
    if [ "$made_policy" = 1 ]; then
        rm -f "$policy_rc"
    fi
    if [ "$status" != 0 ] || ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        echo "services: ERROR: could not install redis-server and redis-cli with apt-get (status $status)" >&2
        return 1
    fi
}

# Whether something listens on 127.0.0.1:$1.
_hitbox_port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Sets _HITBOX_PORT to a loopback port nobody listens on and that this run
# has not handed out yet (a variable, not output: a subshell would lose the
# record of ports handed out).
_hitbox_free_port() {
    local port tries=0
    while [ "$tries" -lt 200 ]; do
        tries=$((tries + 1))
        # Below the kernel's ephemeral range (32768 and up on Linux): a port
        # there may be the local end of some outgoing connection, which the
        # probe below cannot see, and redis-server would fail to bind it.
        port=$((20000 + RANDOM % 12000))
        case "$_HITBOX_PORTS_TAKEN" in *" $port "*) continue ;; esac
        if ! _hitbox_port_busy "$port"; then
            _HITBOX_PORTS_TAKEN="$_HITBOX_PORTS_TAKEN$port "
            _HITBOX_PORT="$port"
            return 0
        fi
    done
    echo "services: ERROR: found no free loopback port" >&2
    return 1
}

# Starts redis-server in the background with its data in $1 (a new
# directory), then the given arguments. Not daemonized: its pid is known at
# once, so stop_services can always find it, even if it never came up.
_hitbox_start_server() {
    local dir="$1"
    shift
    mkdir -p "$dir" || return 1
    redis-server "$@" --bind 127.0.0.1 --daemonize no --dir "$dir" --logfile "$dir/redis.log" \
        </dev/null >"$dir/stdout.log" 2>&1 &
    _HITBOX_PIDS+=("$!")
}

# Whether process $1 runs (a zombie, dead but not yet reaped, does not).
_hitbox_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat="${stat##*) }"
    [ "${stat:0:1}" != Z ]
}

# Waits until the server on port $1 answers PING.
_hitbox_wait_ping() {
    local port="$1" deadline=$((SECONDS + _HITBOX_WAIT_SECS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; then
            return 0
        fi
        sleep 0.05
    done
    echo "services: ERROR: redis on port $port did not answer PING within ${_HITBOX_WAIT_SECS}s" >&2
    return 1
}

# Waits until the cluster node on port $1 reports cluster_state:ok.
_hitbox_wait_cluster_ok() {
    local port="$1" deadline=$((SECONDS + _HITBOX_WAIT_SECS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
            return 0
        fi
        sleep 0.1
    done
    echo "services: ERROR: cluster node on port $port did not report cluster_state:ok within ${_HITBOX_WAIT_SECS}s" >&2
    return 1
}

# Waits until the sentinel on port $1 knows the master of service `hitbox`.
_hitbox_wait_sentinel() {
    local port="$1" deadline=$((SECONDS + _HITBOX_WAIT_SECS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if redis-cli -h 127.0.0.1 -p "$port" sentinel get-master-addr-by-name hitbox 2>/dev/null \
            | grep -q '127.0.0.1'; then
            return 0
        fi
        sleep 0.05
    done
    echo "services: ERROR: sentinel on port $port did not know its master within ${_HITBOX_WAIT_SECS}s" >&2
    return 1
}

start_services() {
    if [ -n "$_HITBOX_RUN_DIR" ]; then
        _hitbox_log "already started (data in $_HITBOX_RUN_DIR)"
        return 0
    fi
    _hitbox_install_redis || return 1
    local started=$SECONDS
    _HITBOX_RUN_DIR="$_HITBOX_SERVICES_ROOT/.test-services/run-$$"
    rm -rf "$_HITBOX_RUN_DIR"
    mkdir -p "$_HITBOX_RUN_DIR" || { _hitbox_die "cannot create $_HITBOX_RUN_DIR"; return 1; }

    # Standalone.
    local standalone
    _hitbox_free_port || { _hitbox_die "no port for the standalone server"; return 1; }
    standalone=$_HITBOX_PORT
    _hitbox_start_server "$_HITBOX_RUN_DIR/standalone" --port "$standalone" --save "" --appendonly no ||
        { _hitbox_die "redis-server did not start on port $standalone"; return 1; }

    # Cluster: three masters, each with its bus on a port of its own.
    local cluster_ports=() port bus node
    for node in 1 2 3; do
        _hitbox_free_port || { _hitbox_die "no port for cluster node $node"; return 1; }
        port=$_HITBOX_PORT
        _hitbox_free_port || { _hitbox_die "no bus port for cluster node $node"; return 1; }
        bus=$_HITBOX_PORT
        cluster_ports+=("$port")
        _hitbox_start_server "$_HITBOX_RUN_DIR/cluster-$node" --port "$port" --save "" --appendonly no \
            --cluster-enabled yes --cluster-port "$bus" \
            --cluster-config-file "$_HITBOX_RUN_DIR/cluster-$node/nodes.conf" \
            --cluster-node-timeout 5000 ||
            { _hitbox_die "cluster node $node did not start on port $port"; return 1; }
    done

    _hitbox_wait_ping "$standalone" || { _hitbox_die "standalone server is not up"; return 1; }
    for port in "${cluster_ports[@]}"; do
        _hitbox_wait_ping "$port" || { _hitbox_die "cluster node $port is not up"; return 1; }
    done

    # Sentinel, watching the standalone server (quorum 1: it is alone).
    local sentinel
    _hitbox_free_port || { _hitbox_die "no port for the sentinel"; return 1; }
    sentinel=$_HITBOX_PORT
    mkdir -p "$_HITBOX_RUN_DIR/sentinel"
    printf 'sentinel monitor hitbox 127.0.0.1 %s 1\nsentinel down-after-milliseconds hitbox 5000\n' \
        "$standalone" >"$_HITBOX_RUN_DIR/sentinel/sentinel.conf"
    # The config file comes first; the sentinel rewrites it as it learns.
    _hitbox_start_server "$_HITBOX_RUN_DIR/sentinel" "$_HITBOX_RUN_DIR/sentinel/sentinel.conf" --sentinel \
        --port "$sentinel" || { _hitbox_die "redis sentinel did not start on port $sentinel"; return 1; }

    local addrs=()
    for port in "${cluster_ports[@]}"; do
        addrs+=("127.0.0.1:$port")
    done
    if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
        >"$_HITBOX_RUN_DIR/cluster-create.log" 2>&1; then
        cat "$_HITBOX_RUN_DIR/cluster-create.log" >&2
        _hitbox_die "redis-cli --cluster create failed"
        return 1
    fi
    for port in "${cluster_ports[@]}"; do
        _hitbox_wait_cluster_ok "$port" || { _hitbox_die "the cluster did not become ready"; return 1; }
    done
    _hitbox_wait_ping "$sentinel" || { _hitbox_die "the sentinel is not up"; return 1; }
    _hitbox_wait_sentinel "$sentinel" || { _hitbox_die "the sentinel is not ready"; return 1; }

    _hitbox_start_memcached || { _hitbox_die "memcached did not start"; return 1; }
    HITBOX_TEST_REDIS_URL="redis://127.0.0.1:$standalone"
    HITBOX_TEST_REDIS_CLUSTER_URL="redis-cluster://127.0.0.1:${cluster_ports[0]}?node=127.0.0.1:${cluster_ports[1]}&node=127.0.0.1:${cluster_ports[2]}"
    HITBOX_TEST_REDIS_SENTINEL_URL="redis-sentinel://127.0.0.1:$sentinel?sentinelServiceName=hitbox"
    HITBOX_TEST_REDIS_SERVER_BIN="$(command -v redis-server)"
    export HITBOX_TEST_REDIS_URL HITBOX_TEST_REDIS_CLUSTER_URL HITBOX_TEST_REDIS_SENTINEL_URL \
        HITBOX_TEST_REDIS_SERVER_BIN
    _hitbox_log "redis standalone $HITBOX_TEST_REDIS_URL"
    _hitbox_log "redis cluster    $HITBOX_TEST_REDIS_CLUSTER_URL"
    _hitbox_log "redis sentinel   $HITBOX_TEST_REDIS_SENTINEL_URL"
    _hitbox_log "ready in $((SECONDS - started))s (data in $_HITBOX_RUN_DIR)"
}

stop_services() {
    local dir="$_HITBOX_RUN_DIR"
    if [ -z "$dir" ]; then
        return 0
    fi
    local pid
    for pid in "${_HITBOX_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + 10))
    for pid in "${_HITBOX_PIDS[@]}"; do
        while _hitbox_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.05
        done
        if _hitbox_alive "$pid"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        # Reap it (it is a child of this shell) so no zombie is left.
        wait "$pid" 2>/dev/null || true
    done
    _HITBOX_PIDS=()
    rm -rf "$dir"
    rmdir "$_HITBOX_SERVICES_ROOT/.test-services" 2>/dev/null || true
    _HITBOX_RUN_DIR=""
    _HITBOX_PORTS_TAKEN=" "
    unset HITBOX_TEST_REDIS_URL HITBOX_TEST_REDIS_CLUSTER_URL HITBOX_TEST_REDIS_SENTINEL_URL \
        HITBOX_TEST_REDIS_SERVER_BIN
    unset HITBOX_TEST_MEMCACHED_URL HITBOX_TEST_MEMCACHED_BIN
    return 0
}

# Installs Debian's memcached when it is missing.
_hitbox_install_memcached() {
    if command -v memcached >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "services: ERROR: memcached is missing and apt-get is not available to install it" >&2
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        sudo="sudo"
    fi
    _hitbox_log "installing memcached with apt-get"
    # As for redis-server: no system-wide memcached of the package's own.
    local policy_rc=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy_rc" ] && [ -w /usr/sbin ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy_rc" && chmod +x "$policy_rc" && made_policy=1
    fi
    local status=0
    $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || status=$?
    if [ "$status" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends memcached >/dev/null || status=$?
    fi
    if [ "$made_policy" = 1 ]; then
        rm -f "$policy_rc"
    fi
    if [ "$status" != 0 ] || ! command -v memcached >/dev/null 2>&1; then
        echo "services: ERROR: could not install memcached with apt-get (status $status)" >&2
        return 1
    fi
}

# Waits until the memcached on port $1 answers `version`.
_hitbox_wait_memcached() {
    local port="$1" deadline=$((SECONDS + _HITBOX_WAIT_SECS)) reply
    while [ "$SECONDS" -lt "$deadline" ]; do
        reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'version\r\n' >&3 && read -r -t 1 line <&3 &&
            echo "$line") 2>/dev/null) || true
        case "$reply" in VERSION*) return 0 ;; esac
        sleep 0.05
    done
    echo "services: ERROR: memcached on port $port did not answer within ${_HITBOX_WAIT_SECS}s" >&2
    return 1
}

# Installs (when missing) and starts a memcached on a free loopback port,
# then exports HITBOX_TEST_MEMCACHED_URL and HITBOX_TEST_MEMCACHED_BIN. Its
# pid joins the others, so stop_services stops it.
_hitbox_start_memcached() {
    _hitbox_install_memcached || return 1
    _hitbox_free_port || return 1
    local port=$_HITBOX_PORT dir="$_HITBOX_RUN_DIR/memcached"
    mkdir -p "$dir" || return 1
    # memcached refuses to run as root unless told which user to be.
    memcached -l 127.0.0.1 -p "$port" -U 0 -m 64 -u "$(id -un)" \
        </dev/null >"$dir/stdout.log" 2>&1 &
    _HITBOX_PIDS+=("$!")
    _hitbox_wait_memcached "$port" || return 1
    HITBOX_TEST_MEMCACHED_URL="tcp://127.0.0.1:$port"
    HITBOX_TEST_MEMCACHED_BIN="$(command -v memcached)"
    export HITBOX_TEST_MEMCACHED_URL HITBOX_TEST_MEMCACHED_BIN
    _hitbox_log "memcached        $HITBOX_TEST_MEMCACHED_URL"
}
