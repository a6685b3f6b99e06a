#!/usr/bin/env bash
# The portable async driver (nbecho-async's example `async_tokio_echo`, on a current-thread
# tokio runtime) against the idiomatic single-thread tokio peer, in alternating rounds:
# ping-pong msgs/s and server CPU per message. Servers pinned to core 0, the load
# generator (nbecho bench, which checks every reply byte) to core 1.
#
#   benches/async.sh            # 3 rounds, 5 s per measurement
#   ROUNDS=5 DURATION=8 benches/async.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
PORT=9950
source benches/common.sh
cargo build --release -q -p nbecho-async --example async_tokio_echo

printf '| round | conns × bytes | server | msgs/s | server CPU µs/msg |\n|---|---|---|---|---|\n'
for round in $(seq "$ROUNDS"); do
    for scenario in "1 64" "64 64" "1000 64"; do
        read -r conns size <<<"$scenario"
        for server in async tokio; do
            start "$server"
            read -r rate cpu < <(taskset -c 1 "$BIN/nbecho" bench ":$PORT" --json --mode pingpong \
                -c "$conns" -s "$size" -d "$DURATION" --server-pid "$PID" \
                | field msgs_per_s server_cpu_us_per_msg)
            kill "$PID"; wait "$PID" 2>/dev/null || true
            printf '| %s | %s × %s | %s | %.0f | %.2f |\n' "$round" "$conns" "$size" "$server" "$rate" "$cpu"
        done
    done
done
