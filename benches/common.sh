# What the bench scripts share; sourced by them (after `cd` to the workspace and setting
# PORT), not run. Builds the server and the load generator, and sets BIN (where they are),
# OUT (a scratch directory) and a trap that, on exit, stops every server started and
# removes OUT (a script may set its own after sourcing).
cargo build --release -q -p nbecho-std -p nbecho-bench
BIN=target/release
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

# start NAME [FLAGS...]: starts server NAME pinned to core 0 on the next PORT, and returns
# once it accepts connections; sets PID and PORT. poll, epoll, uring: `nbecho serve` with
# that driver, no idle timeout, and FLAGS; uring-wait: uring whose reads wait in the
# kernel for data (`--read-wait 10ms`); ntokio: the same with `--driver tokio`; mio,
# tokio: the peers; async: nbecho-async's tokio example.
start() {
    PORT=$((PORT + 1))
    local addr=127.0.0.1:$PORT name=$1
    shift
    case $name in
        poll|epoll|uring) taskset -c 0 "$BIN/nbecho" serve -q --listen "$addr" --driver "$name" \
                        --idle-timeout 0 "$@" & ;;
        uring-wait) taskset -c 0 "$BIN/nbecho" serve -q --listen "$addr" --driver uring \
                        --idle-timeout 0 --read-wait 10ms "$@" & ;;
        ntokio) taskset -c 0 "$BIN/nbecho" serve -q --listen "$addr" --driver tokio \
                        --idle-timeout 0 "$@" & ;;
        mio) taskset -c 0 "$BIN/mio-echo" "$addr" >/dev/null & ;;
        tokio) taskset -c 0 "$BIN/tokio-echo" "$addr" >/dev/null & ;;
        async) taskset -c 0 "$BIN/examples/async_tokio_echo" "$addr" >/dev/null & ;;
        *) echo "unknown server $name" >&2; exit 1 ;;
    esac
    PID=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.05; done
    echo "$name did not start" >&2; exit 1
}

# cpu_ns PID: CPU time of all the process's threads so far, in nanoseconds.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }

# field KEY... < JSON: the values of KEYs in one JSON object, on one line.
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(*(d[k] for k in sys.argv[1:]))' "$@"; }
