#!/usr/bin/env bash
# Connections from one address against `tern serve` with its defaults (no configuration file;
# the listener and the data directory on the command line, durability fsync):
#   1. a fleet: `tern bench connections` opens FLEET connections from 127.0.0.1 (20,000, or the
#      broker's logged connections_max if the open-file limit allows fewer) and reads the
#      broker's memory and CPU per connection;
#   2. floods from 127.0.0.1, one broker each: quiet (none), idle (IDLE sockets that never send
#      CONNECT, each connecting again when the broker closes it) and churn (CHURN connections
#      at a time, each reset as soon as it is up), while `connect_flood probe` connects and
#      sends messages around from 127.0.0.2; the broker's resident memory is read at the end.
# The broker is pinned to BROKER_CPU, the generators to GENERATOR_CPU, the probe under
# SCHED_FIFO so that the flood beside it does not delay its own sends and receipts.
#
# Usage: bench/one_address.sh    (needs taskset, chrt; run as root for chrt)
# Environment: ROUNDS (default 3), DURATION (seconds per probe, default 10), IDLE (default
#              12000), CHURN (default 256), FLEET (default 20000), TERN (default
#              target/release/tern), FLOODER (default target/release/examples/connect_flood).
# Output: bench/out/one_address/: connections.jsonl, flood.txt, the brokers' logs.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
IDLE=${IDLE:-12000}
CHURN=${CHURN:-256}
FLEET=${FLEET:-20000}
BROKER_CPU=${BROKER_CPU:-1}
GENERATOR_CPU=${GENERATOR_CPU:-0}
PORT=${PORT:-18886}
TERN=${TERN:-target/release/tern}
FLOODER=${FLOODER:-target/release/examples/connect_flood}
OUT=bench/out/one_address

if [ ! -x "$TERN" ] || [ ! -x "$FLOODER" ]; then
    cargo build --release --locked -p tern >&2
    cargo build --release --locked -p tern-net --example connect_flood >&2
fi
mkdir -p "$OUT"
rm -f "$OUT/connections.jsonl" "$OUT/flood.txt" "$OUT/commands.txt"
# The generators may hold what the hard limit allows; the broker raises its own limit itself.
ulimit -n "$(ulimit -Hn)"

broker=
start_broker() {
    rm -rf "$OUT/data"
    echo "taskset -c $BROKER_CPU $TERN serve --bind 127.0.0.1 --port $PORT --data-dir $OUT/data" \
        >>"$OUT/commands.txt"
    taskset -c "$BROKER_CPU" "$TERN" serve --bind 127.0.0.1 --port "$PORT" \
        --data-dir "$OUT/data" 2>"$OUT/broker-$1.log" &
    broker=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "the broker did not start; see $OUT/broker-$1.log" >&2
    return 1
}
stop_broker() {
    if [ -n "$broker" ]; then
        kill "$broker" 2>/dev/null || true
        wait "$broker" 2>/dev/null || true
        broker=
    fi
}
trap stop_broker EXIT
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# The kernel's count of SYNs dropped because a listen queue was full (all listeners).
listen_overflows() {
    awk '/^TcpExt:/ { if (!names) { for (i = 1; i <= NF; i++) field[$i] = i; names = 1 }
                      else print $field["ListenOverflows"] }' /proc/net/netstat
}
# Most connections from one address the broker held without a CONNECT, from its refusals.
held_without_connect() {
    grep -o '[0-9]* connections from this address have not sent CONNECT' "$1" |
        cut -d' ' -f1 | sort -n | tail -1
}
# Refusals the broker logged: one line each, the rest summed up per second.
refusals() {
    awk '/refused connection from/ { n++ }
         /more refused connections not logged/ { for (i = 1; i <= NF; i++) if ($i == "more") n += $(i - 1) }
         END { print n + 0 }' "$1"
}

for round in $(seq "$ROUNDS"); do
    start_broker "fleet-$round"
    # The figure the broker logs at start-up: what its open-file limit allows.
    cap=$(grep -o 'connections_max [0-9]*' "$OUT/broker-fleet-$round.log" | head -1 | cut -d' ' -f2)
    fleet=$FLEET
    [ -n "$cap" ] && [ "$cap" -lt "$fleet" ] && fleet=$cap
    taskset -c "$GENERATOR_CPU" "$TERN" bench --host 127.0.0.1 --port "$PORT" \
        --label "fleet-$fleet" connections --connections "$fleet" --broker-pid "$broker" \
        --quiet >>"$OUT/connections.jsonl"
    echo "fleet round $round: $fleet connections, $(refusals "$OUT/broker-fleet-$round.log") refused" \
        >>"$OUT/flood.txt"
    stop_broker
    echo "round $round/$ROUNDS: fleet of $fleet done" >&2

    for mode in quiet idle churn; do
        start_broker "$mode-$round"
        flooder=
        case $mode in
            idle) sockets=$IDLE ;;
            churn) sockets=$CHURN ;;
            *) sockets= ;;
        esac
        if [ -n "$sockets" ]; then
            taskset -c "$GENERATOR_CPU" "$FLOODER" flood "127.0.0.1:$PORT" "$((DURATION + 3))" \
                "$sockets" "$mode" >>"$OUT/flood.txt" &
            flooder=$!
            # Let the flood reach its height before the probe starts.
            sleep 2
        fi
        overflows=$(listen_overflows)
        printf '%s round %s: ' "$mode" "$round" >>"$OUT/flood.txt"
        taskset -c "$GENERATOR_CPU" chrt -f 10 "$FLOODER" probe 127.0.0.2 "127.0.0.1:$PORT" \
            "$DURATION" >>"$OUT/flood.txt"
        echo "$mode round $round: broker resident $(rss_kib "$broker") KiB" >>"$OUT/flood.txt"
        if [ -n "$flooder" ]; then
            wait "$flooder"
        fi
        stop_broker
        echo "$mode round $round: $(refusals "$OUT/broker-$mode-$round.log") refused at accept," \
            "at most $(held_without_connect "$OUT/broker-$mode-$round.log") held without CONNECT," \
            "$(($(listen_overflows) - overflows)) SYNs dropped on a full listen queue" \
            >>"$OUT/flood.txt"
        echo "round $round/$ROUNDS: $mode done (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    done
done
cat "$OUT/flood.txt" >&2
