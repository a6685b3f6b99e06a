#!/usr/bin/env bash
# System calls and server CPU per echoed message, counted by `perf stat` on the server
# (`raw_syscalls:sys_enter` and `task-clock`) while `nbecho bench` runs a ping-pong, for
# each server in SERVERS, alternating, ROUNDS times. Servers pinned to core 0, the load
# generator to core 1. Needs perf with tracepoint access (root, or
# kernel.perf_event_paranoid <= -1).
#
#   benches/syscalls.sh                                 # 1 and 64 connections, 3 rounds
#   SERVERS="uring uring-wait mio" CONNS=1 ROUNDS=6 benches/syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
CONNS=${CONNS:-"1 64"}
SIZE=${SIZE:-64}
SERVERS=${SERVERS:-"uring uring-wait epoll mio"}
command -v perf >/dev/null || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 1; }
PORT=9850
source benches/common.sh

printf '| round | conns | server | msgs/s | p50 µs | system calls per message | server CPU µs per message |\n'
printf '|---|---|---|---|---|---|---|\n'
for round in $(seq "$ROUNDS"); do
    for conns in $CONNS; do
        for server in $SERVERS; do
            start "$server"
            perf stat -e 'raw_syscalls:sys_enter,task-clock' -p "$PID" -o "$OUT/perf" &
            stat_pid=$!
            sleep 0.2
            taskset -c 1 "$BIN/nbecho" bench ":$PORT" --json --mode pingpong -c "$conns" \
                -s "$SIZE" -d "$DURATION" > "$OUT/bench.json"
            kill -INT "$stat_pid"; wait "$stat_pid" || true
            kill "$PID"; wait "$PID" 2>/dev/null || true
            python3 - "$OUT" "$round" "$conns" "$server" <<'PY'
import json, re, sys
out, round_, conns, server = sys.argv[1:]
d = json.load(open(f"{out}/bench.json"))
perf = open(f"{out}/perf").read()
calls = float(re.search(r"([\d,]+)\s+raw_syscalls:sys_enter", perf).group(1).replace(",", ""))
msec = float(re.search(r"([\d,.]+)\s+msec task-clock", perf).group(1).replace(",", ""))
m = d["messages"]
print(f"| {round_} | {conns} | {server} | {d['msgs_per_s']:.0f} | {d['p50_us']} | "
      f"{calls / m:.2f} | {msec * 1000 / m:.2f} |")
PY
        done
    done
done
