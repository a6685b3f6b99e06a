#!/usr/bin/env bash
# The io_uring driver (`nbecho serve --driver uring`) against the epoll driver and the
# hand-written mio peer, in alternating rounds: ping-pong msgs/s, p50 latency and server
# CPU per message; a 64 KiB stream's MB/s and server CPU per 64 KiB; idle CPU. Servers
# pinned to core 0, the load generator (nbecho bench, which checks every reply byte) to
# core 1. Prints a markdown table, then the median of each ratio to mio over the rounds.
#
#   benches/uring.sh            # 3 rounds, 5 s per measurement (about 6 minutes)
#   ROUNDS=5 DURATION=8 benches/uring.sh
#   SCENARIOS="64 64 pingpong" SERVERS="uring mio" benches/uring.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SCENARIOS=${SCENARIOS:-"1 64 pingpong;64 64 pingpong;64 1024 pingpong;1 65536 stream"}
SERVERS=${SERVERS:-"uring epoll mio"}
PORT=9750
source benches/common.sh

IFS=';' read -ra scenarios <<<"$SCENARIOS"
for round in $(seq "$ROUNDS"); do
    for scenario in "${scenarios[@]}"; do
        read -r conns size mode <<<"$scenario"
        for server in $SERVERS; do
            start "$server"
            taskset -c 1 "$BIN/nbecho" bench ":$PORT" --json --mode "$mode" -c "$conns" \
                -s "$size" -d "$DURATION" --server-pid "$PID" \
                > "$OUT/$round-$server-$conns-$size-$mode.json"
            if [ "$scenario" = "${scenarios[0]}" ]; then
                c0=$(cpu_ns "$PID"); sleep 2; c1=$(cpu_ns "$PID")
                echo "{\"idle_cpu_ns_per_s\": $(( (c1 - c0) / 2 ))}" > "$OUT/$round-$server-idle.json"
            fi
            kill "$PID"; wait "$PID" 2>/dev/null || true
        done
    done
done

python3 - "$OUT" "$ROUNDS" "$SERVERS" "$SCENARIOS" <<'PY'
import json, os, statistics, sys
out, rounds, servers, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(";")
load = lambda f: json.load(open(os.path.join(out, f)))
print("| round | scenario | server | msgs/s | MB/s | p50 µs | server CPU µs/msg | idle CPU | errors | mismatches |")
print("|---|---|---|---|---|---|---|---|---|---|")
ratios = {}
for r in range(1, rounds + 1):
    for sc in scenarios:
        conns, size, mode = sc.split()
        key = f"{conns}-{size}-{mode}"
        ref = load(f"{r}-mio-{key}.json") if "mio" in servers else None
        for s in servers:
            d = load(f"{r}-{s}-{key}.json")
            idle = load(f"{r}-{s}-idle.json")["idle_cpu_ns_per_s"] / 1e7 if sc == scenarios[0] else None
            print(f"| {r} | {conns} × {size} B {mode} | {s} | {d['msgs_per_s']:.0f} | {d['mb_per_s']:.0f} "
                  f"| {d['p50_us']} | {d['server_cpu_us_per_msg']:.2f} | {'' if idle is None else f'{idle:.3f}%'} "
                  f"| {d['errors']} | {d['mismatches']} |")
            if ref and s != "mio":
                for field in ("msgs_per_s", "p50_us", "server_cpu_us_per_msg"):
                    if ref[field]:
                        ratios.setdefault((s, key, field), []).append(d[field] / ref[field])
if ratios:
    print("\nMedian ratio to mio over the rounds (msgs/s: higher is better; p50 and CPU: lower):\n")
    print("| server | scenario | msgs/s | p50 | CPU per message |\n|---|---|---|---|---|")
    for s in servers:
        for sc in scenarios:
            key = "-".join(sc.split())
            cell = lambda f: f"{statistics.median(ratios[(s, key, f)]):.2f}" if (s, key, f) in ratios else ""
            if (s, key, "msgs_per_s") in ratios:
                print(f"| {s} | {sc} | {cell('msgs_per_s')} | {cell('p50_us')} | {cell('server_cpu_us_per_msg')} |")
PY
