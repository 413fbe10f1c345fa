#!/usr/bin/env bash
# Tern against itself under several configurations: the throughput scenarios of
# bench/compare.sh (closed loop at QoS 0, 1 and 2; open loop at QoS 1 and 2, 1,024 in flight),
# in rounds. Each round starts one fresh broker per configuration, all pinned to one core (the
# generator to the other, as compare.sh pins them), and runs each scenario against every
# broker in turn, every other scenario in reverse order: the machine's load of a minute falls on
# every configuration alike. Besides the rates, each run records the broker's CPU time (user +
# system, all threads, from /proc/PID/stat) per message delivered, which other work on a
# shared machine moves much less than the rates; and the load average when it ended.
#
# Usage: CONFIGS="raised=old.toml defaults=" bench/configs.sh
#   each NAME=FILE is one configuration; an empty FILE runs `tern serve` without one, and
#   NAME=FILE=BINARY runs another build of `tern serve` (the generator is always this one).
# Environment: ROUNDS (default 3), DURATION (5), OPEN_DRAIN (20), DURABILITY (os: the
#   benchmark's sessions are clean, so only retained messages reach the store), SCENARIOS
#   (default: the fifteen flow runs, as "fan-in:1" or "fan-in:1:open", then "retained"),
#   RETAINED (100000), BROKER_CPU (1), GENERATOR_CPU (0), PORT (18885: the first broker's;
#   the next ones take the ports after it).
# Output: bench/out/configs/runs.jsonl (one `tern bench` JSON line per run, with `config`,
#   `round`, `broker_cpu_s` and `load_average` added) and a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIGS=${CONFIGS:?"CONFIGS=\"name=file name2=\" (an empty file: no configuration)"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
OPEN_DRAIN=${OPEN_DRAIN:-20}
DURABILITY=${DURABILITY:-os}
BROKER_CPU=${BROKER_CPU:-1}
GENERATOR_CPU=${GENERATOR_CPU:-0}
BASE_PORT=${PORT:-18885}
OUT=bench/out/configs
TERN=target/release/tern
SHAPE_fan_in="--publishers 8"
SHAPE_fan_out="--subscribers 16"
SHAPE_pairs="--pairs 16"
SHAPE_retained=""
DEFAULT_SCENARIOS=""
for open in "" ":open"; do
    for scenario in fan-in fan-out pairs; do
        for qos in 0 1 2; do
            [ -n "$open" ] && [ "$qos" = 0 ] && continue
            DEFAULT_SCENARIOS+=" $scenario:$qos$open"
        done
    done
done
SCENARIOS=${SCENARIOS:-"$DEFAULT_SCENARIOS retained"}
RETAINED=${RETAINED:-100000}

cargo build --release --locked -p tern --quiet >&2
mkdir -p "$OUT"
rm -f "$OUT/runs.jsonl"
log() { printf '== %s\n' "$*" >&2; }
# shellcheck source=bench/brokers.sh
source bench/brokers.sh

declare -A PIDS=() PORTS=()
stop_all() {
    local name
    for name in "${!PIDS[@]}"; do
        BROKER_PID=${PIDS[$name]}
        stop_broker
    done
    PIDS=()
}
trap stop_all EXIT

# start NAME FILE BINARY PORT: a fresh broker with FILE (none when empty).
start() {
    local name=$1 file=$2 binary=${3:-$TERN} cmd
    PORT=$4
    rm -rf "$OUT/data-$name"
    cmd=("$binary" serve --bind 127.0.0.1 --port "$PORT" --durability "$DURABILITY"
        --data-dir "$OUT/data-$name" --log warn)
    [ -n "$file" ] && cmd+=(--config "$file")
    echo "taskset -c $BROKER_CPU ${cmd[*]}" >>"$OUT/commands.txt"
    taskset -c "$BROKER_CPU" "${cmd[@]}" >"$OUT/$name.log" 2>&1 &
    BROKER_PID=$!
    PIDS[$name]=$BROKER_PID
    PORTS[$name]=$PORT
    wait_for_port "$name"
}

# The CPU time of broker NAME so far, in clock ticks (utime + stime: fields 14 and 15).
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/${PIDS[$1]}/stat"
}

