# Starting and stopping the brokers the benchmark scripts compare; sourced by bench/compare.sh
# and bench/latency.sh. The caller sets OUT, PORT, BROKER_CPU, TERN, MOSQUITTO and TOOLS, and
# defines log().
#
# Broker names: mosquitto, mosquitto-nodelay (TCP_NODELAY, for latency), rumqttd, tern with
# its durability: tern (os), tern-os, tern-fsync, tern-none, each with bench/tern.toml's raised
# limits, and tern-defaults: no configuration file, every default in force.

BROKER_PID=""

wait_for_port() {
    local deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        if [ $SECONDS -ge $deadline ] || ! kill -0 "$BROKER_PID" 2>/dev/null; then
            log "broker did not start; see $OUT/$1.log"
            return 1
        fi
        sleep 0.1
    done
}

# start_broker NAME: starts it pinned to BROKER_CPU, sets BROKER_PID, records the command in
# $OUT/commands.txt. Returns 2 when this tern cannot run NAME (no durable store).
start_broker() {
    local name=$1 cmd
    case $name in
        mosquitto | mosquitto-nodelay)
            {
                cat bench/mosquitto.conf
                echo "listener $PORT 127.0.0.1"
                [ "$name" = mosquitto-nodelay ] && echo "set_tcp_nodelay true"
            } >"$OUT/$name.conf"
            cmd=("$MOSQUITTO" -c "$OUT/$name.conf")
            ;;
        rumqttd)
            sed "s/@PORT@/$PORT/" bench/rumqttd.toml >"$OUT/rumqttd.toml"
            cmd=("$TOOLS/bin/rumqttd" --quiet --config "$OUT/rumqttd.toml")
            ;;
        tern-defaults)
            # As a user starts it, but for the data directory (kept under bench/out) and the log
            # level (warn, as for the other variants).
            rm -rf "$OUT/tern-data"
            cmd=("$TERN" serve --bind 127.0.0.1 --port "$PORT" --log warn)
            if "$TERN" serve --help | grep -q -- '--data-dir'; then
                cmd+=(--data-dir "$OUT/tern-data")
            fi
            ;;
        tern | tern-*)
            local durability=${name#tern-}
            [ "$name" = tern ] && durability=os
            rm -rf "$OUT/tern-data"
            cmd=("$TERN" serve --config bench/tern.toml --bind 127.0.0.1 --port "$PORT" --log warn)
            if "$TERN" serve --help | grep -q -- '--durability'; then
                cmd+=(--durability "$durability" --data-dir "$OUT/tern-data")
            elif [ "$durability" != os ]; then
                log "this tern has no durable store: skipping $name"
                return 2
            fi
            ;;
        *)
            log "unknown broker $name"
            return 1
            ;;
    esac
    echo "taskset -c $BROKER_CPU ${cmd[*]}" >>"$OUT/commands.txt"
    taskset -c "$BROKER_CPU" "${cmd[@]}" >"$OUT/$name.log" 2>&1 &
    BROKER_PID=$!
    wait_for_port "$name"
}

stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}
