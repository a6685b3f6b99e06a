#!/usr/bin/env bash
# Interleaved rounds of two measurements that single runs of compare.sh see through the
# noise of a shared VM: the median first echo of a new connection while 8 connections
# stream 64 KiB, and server CPU per 64 KiB on 4 streams, for nbecho --driver epoll and the
# hand-written mio peer, alternating, servers pinned to core 0 and load to core 1.
#
#   benches/interleaved.sh          # 5 rounds
#   ROUNDS=9 benches/interleaved.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
PORT=9850
source benches/common.sh

printf '| round | server | first echo p50 µs (8 streams) | server CPU µs per 64 KiB (4 streams) |\n|---|---|---|---|\n'
for round in $(seq "$ROUNDS"); do
    for server in epoll mio; do
        start "$server"
        taskset -c 1 "$BIN/nbecho" bench ":$PORT" --json --mode stream -c 8 -s 64K -d 6 >/dev/null &
        loader=$!
        sleep 1
        p50=$(taskset -c 1 "$BIN/nbecho" bench ":$PORT" --json --mode connect -s 64 -d 4 | field p50_us)
        wait "$loader"
        cpu=$(taskset -c 1 "$BIN/nbecho" bench ":$PORT" --json --mode stream -c 4 -s 64K -d 4 \
            --server-pid "$PID" | field server_cpu_us_per_msg)
        kill "$PID"; wait "$PID" 2>/dev/null || true
        printf '| %s | %s | %s | %s |\n' "$round" "$server" "$p50" "$cpu"
    done
done