run() {
    local name=$1 round=$2 spec=$3 port=${PORTS[$1]} scenario qos open shape before after line
    IFS=: read -r scenario qos open <<<"$spec"
    shape=SHAPE_${scenario//-/_}
    local args=("$scenario" --qos "$qos" ${!shape} --duration "$DURATION" --quiet)
    [ "$open" = open ] && args+=(--open-loop --inflight 1024 --drain "$OPEN_DRAIN")
    [ "$scenario" = retained ] && args=(retained --retained "$RETAINED" --quiet)
    echo "taskset -c $GENERATOR_CPU $TERN bench --port $port ${args[*]}" >>"$OUT/commands.txt"
    before=$(cpu_ticks "$name")
    if ! line=$(taskset -c "$GENERATOR_CPU" "$TERN" bench --host 127.0.0.1 --port "$port" \
        --label "$name" "${args[@]}" 2>>"$OUT/bench.log"); then
        log "$name round $round: $spec failed"
        return 0
    fi
    after=$(cpu_ticks "$name")
    local cpu load
    cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }')
    load=$(cut -d' ' -f1 /proc/loadavg)
    printf '{"config":"%s","round":%d,"broker_cpu_s":%s,"load_average":%s,%s\n' \
        "$name" "$round" "$cpu" "$load" "${line#\{}" >>"$OUT/runs.jsonl"
}

: >"$OUT/commands.txt"
read -ra configs <<<"$CONFIGS"
for round in $(seq "$ROUNDS"); do
    # Every configuration's broker runs for the whole round, each on its port and all on
    # BROKER_CPU; each scenario runs against one after the other, in alternating order, so
    # the same minute of the machine's load falls on all of them.
    index=0
    for entry in "${configs[@]}"; do
        IFS== read -r name file binary <<<"$entry"
        start "$name" "$file" "$binary" $((BASE_PORT + index))
        index=$((index + 1))
    done
    turn=$round
    for spec in $SCENARIOS; do
        order=("${configs[@]}")
        if [ $((turn % 2)) -eq 0 ]; then
            mapfile -t order < <(printf '%s\n' "${configs[@]}" | tac)
        fi
        turn=$((turn + 1))
        for entry in "${order[@]}"; do
            run "${entry%%=*}" "$round" "$spec"
        done
    done
    stop_all
    log "round $round of $ROUNDS done (load average $(cut -d' ' -f1 /proc/loadavg))"
done

python3 - "$OUT/runs.jsonl" "$CONFIGS" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
names = [entry.split("=")[0] for entry in sys.argv[2].split()]
keys = []
for r in runs:
    key = (r["scenario"], r["qos"], r["open_loop"])
    if key not in keys:
        keys.append(key)
print("| Scenario | " + " | ".join(
    f"{n}: delivered/s, median (rounds) | {n}: broker CPU per message" for n in names) + " |")
print("| --- |" + " --- | --- |" * len(names))
for scenario, qos, open_loop in keys:
    cells = [f"{scenario} QoS {qos}" + (" open loop" if open_loop else "")
             if scenario != "retained" else "retained, one `site/#` subscriber"]
    for name in names:
        mine = [r for r in runs if r["config"] == name
                and (r["scenario"], r["qos"], r["open_loop"]) == (scenario, qos, open_loop)]
        if not mine:
            cells += ["—", "—"]
            continue
        per = [r["broker_cpu_s"] * 1e9 / max(1, r["delivered_in_window"] + r["backlog"])
               for r in mine]
        bad = sum(r["lost"] + r["duplicated"] + r["out_of_order"] for r in mine)
        note = f" **lost/dup/reordered {bad:,}**" if bad else ""
        if scenario == "retained":
            # The time from SUBSCRIBE to the last retained message; the CPU per message
            # includes publishing them.
            times = [r["retained"]["deliver_s"] for r in mine]
            got = min(r["delivered_in_window"] + r["backlog"] for r in mine)
            cells.append(f"{got:,} of {mine[0]['retained']['retained']:,} in "
                         f"{statistics.median(times):.3f} s ("
                         + ", ".join(f"{x:.3f}" for x in times) + ")" + note)
        else:
            rates = [r["delivered_per_s"] for r in mine]
            cells.append(f"{statistics.median(rates) / 1e3:,.0f}k ("
                         + ", ".join(f"{x / 1e3:,.0f}" for x in rates) + ")" + note)
        cells.append(f"{statistics.median(per):,.0f} ns ("
                     + ", ".join(f"{x:,.0f}" for x in per) + ")")
    print("| " + " | ".join(cells) + " |")
loads = [r["load_average"] for r in runs]
print(f"\nLoad average at the end of each run: {min(loads)}–{max(loads)} "
      f"(median {statistics.median(loads)}).")
EOF
