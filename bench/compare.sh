#!/usr/bin/env bash
# Runs the same `tern bench` scenarios against Mosquitto, rumqttd and Tern, one broker at a time
# on loopback, the broker pinned to one core and the generator to the other, then writes the
# table and chart into BENCHMARKS.md (between the compare markers) and bench/compare.png.
#
# It installs what it needs: Debian's mosquitto (apt-get), rumqttd (cargo install into
# bench/.tools), a Python venv with matplotlib (bench/.venv). Raw results, logs and the exact
# commands go to bench/out/. Not part of the test command: a full run takes about 45 minutes.
#
# Environment: DURATION (seconds per throughput scenario, default 5), OPEN_DRAIN (most seconds
# an open-loop run waits after its window for what the broker still owes, default 20),
# CONNECTIONS (10000), RETAINED (100000), LATENCY_ROUNDS (30), CONNECT_ROUNDS (7), BROKER_CPU (1),
# GENERATOR_CPU (0), BROKERS (default "mosquitto mosquitto-nodelay rumqttd tern tern-fsync
# tern-defaults"), NO_WRITE=1 to leave BENCHMARKS.md and bench/compare.png alone (the chart goes
# to the output directory).
#
# Mosquitto runs twice: with its default Nagle batching (best throughput) for every scenario, and
# with set_tcp_nodelay (best latency) for the latency scenarios only; each target is checked
# against the better of the two. Tern runs with bench/tern.toml's raised limits, and once more
# with its defaults (tern-defaults) for the throughput scenarios only: when publishers are not
# held back by delivery, the defaults decide what a broker that acknowledges faster than it
# delivers drops. Connections and latency run in interleaved rounds, every broker once per round
# on a fresh start; the report takes each broker's median connections round and pools its
# latency rounds' samples into one distribution: one 5-second sample of a p99 on a shared 2-core
# machine varies by a factor of 2 to 8 from run to run, and a connect rate by 10-30%
# (BENCHMARKS.md). Thirty latency rounds: with fifteen, the p99 gap between two brokers moved by
# about ±16 µs between resamplings of the rounds, as much as the gaps it was judging.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
TOOLS=$ROOT/bench/.tools
VENV=$ROOT/bench/.venv
DURATION=${DURATION:-5}
OPEN_DRAIN=${OPEN_DRAIN:-20}
CONNECTIONS=${CONNECTIONS:-10000}
RETAINED=${RETAINED:-100000}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-30}
CONNECT_ROUNDS=${CONNECT_ROUNDS:-7}
BROKER_CPU=${BROKER_CPU:-1}
GENERATOR_CPU=${GENERATOR_CPU:-0}
BROKERS=${BROKERS:-mosquitto mosquitto-nodelay rumqttd tern tern-fsync tern-defaults}
PORT=${PORT:-18883}
RUMQTTD_VERSION=0.20.0

log() { printf '== %s\n' "$*" >&2; }

install() {
    if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
        log "installing mosquitto"
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo=sudo
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
    fi
    if [[ " $BROKERS " == *" rumqttd "* ]] && [ ! -x "$TOOLS/bin/rumqttd" ]; then
        log "installing rumqttd $RUMQTTD_VERSION into bench/.tools"
        # Its lock file pins metrics 0.22.1, which current compilers reject; without the lock
        # cargo picks the fixed patch release.
        cargo install rumqttd --version "$RUMQTTD_VERSION" --locked --root "$TOOLS" --quiet ||
            cargo install rumqttd --version "$RUMQTTD_VERSION" --root "$TOOLS" --quiet
    fi
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        log "creating bench/.venv with matplotlib"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet matplotlib
    fi
    log "building tern (release)"
    cargo build --release --locked -p tern --quiet
}

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
TERN=$ROOT/target/release/tern
# shellcheck source=bench/brokers.sh
source bench/brokers.sh
trap stop_broker EXIT

# bench NAME ARGS...: one generator run against the broker, pinned to GENERATOR_CPU.
bench() {
    local name=$1
    shift
    local cmd=("$TERN" bench --host 127.0.0.1 --port "$PORT" --label "$name" "$@")
    echo "taskset -c $GENERATOR_CPU ${cmd[*]}" >>"$OUT/commands.txt"
    if ! taskset -c "$GENERATOR_CPU" "${cmd[@]}" >>"$OUT/results.jsonl" 2>>"$OUT/bench.log"; then
        log "$name: tern bench $* failed (see $OUT/bench.log)"
        # A failed run still gets a row, so the table shows the gap.
        printf '{"label":"%s","failed":true,"args":"%s"}\n' "$name" "$*" >>"$OUT/results.jsonl"
    fi
    tail -n 1 "$OUT/bench.log" >&2
}

