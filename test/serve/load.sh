#!/usr/bin/env bash
# Load figures of `fnrun serve` (make load): wrk against the server on each
# runtime, at concurrency 1, 8 and 32, in three modes:
#   hot     containers stay hot, frozen after 50ms idle (the default)
#   thawed  containers are frozen as soon as a call ends (--freeze-idle 0):
#           every call thaws one, as fnrun bench's warm mode does
#   cold    every call starts a container (--max-calls-per-container 1)
# then `fnrun bench --all --quick` in the same run, for the warm path of the
# driver alone. Prints p50/p99 latency, calls/s, errors (non-2xx and socket
# errors) and the containers left after each server's shutdown.
#
# Needs the test environment (make up) loaded, bin/fnrun (make build) and
# wrk (Debian's package; installed here if missing).
# Knobs: LOAD_SECONDS (default 10), LOAD_DRIVERS (default "docker containerd"),
# LOAD_MODES (default "hot thawed cold"), LOAD_CONC (default "1 8 32"),
# LOAD_BENCH_FLAGS (default --quick; "--n 30" gives a steadier warm p50).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=${LOAD_SECONDS:-10}
DRIVERS=${LOAD_DRIVERS:-docker containerd}
MODES=${LOAD_MODES:-hot thawed cold}
CONCS=${LOAD_CONC:-1 8 32}
FNFUNC=${FNRUN_FNFUNC_IMAGE:-${FNRUN_REGISTRY:-127.0.0.1:5000}/fnrun/fnfunc:latest}
TAG=fnrun-serve-load
PORT=18480
BIN=bin/fnrun

[[ -x $BIN ]] || { echo "load: $BIN missing (make build)" >&2; exit 1; }
[[ -n ${FNRUN_DOCKER_HOST:-} ]] || { echo "load: the test environment is not loaded (make up; set -a; . /var/tmp/fnrun-env/env)" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
  echo "load: installing wrk" >&2
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk) >/dev/null 2>&1 ||
    { echo "load: apt-get install wrk failed" >&2; exit 1; }
fi

WORK=$(mktemp -d /tmp/fnload.XXXXXX)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "load"
wrk.headers["Content-Type"] = "text/plain"
LUA

# ms VALUE: wrk's latency (12.3us, 4.5ms, 1.2s) in milliseconds.
ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.2f", n }'
}

start_server() { # driver mode
  local driver=$1 mode=$2 args=()
  case $mode in
    thawed) args+=(--freeze-idle 0) ;;
    cold) args+=(--max-calls-per-container 1) ;;
  esac
  rm -rf "$WORK/state"
  "$BIN" serve --driver "$driver" --addr "127.0.0.1:$PORT" --state-dir "$WORK/state" \
    --label-tag "$TAG" --max-containers-per-fn 8 --max-queue 200 \
    --pool-size 4 --pool-image "$FNRUN_TEST_IMAGE" --log-level warn "${args[@]}" \
    >"$WORK/server-$driver-$mode.log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server-$driver-$mode.log" >&2; return 1; }
    sleep 0.2
  done
  echo "load: the server did not answer" >&2
  return 1
}

# left DRIVER: the containers (calls and pool holders) of the label tag that
# the daemon still has, asked of the daemon itself.
left() {
  case $1 in
    docker) docker -H "$FNRUN_DOCKER_HOST" ps -aq --filter "label=io.fnrun.tag=$TAG" | wc -l ;;
    containerd) ctr -a "$FNRUN_CONTAINERD_ADDRESS" -n "${FNRUN_CONTAINERD_NAMESPACE:-fnrun}" containers ls -q \
      "labels.\"io.fnrun.tag\"==$TAG" | wc -l ;;
  esac
}

stop_server() { # DRIVER: SIGTERM, wait for the exit, count what is left in LEFT
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
  LEFT=$(left "$1")
}

deploy() { # -> fn id
  local app fn
  app=$(curl -fsS -XPOST "http://127.0.0.1:$PORT/v2/apps" -d '{"name":"load"}' | jq -r .id)
  fn=$(curl -fsS -XPOST "http://127.0.0.1:$PORT/v2/fns" \
    -d "{\"app_id\":\"$app\",\"name\":\"fnfunc\",\"image\":\"$FNFUNC\",\"idle_timeout\":60}" | jq -r .id)
  echo "$fn"
}

echo "load: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start" >&2
RESULTS=$WORK/results
printf '%-10s  %-6s  %4s  %9s  %9s  %8s  %6s  %5s\n' DRIVER MODE CONC P50_MS P99_MS CALLS/S ERRORS LEFT >"$RESULTS"
for driver in $DRIVERS; do
  for mode in $MODES; do
    start_server "$driver" "$mode"
    fn=$(deploy)
    url=http://127.0.0.1:$PORT/invoke/$fn
    curl -fsS -XPOST "$url" -d warm >/dev/null # the first container, and the image pulled
    rows=()
    for c in $CONCS; do
      threads=2
      ((c < 2)) && threads=1
      if [[ $mode != cold ]]; then
        # Untimed: start the containers this concurrency needs, so that
        # hot means hot (the cold starts are measured in cold mode).
        wrk -t"$threads" -c"$c" -d2s --timeout 30s -s "$WORK/post.lua" "$url" >/dev/null
      fi
      out=$(wrk -t"$threads" -c"$c" -d"${SECONDS_PER_RUN}s" --timeout 30s --latency -s "$WORK/post.lua" "$url")
      echo "$out" >"$WORK/wrk-$driver-$mode-$c.txt"
      p50=$(ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
      p99=$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
      rps=$(echo "$out" | awk '/^Requests\/sec/ {printf "%.1f", $2}')
      non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
      sock=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}')
      errors=$(( ${non2xx:-0} + ${sock:-0} ))
      rows+=("$(printf '%-10s  %-6s  %4s  %9s  %9s  %8s  %6s' "$driver" "$mode" "$c" "$p50" "$p99" "$rps" "$errors")")
      echo "load: $driver $mode c=$c p50 ${p50}ms p99 ${p99}ms ${rps}/s errors $errors" >&2
    done
    stop_server "$driver"
    for r in "${rows[@]}"; do printf '%s  %5s\n' "$r" "$LEFT" >>"$RESULTS"; done
  done
done

echo "load: load average $(cut -d' ' -f1-3 /proc/loadavg) after the wrk runs" >&2
echo "load: fnrun bench --all ${LOAD_BENCH_FLAGS:---quick} --modes warm (the driver's warm path alone, same run)" >&2
"$BIN" bench --all ${LOAD_BENCH_FLAGS:---quick} --modes warm >"$WORK/bench.txt" 2>"$WORK/bench.err" || { cat "$WORK/bench.err" >&2; exit 1; }

echo
cat "$RESULTS"
echo
cat "$WORK/bench.txt"
echo
echo "hot call p50 against fnrun bench's warm p50 (fnrun side), concurrency 1:"
for driver in $DRIVERS; do
  warm=$(awk -v d="$driver" '$1 == d && $2 == "warm" && $3 == "fnrun" {print $6}' "$WORK/bench.txt")
  warm_ms=$(ms "$warm")
  for mode in hot thawed; do
    hot=$(awk -v d="$driver" -v m="$mode" '$1 == d && $2 == m && $3 == 1 {print $4}' "$RESULTS")
    [[ -n $hot && -n $warm ]] || continue
    awk -v d="$driver" -v m="$mode" -v h="$hot" -v w="$warm_ms" \
      'BEGIN { printf "  %-10s %-6s p50 %8.2f ms / bench warm %8.2f ms = %.2fx\n", d, m, h, w, h / w }'
  done
done
