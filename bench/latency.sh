#!/usr/bin/env bash
# Latency at 1,000 messages/s, repeated and interleaved: each round starts every broker in turn
# (pinned like bench/compare.sh: broker on BROKER_CPU, generator on GENERATOR_CPU) and runs the
# latency scenario at QoS 0 and 1 against it. On a shared machine one 5 s run's p99 mostly
# measures what else ran during those 5 s; rounds spread that noise over every broker alike,
# and the summary reports the median (and range) of each broker's p99 over the rounds.
#
# Usage: bench/latency.sh            (run bench/compare.sh once first: it installs Mosquitto)
# Environment: ROUNDS (default 5), DURATION (seconds per run, default 5),
#              BROKERS (default "mosquitto mosquitto-nodelay tern-none tern-os tern-fsync").
# Output: bench/out/latency.jsonl (one `tern bench` JSON line per run) and a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
BROKERS=${BROKERS:-"mosquitto mosquitto-nodelay tern-none tern-os tern-fsync"}
BROKER_CPU=${BROKER_CPU:-1}
GENERATOR_CPU=${GENERATOR_CPU:-0}
PORT=${PORT:-18884}
OUT=bench/out
TERN=target/release/tern
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

cargo build --release --locked -p tern >&2
mkdir -p "$OUT"
rm -f "$OUT/latency.jsonl"
BROKER_PID=""
stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}
trap stop_broker EXIT

start_broker() {
    local name=$1 cmd
    case $name in
        mosquitto | mosquitto-nodelay)
            {
                cat bench/mosquitto.conf
                echo "listener $PORT 127.0.0.1"
                [ "$name" = mosquitto-nodelay ] && echo "set_tcp_nodelay true"
            } >"$OUT/latency-$name.conf"
            cmd=("$MOSQUITTO" -c "$OUT/latency-$name.conf")
            ;;
        tern-*)
            rm -rf "$OUT/latency-data"
            cmd=("$TERN" serve --config bench/tern.toml --bind 127.0.0.1 --port "$PORT" --log warn
                --durability "${name#tern-}" --data-dir "$OUT/latency-data")
            ;;
    esac
    taskset -c "$BROKER_CPU" "${cmd[@]}" >"$OUT/latency-$name.log" 2>&1 &
    BROKER_PID=$!
    local deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        [ $SECONDS -lt $deadline ] && kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
}

for round in $(seq "$ROUNDS"); do
    for name in $BROKERS; do
        start_broker "$name"
        for qos in 0 1; do
            taskset -c "$GENERATOR_CPU" "$TERN" bench --host 127.0.0.1 --port "$PORT" \
                --label "$name" latency --qos "$qos" --rate 1000 --duration "$DURATION" --quiet \
                2>/dev/null >>"$OUT/latency.jsonl"
        done
        stop_broker
        echo "round $round/$ROUNDS: $name done (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    done
done

python3 - "$OUT/latency.jsonl" "$BROKERS" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
brokers = sys.argv[2].split()
print("| QoS | " + " | ".join(brokers) + " |")
print("| --- |" + " --- |" * len(brokers))
for qos in (0, 1):
    cells = []
    for b in brokers:
        p99 = sorted(r["latency_us"]["p99"] for r in runs if r.get("label") == b and r.get("qos") == qos)
        p50 = [r["latency_us"]["p50"] for r in runs if r.get("label") == b and r.get("qos") == qos]
        cells.append(f"{statistics.median(p50):.0f} / **{statistics.median(p99):.0f}** ({p99[0]}–{p99[-1]})"
                     if p99 else "—")
    print(f"| QoS {qos} | " + " | ".join(cells) + " |")
EOF
