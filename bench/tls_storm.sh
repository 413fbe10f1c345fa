#!/usr/bin/env bash
# Routing latency during a TLS reconnect storm. Each round starts Tern (durability none, a plain
# listener and a TLS one) twice: once quiet, once while `tls_storm` (crates/tern-net/examples)
# keeps CONCURRENCY TLS clients connecting, sending CONNECT and closing, and each time runs the
# latency scenario (QoS 0, 1,000 msg/s) on the plain listener. The broker thread (the main
# thread) is pinned to BROKER_CPU, the generators to GENERATOR_CPU, and the latency generator
# runs SCHED_FIFO so the storm generator beside it does not delay its own sends and receipts;
# Tern's other threads (TLS handshakes) go where the scheduler puts them.
#
# Usage: bench/tls_storm.sh    (needs openssl, taskset, chrt; run as root for chrt)
# Environment: ROUNDS (default 3), DURATION (seconds per latency run, default 10),
#              CONCURRENCY (storm clients, default 64), TERN (default target/release/tern),
#              STORM (default target/release/examples/tls_storm).
# Output: bench/out/tls_storm/latency.jsonl (one `tern bench` JSON line per run, labelled quiet
# or storm), the storm generator's lines, and a table of p50 / p99 / p99.9 / max per run.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-64}
BROKER_CPU=${BROKER_CPU:-1}
GENERATOR_CPU=${GENERATOR_CPU:-0}
PLAIN_PORT=${PLAIN_PORT:-18884}
TLS_PORT=${TLS_PORT:-18885}
TERN=${TERN:-target/release/tern}
STORM=${STORM:-target/release/examples/tls_storm}
OUT=bench/out/tls_storm

if [ ! -x "$TERN" ] || [ ! -x "$STORM" ]; then
    cargo build --release --locked -p tern >&2
    cargo build --release --locked -p tern-net --example tls_storm >&2
fi
mkdir -p "$OUT"
rm -f "$OUT/latency.jsonl" "$OUT/storm.txt"

# An ECDSA P-256 CA and a server certificate for localhost, made for this run.
(
    cd "$OUT"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
        -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key \
        -out server.csr -subj /CN=localhost 2>/dev/null
    printf 'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -extfile server.ext 2>/dev/null
)
{
    cat bench/tern.toml
    printf '\n[[listener]]\nbind = "127.0.0.1:%s"\n' "$PLAIN_PORT"
    printf '\n[[listener]]\nbind = "127.0.0.1:%s"\nprotocol = "mqtts"\n' "$TLS_PORT"
    printf 'cert = "server.pem"\nkey = "server.key"\n'
} >"$OUT/tern.toml"

broker=
stop_broker() {
    if [ -n "$broker" ]; then
        kill "$broker" 2>/dev/null || true
        wait "$broker" 2>/dev/null || true
        broker=
    fi
}
trap stop_broker EXIT

for round in $(seq "$ROUNDS"); do
    for mode in quiet storm; do
        "$TERN" serve --config "$OUT/tern.toml" --durability none --log warn &
        broker=$!
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null && break
            sleep 0.1
        done
        # The main thread only: it is the broker thread.
        taskset -pc "$BROKER_CPU" "$broker" >/dev/null
        storm=
        if [ "$mode" = storm ]; then
            taskset -c "$GENERATOR_CPU" "$STORM" "127.0.0.1:$TLS_PORT" "$OUT/ca.pem" \
                "$((DURATION + 3))" "$CONCURRENCY" >>"$OUT/storm.txt" &
            storm=$!
            sleep 1
        fi
        taskset -c "$GENERATOR_CPU" chrt -f 10 "$TERN" bench --host 127.0.0.1 \
            --port "$PLAIN_PORT" --label "$mode" latency --qos 0 --rate 1000 \
            --duration "$DURATION" --quiet 2>/dev/null >>"$OUT/latency.jsonl"
        [ -n "$storm" ] && wait "$storm"
        stop_broker
        echo "round $round/$ROUNDS: $mode done (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    done
done

cat "$OUT/storm.txt" >&2
python3 - "$OUT/latency.jsonl" <<'EOF'
import json, sys
print("| run | p50 | p99 | p99.9 | max |")
print("| --- | --- | --- | --- | --- |")
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    run = json.loads(line)
    latency = run["latency_us"]
    print(f"| {run['label']} | {latency['p50']} | {latency['p99']} | {latency['p999']} "
          f"| {latency['max']} |")
EOF
