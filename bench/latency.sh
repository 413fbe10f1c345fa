#!/usr/bin/env bash
# Latency at 1,000 messages/s, repeated and interleaved: each round starts every broker in turn
# (pinned like bench/compare.sh: broker on BROKER_CPU, generator on GENERATOR_CPU) and runs the
# latency scenario at QoS 0 and 1 against it. On a shared machine one 5 s run's p99 mostly
# measures what else ran during those 5 s; rounds spread that noise over every broker alike,
# and the summary pools each broker's rounds into one distribution (p50 / p99 of all samples,
# with the range of the rounds' own p99s), then gives each Tern's p99 gap to the better
# Mosquitto with the range resampling the rounds yields (bench/report.py `p99_gap`).
#
# Usage: bench/latency.sh            (run bench/compare.sh once first: it installs Mosquitto)
# Environment: ROUNDS (default 5), DURATION (seconds per run, default 5),
#              BROKERS (default "mosquitto mosquitto-nodelay tern-none tern-os tern-fsync").
# Output: bench/out/latency/latency.jsonl (one `tern bench` JSON line per run) and a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
BROKERS=${BROKERS:-"mosquitto mosquitto-nodelay tern-none tern-os tern-fsync"}
BROKER_CPU=${BROKER_CPU:-1}
GENERATOR_CPU=${GENERATOR_CPU:-0}
PORT=${PORT:-18884}
OUT=bench/out/latency
TERN=target/release/tern
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

cargo build --release --locked -p tern >&2
mkdir -p "$OUT"
rm -f "$OUT/latency.jsonl"
TOOLS=bench/.tools
log() { printf '== %s\n' "$*" >&2; }
# shellcheck source=bench/brokers.sh
source bench/brokers.sh
trap stop_broker EXIT

for round in $(seq "$ROUNDS"); do
    for name in $BROKERS; do
        status=0
        start_broker "$name" || status=$?
        [ $status -eq 2 ] && continue
        [ $status -ne 0 ] && exit 1
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
import json, sys
sys.path.insert(0, "bench")
from report import better_mosquitto_gap, pooled_latency
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
brokers = sys.argv[2].split()
print("| QoS | " + " | ".join(brokers) + " |")
print("| --- |" + " --- |" * len(brokers))
gaps = []
for qos in (0, 1):
    cells = []
    rows = {}
    for b in brokers:
        mine = [r for r in runs if r.get("label") == b and r.get("qos") == qos and r.get("latency_us")]
        if not mine:
            cells.append("—")
            continue
        row = rows[b] = pooled_latency(mine)
        rounds = row["p99_rounds"]
        cells.append(f"{row['latency_us']['p50']} / **{row['latency_us']['p99']}** "
                     f"(rounds {rounds[0]}–{rounds[-1]})")
    print(f"| QoS {qos} | " + " | ".join(cells) + " |")
    # Each Tern against the better Mosquitto, with the range a rerun could give.
    mosquittos = [rows[b] for b in rows if b.startswith("mosquitto")]
    if mosquittos:
        for b in rows:
            gap = better_mosquitto_gap(rows[b], mosquittos)[1] if b.startswith("tern") else None
            if gap:
                gaps.append(f"QoS {qos} {b} {gap[0]:+d} µs ({gap[1]:+d} to {gap[2]:+d})")
if gaps:
    print()
    print("p99 minus the better Mosquitto's (95% of 1,000 resamplings of the rounds): "
          + "; ".join(gaps) + ".")
EOF