# fresh NAME: starts NAME; returns 2 when this tern cannot run it (skip), 1 on failure.
fresh() {
    local status=0
    start_broker "$1" || status=$?
    [ $status -eq 0 ] && log "$1 (pid $BROKER_PID on cpu $BROKER_CPU)"
    return $status
}

# Connections and latency, in rounds: each round starts every broker in turn, once for the
# connections scenario and once for the latency runs (QoS 0 and 1), so every figure comes from a
# freshly started broker and a drift in the machine's state over the run (a 10,000-connection
# burst lasts well under a second; one run's rate moves by 10-30% from run to run) falls on
# every broker alike; every other round runs them in reverse order. The report takes each
# broker's median connections round and pools its latency samples. Memory per connection is
# only meaningful on a fresh broker, before other scenarios have grown (and freed) its heap.
interleaved_rounds() {
    local rounds=$((CONNECT_ROUNDS > LATENCY_ROUNDS ? CONNECT_ROUNDS : LATENCY_ROUNDS))
    local round name status qos order
    for round in $(seq "$rounds"); do
        log "round $round of $rounds"
        # Every other round runs the brokers in reverse, so none always follows the same one.
        order=$BROKERS
        [ $((round % 2)) -eq 0 ] && order=$(printf '%s\n' $BROKERS | tac | xargs)
        for name in $order; do
            [ "$name" = tern-defaults ] && continue
            if [ "$name" != mosquitto-nodelay ] && [ "$round" -le "$CONNECT_ROUNDS" ]; then
                status=0
                fresh "$name" || status=$?
                [ $status -eq 2 ] && continue
                [ $status -ne 0 ] && return 1
                bench "$name" connections --connections "$CONNECTIONS" --broker-pid "$BROKER_PID" --quiet
                stop_broker
            fi
            if [ "$round" -le "$LATENCY_ROUNDS" ]; then
                status=0
                fresh "$name" || status=$?
                [ $status -eq 2 ] && continue
                [ $status -ne 0 ] && return 1
                for qos in 0 1; do
                    bench "$name" latency --qos "$qos" --rate 1000 --duration "$DURATION" --quiet
                done
                stop_broker
            fi
        done
    done
}

# throughput NAME: the throughput scenarios, closed-loop then open-loop, and the retained one,
# on one broker run. The open-loop runs have the closed-loop runs' shapes, so each can be held
# to its closed-loop rate.
throughput() {
    local name=$1 status=0
    [ "$name" = mosquitto-nodelay ] && return 0
    fresh "$name" || status=$?
    [ $status -eq 2 ] && return 0
    [ $status -ne 0 ] && return 1
    local d=(--duration "$DURATION" --quiet) qos
    for qos in 0 1 2; do
        bench "$name" fan-in --qos "$qos" --publishers 8 "${d[@]}"
        bench "$name" fan-out --qos "$qos" --subscribers 16 "${d[@]}"
        bench "$name" pairs --qos "$qos" --pairs 16 "${d[@]}"
    done
    bench "$name" shared --qos 0 --publishers 10 --subscribers 10 "${d[@]}"
    # Publishers bounded only by their in-flight window of unacknowledged publishes, as devices
    # are: what the broker acknowledges and then does not deliver within the drain is reported
    # as lost. 1,024 is Tern's default Receive Maximum, the window an MQTT 5 client keeps with
    # it, and about the depth of the closed-loop runs (1,000 ahead of delivery), so the two
    # differ only in what holds a publisher back: delivery, or acknowledgement.
    local o=(--open-loop --inflight 1024 --drain "$OPEN_DRAIN" "${d[@]}")
    for qos in 1 2; do
        bench "$name" fan-in --qos "$qos" --publishers 8 "${o[@]}"
        bench "$name" fan-out --qos "$qos" --subscribers 16 "${o[@]}"
        bench "$name" pairs --qos "$qos" --pairs 16 "${o[@]}"
    done
    bench "$name" retained --retained "$RETAINED" --quiet
    stop_broker
}

main() {
    install
    mkdir -p "$OUT"
    rm -f "$OUT/results.jsonl" "$OUT/commands.txt" "$OUT/bench.log"
    # Both the broker and the generator hold one socket per connection.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
        echo "kernel: $(uname -r)"
        echo "mosquitto: $("$MOSQUITTO" -h 2>/dev/null | head -n 1 || true)"
        echo "rumqttd: $RUMQTTD_VERSION"
        echo "tern: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo '+changes')"
        echo "open files: $(ulimit -n)"
    } >"$OUT/machine.txt"
    interleaved_rounds
    for broker in $BROKERS; do
        throughput "$broker"
    done
    local write=(--write BENCHMARKS.md) chart=bench/compare.png
    if [ "${NO_WRITE:-}" = 1 ]; then
        # A trial run leaves the committed table and chart alone.
        write=()
        chart="$OUT/compare.png"
    fi
    "$VENV/bin/python" bench/report.py "$OUT" --chart "$chart" "${write[@]}"
}

main "$@"
