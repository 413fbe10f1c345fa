#!/usr/bin/env bash
# Logins of a fleet: USERS devices, each with its own user name and password, connect (the
# first login), disconnect and connect again (the reconnect after an outage), against a fresh
# `tern serve` with the login cache off and then on. Each login without the cache costs one
# argon2 check (tern passwd's parameters), run on helper threads off the broker thread.
#
# Usage: bench/logins.sh
# Environment: USERS (default 10000), ROUNDS (reconnect rounds per broker, default 2),
#              CACHES (login_cache_entries_max of each broker in turn, default "0 20000").
# Output: bench/out/logins/logins.jsonl (one `tern bench` JSON line per round) and the human
# summaries on standard error.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-10000}
ROUNDS=${ROUNDS:-2}
CACHES=${CACHES:-"0 20000"}
PORT=${PORT:-18885}
OUT=bench/out/logins
TERN=target/release/tern

cargo build --release --locked -p tern >&2
mkdir -p "$OUT"
rm -f "$OUT/logins.jsonl" "$OUT/passwd"
# One hash made by `tern passwd`, given to every user: each check costs the same as a real one.
echo pw | "$TERN" passwd "$OUT/passwd" dev0 >&2
python3 - "$OUT/passwd" "$USERS" <<'EOF'
import sys
path, users = sys.argv[1], int(sys.argv[2])
secrets = open(path).read().strip().split(":", 1)[1]
with open(path, "w") as out:
    out.writelines(f"dev{n}:{secrets}\n" for n in range(users))
EOF

for cache in $CACHES; do
  cat > "$OUT/tern.toml" <<TOML
sys_interval_secs = 0
[store]
durability = "none"
[[listener]]
bind = "127.0.0.1:$PORT"
[limits]
connections_max = $((USERS + 1000))
connections_per_address_max = 0
connection_rate_per_address_max = 0
login_cache_entries_max = $cache
[auth.default]
password_file = "passwd"
TOML
  "$TERN" serve --config "$OUT/tern.toml" --log warn 2> "$OUT/broker.log" &
  broker=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    kill -0 "$broker"
    sleep 0.1
  done
  for round in $(seq 0 "$ROUNDS"); do
    # Round 0 is every device's first login; the others are reconnects.
    "$TERN" bench --port "$PORT" --label "cache-$cache-round-$round" connections \
      --connections "$USERS" --username dev --users "$USERS" --password pw \
      --broker-pid "$broker" --quiet >> "$OUT/logins.jsonl"
  done
  kill "$broker"
  wait "$broker" || true
done
