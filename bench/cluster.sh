#!/usr/bin/env bash
# Tern's nodes across NATS against NATS' own MQTT, with the same load, in one run.
#
# One nats-server with JetStream and its `mqtt` block (the MQTT a NATS user would otherwise
# pick), three `tern serve` nodes joined to it through [cluster], and one `tern serve` alone
# (the single-node figure). In each round every scenario runs against each system in turn, in
# alternating order, so a busy minute of the shared machine falls on all of them alike:
#   tern-cluster  publishers on node 1, subscribers on node 2 (`--sub-port`): every message
#                 crosses between nodes through NATS;
#   nats-mqtt     publishers and subscribers on the server's MQTT listener;
#   tern-single   one node without [cluster].
# Then each system holds C idle connections with one QoS 1 subscription each (`connections
# --subscribe-qos 1`), Tern's on node 2.
#
# Every run records the CPU time (user + system, from /proc/PID/stat) of each process of the
# system under test (nats-server, each node) and the load average when it ended. The systems
# run on SYSTEM_CPU, the generator on GENERATOR_CPU (taskset), all under `nice -n 10`.
#
# Environment: ROUNDS (3), DURATION (5), PAIRS (10), SCENARIOS ("pairs:0 pairs:1 latency:1"),
#   SUBSCRIPTIONS (10000; 0 skips), RUN_TIMEOUT (600 s: a run still going is stopped and
#   logged as failed), SYSTEM_CPU (1), GENERATOR_CPU (0), PORT (18890: NATS' MQTT;
#   the nodes take the next three, the single node the one after).
# Output: bench/out/cluster/runs.jsonl (one `tern bench` JSON line per run with `system`,
#   `round`, `cpu_s` per process and `load_average` added), logs beside it, and Markdown tables
#   on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
PAIRS=${PAIRS:-10}
SCENARIOS=${SCENARIOS:-"pairs:0 pairs:1 latency:1"}
SUBSCRIPTIONS=${SUBSCRIPTIONS:-10000}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
SYSTEM_CPU=${SYSTEM_CPU:-1}
GENERATOR_CPU=${GENERATOR_CPU:-0}
BASE=${PORT:-18890}
OUT=bench/out/cluster
TERN=target/release/tern
NATS=${NATS:-nats-server}

nice -n 10 cargo build --release --locked -p tern --quiet >&2
rm -rf "$OUT"
mkdir -p "$OUT"
log() { printf '== %s\n' "$*" >&2; }

declare -A PIDS=()
stop_all() {
    local name
    for name in "${!PIDS[@]}"; do
        kill "${PIDS[$name]}" 2>/dev/null || true
    done
    for name in "${!PIDS[@]}"; do
        wait "${PIDS[$name]}" 2>/dev/null || true
    done
    PIDS=()
}
trap stop_all EXIT

# launch NAME COMMAND...: runs it on SYSTEM_CPU, its log in $OUT/NAME.log.
launch() {
    local name=$1
    shift
    echo "taskset -c $SYSTEM_CPU nice -n 10 $*" >>"$OUT/commands.txt"
    taskset -c "$SYSTEM_CPU" nice -n 10 "$@" >"$OUT/$name.log" 2>&1 &
    PIDS[$name]=$!
}

wait_for() {
    local name=$1 port=$2 deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if [ $SECONDS -ge $deadline ] || ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            log "$name did not start; see $OUT/$name.log"
            exit 1
        fi
        sleep 0.1
    done
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/${PIDS[$1]}/stat"; }

# The processes of each system whose CPU time a run records.
declare -A MEMBERS=(
    [tern-cluster]="nats node1 node2 node3"
    [nats-mqtt]="nats"
    [tern-single]="single"
)
declare -A PUB_PORT=([tern-cluster]=$((BASE + 1)) [nats-mqtt]=$BASE [tern-single]=$((BASE + 4)))
declare -A SUB_PORT=([tern-cluster]=$((BASE + 2)) [nats-mqtt]=$BASE [tern-single]=$((BASE + 4)))

start_systems() {
    rm -rf "$OUT/data"
    mkdir -p "$OUT/data"
    cat >"$OUT/nats.conf" <<EOF
server_name: bench
host: 127.0.0.1
port: -1
jetstream { store_dir: "$PWD/$OUT/data/nats" }
mqtt { host: 127.0.0.1, port: $BASE }
http: "127.0.0.1:$((BASE + 5))"
EOF
    launch nats "$NATS" -c "$OUT/nats.conf"
    wait_for nats "$BASE"
    local url n
    url="nats://127.0.0.1:$(grep -o 'client connections on [0-9.:]*' "$OUT/nats.log" |
        head -1 | rev | cut -d: -f1 | rev)"
    for n in 1 2 3; do
        printf '[cluster]\nnats = ["%s"]\nnode_id = "n%s"\n' "$url" "$n" >"$OUT/node$n.toml"
        launch "node$n" "$TERN" serve --config "$OUT/node$n.toml" --bind 127.0.0.1 \
            --port $((BASE + n)) --durability os --data-dir "$OUT/data/node$n" --log warn
    done
    launch single "$TERN" serve --bind 127.0.0.1 --port $((BASE + 4)) --durability os \
        --data-dir "$OUT/data/single" --log warn
    for n in 1 2 3; do wait_for "node$n" $((BASE + n)); done
    wait_for single $((BASE + 4))
}

