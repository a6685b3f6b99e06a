#!/usr/bin/env bash
# User-space instructions per echoed message, counted by valgrind's callgrind (stable to
# about 1% where times on a shared VM swing by 15% or more), for nbecho's drivers (SERVERS
# may also name uring, ntokio for `--driver tokio`, and async for nbecho-async's tokio
# example) and the hand-written mio peer (and the tokio peer, tokio), on the same workload
# in the same run.
#
#   benches/callgrind.sh                  # 1 conn x 64 B and 16 conns x 1 KiB, 5 s each
#   DURATION=10 SCENARIOS="1 64" benches/callgrind.sh
#   IDLE_TIMEOUT=300 SERVERS="epoll mio" benches/callgrind.sh   # nbecho's default idle timeout
#                                         # (0, off, by default here: the peers have none)
#
# For each server and scenario: run the server under callgrind, drive it with
# `nbecho bench` (ping-pong, every byte verified) for DURATION seconds, stop it, and read
# its total instruction count; then the same with a single one-byte message (start-up,
# accept and shutdown). Instructions per message = (total - start-up) / (messages - 1).
#
# Run it alone, the server pinned to core 0 and the load to core 1: the peers read until
# would-block, and whether the read after a request's write finds the client's next
# request (one wake-up for two messages) or nothing is a race with the client, which
# other load on the machine tips (the mio peer counted 123 per message beside the
# mutation tests, 233 alone). The epoll driver reads once per readiness and does not race.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
SCENARIOS=${SCENARIOS:-"1 64;16 1024"}
SERVERS=${SERVERS:-"epoll poll mio"}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-0}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
PORT=9400
# This shell and the load it starts on core 1; each server on core 0 (below).
taskset -cp 1 $$ >/dev/null
source benches/common.sh
cargo build --release -q -p nbecho-core --example hotpath
if [[ " $SERVERS " == *" async "* ]]; then
    cargo build --release -q -p nbecho-async --example async_tokio_echo
fi

# Runs server $1 under callgrind while "$2..." drives it; prints its instruction count.
measure() {
    local server=$1 addr=127.0.0.1:$((++PORT))
    shift
    local file=$OUT/callgrind.$server.$PORT
    case $server in
        poll|epoll|uring) taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$file" \
                        "$BIN/nbecho" serve -q --listen "$addr" --driver "$server" \
                        --idle-timeout "$IDLE_TIMEOUT" --shutdown-timeout 1 >/dev/null 2>&1 & ;;
        ntokio) taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$file" \
                        "$BIN/nbecho" serve -q --listen "$addr" --driver tokio \
                        --idle-timeout "$IDLE_TIMEOUT" --shutdown-timeout 1 >/dev/null 2>&1 & ;;
        mio|tokio) taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$file" \
                        "$BIN/$server-echo" "$addr" >/dev/null 2>&1 & ;;
        async) taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$file" \
                        "$BIN/examples/async_tokio_echo" "$addr" >/dev/null 2>&1 & ;;
    esac
    local pid=$!
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
    "$@" "$addr"
    sleep 0.5
    kill -TERM "$pid"
    # Under valgrind a signal waits for the blocking system call to return, and valgrind
    # does not know io_uring_enter as one that a signal may interrupt: a connection ends it.
    sleep 0.5; (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk '/^summary:/ {print $2}' "$file"
}
one_message() { printf 'x' | "$BIN/nbecho" client --connect "$1" >/dev/null; }

printf '| server | scenario | messages | instructions | start-up | instructions per message |\n'
printf '|---|---|---|---|---|---|\n'
IFS=';' read -ra scenarios <<<"$SCENARIOS"
for scenario in "${scenarios[@]}"; do
    read -r conns size <<<"$scenario"
    for server in $SERVERS; do
        json=$OUT/bench.json
        run() { "$BIN/nbecho" bench --json --conns "$conns" --size "$size" --mode pingpong \
                    --duration "$DURATION" --connect "$1" > "$json"; }
        total=$(measure "$server" run)
        messages=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"])' "$json")
        startup=$(measure "$server" one_message)
        per=$(python3 -c "print(f'{($total - $startup) / max($messages - 1, 1):.0f}')")
        printf '| %s | %s conns x %s B | %s | %s | %s | %s |\n' \
            "$server" "$conns" "$size" "$messages" "$total" "$startup" "$per"
    done
done

# The core alone (core/examples/hotpath.rs: readiness, a short read, its send, the wait;
# no sockets, no clock), per message of each scenario's size: through the driver's
# readiness reports as the epoll driver runs it (the express lane), and on the general
# path (the server's own calls, one per operation).
core_alone() {
    valgrind --tool=callgrind --callgrind-out-file="$OUT/core.$1.$2.$3" \
        target/release/examples/hotpath "$1" "$2" "$3" 2>/dev/null >/dev/null
    awk '/^summary:/ {print $2}' "$OUT/core.$1.$2.$3"
}
for path in express poll; do
    for scenario in "${scenarios[@]}"; do
        read -r conns size <<<"$scenario"
        one=$(core_alone 1 "$size" "$path")
        many=$(core_alone 100001 "$size" "$path")
        per=$(python3 -c "print(f'{($many - $one) / 100000:.0f}')")
        label=$([ "$path" = poll ] && echo "core alone, general path" || echo "core alone, express lane")
        printf '| %s | %s B messages | 100000 | %s | %s | %s |\n' "$label" "$size" "$many" "$one" "$per"
    done
done
