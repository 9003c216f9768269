#!/usr/bin/env bash
# The `fnrun serve` part of make demo: on each runtime, start the server,
# deploy the test function (test/fnfunc) with Fn's API, call it cold, hot,
# and hot after it was frozen, print the latencies, stop the server with
# SIGTERM and show that no container is left. Needs the test environment
# (make up) loaded and bin/fnrun (make build).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=bin/fnrun
FNFUNC=${FNRUN_FNFUNC_IMAGE:-${FNRUN_REGISTRY:-127.0.0.1:5000}/fnrun/fnfunc:latest}
TAG=fnrun-serve-demo
PORT=18470
WORK=$(mktemp -d /tmp/fndemo.XXXXXX)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

call() { # URL -> "SECONDS START-KIND BODY"
  curl -sS -XPOST -D "$WORK/h" -o "$WORK/b" -w '%{time_total}' "$1" -d "$2" >"$WORK/t"
  printf '%s %s %s\n' "$(cat "$WORK/t")" "$(awk 'tolower($1) == "fnrun-start:" {print $2}' "$WORK/h" | tr -d '\r')" "$(cat "$WORK/b")"
}

for driver in docker containerd; do
  rm -rf "$WORK/state"
  "$BIN" serve --driver "$driver" --addr "127.0.0.1:$PORT" --state-dir "$WORK/state" --label-tag "$TAG" \
    --pool-size 2 --pool-image "$FNRUN_TEST_IMAGE" --log-level warn >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.2; done
  api=http://127.0.0.1:$PORT
  app=$(curl -fsS -XPOST "$api/v2/apps" -d '{"name":"demo"}' | jq -r .id)
  fn=$(curl -fsS -XPOST "$api/v2/fns" -d "{\"app_id\":\"$app\",\"name\":\"hello\",\"image\":\"$FNFUNC\"}" | jq -r .id)
  read -r cold ckind cbody < <(call "$api/invoke/$fn" "$driver")
  hots=() thaws=()
  read -r _ hkind hbody < <(call "$api/invoke/$fn" "again")
  # Five calls in one curl: back to back, on one connection.
  mapfile -t hots < <(curl -sS -XPOST -d again -w '%{time_total}\n' $(printf -- '-o /dev/null %s ' \
    "$api/invoke/$fn" "$api/invoke/$fn" "$api/invoke/$fn" "$api/invoke/$fn" "$api/invoke/$fn"))
  for _ in 1 2 3; do
    sleep 0.2 # past the 50ms freeze delay: the container is frozen
    read -r thawed tkind tbody < <(call "$api/invoke/$fn" "after a pause")
    thaws+=("$thawed")
  done
  median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
  awk -v d="$driver" -v c="$cold" -v h="$(median "${hots[@]}")" -v t="$(median "${thaws[@]}")" -v ck="$ckind" -v hk="$hkind" -v tk="$tkind" 'BEGIN {
    printf "serve %-10s  %s call %7.1f ms | %s calls back to back, median %6.2f ms | %s calls of a frozen container, median %6.1f ms\n", d, ck, c * 1000, hk, h * 1000, tk, t * 1000 }'
  printf 'serve %-10s  the function answered: "%s", "%s", "%s"\n' "$driver" "$cbody" "$hbody" "$tbody"
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
  case $driver in
    docker) left=$(docker -H "$FNRUN_DOCKER_HOST" ps -aq --filter "label=io.fnrun.tag=$TAG" | wc -l) ;;
    containerd) left=$(ctr -a "$FNRUN_CONTAINERD_ADDRESS" -n "${FNRUN_CONTAINERD_NAMESPACE:-fnrun}" containers ls -q "labels.\"io.fnrun.tag\"==$TAG" | wc -l) ;;
  esac
  printf 'serve %-10s  stopped with SIGTERM; containers left: %s\n' "$driver" "$left"
done