# run SYSTEM ROUND ARGS...: one `tern bench` run, with the CPU time of each member; the
# publishers (and the connections scenario) go to RUN_PORT when set.
run() {
    local system=$1 round=$2 member line cpu="" port
    shift 2
    port=${RUN_PORT:-${PUB_PORT[$system]}}
    declare -A before=()
    for member in ${MEMBERS[$system]}; do before[$member]=$(cpu_ticks "$member"); done
    echo "taskset -c $GENERATOR_CPU $TERN bench --port $port --sub-port ${SUB_PORT[$system]} $*" \
        >>"$OUT/commands.txt"
    if ! line=$(timeout "$RUN_TIMEOUT" taskset -c "$GENERATOR_CPU" nice -n 10 "$TERN" bench \
        --host 127.0.0.1 \
        --port "$port" --sub-port "${SUB_PORT[$system]}" --label "$system" \
        --quiet "$@" 2>>"$OUT/bench.log"); then
        log "$system round $round: $* failed (see $OUT/bench.log)"
        return 0
    fi
    for member in ${MEMBERS[$system]}; do
        cpu+="\"$member\":$(awk -v t=$(($(cpu_ticks "$member") - before[$member])) \
            -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }'),"
    done
    printf '{"system":"%s","round":%d,"cpu_s":{%s},"load_average":%s,%s\n' "$system" \
        "$round" "${cpu%,}" "$(cut -d' ' -f1 /proc/loadavg)" "${line#\{}" >>"$OUT/runs.jsonl"
}

: >"$OUT/commands.txt"
systems=(tern-cluster nats-mqtt tern-single)
start_systems
for round in $(seq "$ROUNDS"); do
    for spec in $SCENARIOS; do
        IFS=: read -r scenario qos <<<"$spec"
        order=("${systems[@]}")
        [ $(((round + ${#spec}) % 2)) -eq 0 ] && order=(nats-mqtt tern-single tern-cluster)
        for system in "${order[@]}"; do
            run "$system" "$round" "$scenario" --qos "$qos" --pairs "$PAIRS" \
                --duration "$DURATION"
        done
    done
    log "round $round of $ROUNDS done (load average $(cut -d' ' -f1 /proc/loadavg))"
done
if [ "$SUBSCRIPTIONS" -gt 0 ]; then
    for system in tern-cluster nats-mqtt; do
        # Held on the subscribers' node; the memory figure is that process's.
        pid=${PIDS[nats]}
        [ "$system" = tern-cluster ] && pid=${PIDS[node2]}
        # Every 5 s while it runs: nats-server's memory and its JetStream totals (consumers).
        (
            while sleep 5; do
                printf '%s %s rss_kib=%s %s\n' "$(date -u +%T)" "$system" \
                    "$(awk '/VmRSS/ { print $2 }' "/proc/${PIDS[nats]}/status")" \
                    "$(curl -s "http://127.0.0.1:$((BASE + 5))/jsz" | tr -d '\n ' |
                        grep -o '"streams":[0-9]*,"consumers":[0-9]*')"
            done
        ) >>"$OUT/subscriptions.log" 2>&1 &
        sampler=$!
        RUN_PORT=${SUB_PORT[$system]} run "$system" 1 connections --connections \
            "$SUBSCRIPTIONS" --subscribe-qos 1 --broker-pid "$pid" --hold 5
        kill "$sampler"
    done
fi
stop_all

python3 - "$OUT/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
systems = ["tern-cluster", "nats-mqtt", "tern-single"]
med = statistics.median
keys = []
for r in runs:
    key = (r["scenario"], r["qos"])
    if r["scenario"] != "connections" and key not in keys:
        keys.append(key)
print("| Scenario | System | delivered/s, median (rounds) | latency p50 / p99 / max µs (median) "
      "| CPU per message: all processes (nats-server) | load average |")
print("| --- | --- | --- | --- | --- | --- |")
for scenario, qos in keys:
    for system in systems:
        mine = [r for r in runs if r["system"] == system and (r["scenario"], r["qos"]) == (scenario, qos)]
        if not mine:
            continue
        bad = sum(r["lost"] + r["duplicated"] + r["out_of_order"] for r in mine)
        rates = [r["delivered_per_s"] for r in mine]
        msgs = [max(1, r["delivered_in_window"] + r["backlog"]) for r in mine]
        total = [sum(r["cpu_s"].values()) * 1e6 / m for r, m in zip(mine, msgs)]
        nats = [r["cpu_s"].get("nats", 0) * 1e6 / m for r, m in zip(mine, msgs)]
        lat = [r["latency_us"] or {} for r in mine]
        p = lambda k: med([l.get(k, 0) for l in lat])
        note = f" **lost/dup/reordered {bad:,}**" if bad else ""
        print(f"| {scenario} QoS {qos} | {system} | {med(rates):,.0f} ("
              + ", ".join(f"{x:,.0f}" for x in rates) + f"){note} | {p('p50'):,.0f} / "
              f"{p('p99'):,.0f} / {p('max'):,.0f} | {med(total):.1f} µs ({med(nats):.1f} µs) | "
              + ", ".join(str(r["load_average"]) for r in mine) + " |")
subs = [r for r in runs if r["scenario"] == "connections"]
if subs:
    print("\n| System | connections | subscriptions granted | failed (first reason) | time | "
          "RSS after (KiB) | CPU (s) per process | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in subs:
        c = r["connections"]
        print(f"| {r['system']} | {c['connections']:,} | {c['subscribed']:,} | "
              f"{c['subscribe_failed']:,} ({c.get('first_subscribe_failure') or '—'}) | "
              f"{c['connect_s']:.2f} s | {c.get('rss_after_kib')} | "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_s"].items())
              + f" | {r['load_average']} |")
EOF
