#!/usr/bin/env bash
# Stops what test/env/up.sh started (dockerd, standalone containerd, the two
# registries), kills containers/shims they left, unmounts leftover mounts under
# the state folder. Keeps images/ (and the registries' data) so the next up is
# fast.
#
# Usage: test/env/down.sh [--purge]     --purge also removes the whole state folder.
set -euo pipefail

STATE=${FNRUN_STATE:-/var/tmp/fnrun-env}
PURGE=0
for arg in "$@"; do
  case $arg in
    --purge) PURGE=1 ;;
    -h | --help)
      sed -n '2,8p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

log() { printf '[down] %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "must run as root" >&2; exit 1; }
if [[ ! -d $STATE ]]; then
  log "nothing to do ($STATE does not exist)"
  exit 0
fi
# Refuse obviously dangerous state folders (we rm -rf on --purge).
case $(realpath -m "$STATE") in
  / | /var | /var/tmp | /tmp | /root | /home | /usr | /etc) echo "refusing STATE=$STATE" >&2; exit 2 ;;
esac
STATE=$(realpath -m "$STATE")

CONTAINERD_SOCK=$STATE/containerd.sock

read_pid() { [[ -s $1 ]] && tr -dc '0-9' <"$1"; }
alive() { # pid; a zombie (not yet reaped by PID 1) counts as dead
  local stat
  [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# stop_pid NAME PID TIMEOUT : SIGTERM, wait up to TIMEOUT seconds, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 timeout=$3 i
  alive "$pid" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 5; i++)); do
    alive "$pid" || return 0
    sleep 0.2
  done
  log "$name did not exit after ${timeout}s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 25; i++)); do
    alive "$pid" || return 0
    sleep 0.2
  done
}

stop_pidfile() { # name pidfile timeout
  local pid
  pid=$(read_pid "$2" || true)
  if [[ -n $pid ]]; then stop_pid "$1" "$pid" "$3"; fi
  rm -f "$2"
}

# 1. Standalone containerd: kill and delete all tasks and containers in all namespaces.
if [[ -S $CONTAINERD_SOCK ]] && ctr -a "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
  while read -r ns; do
    [[ -n $ns ]] || continue
    while read -r task; do
      [[ -n $task ]] || continue
      ctr -a "$CONTAINERD_SOCK" -n "$ns" tasks kill -a -s SIGKILL "$task" >/dev/null 2>&1 || true
    done < <(ctr -a "$CONTAINERD_SOCK" -n "$ns" tasks ls -q 2>/dev/null || true)
    while read -r c; do
      [[ -n $c ]] || continue
      ctr -a "$CONTAINERD_SOCK" -n "$ns" tasks rm -f "$c" >/dev/null 2>&1 || true
      ctr -a "$CONTAINERD_SOCK" -n "$ns" containers rm "$c" >/dev/null 2>&1 || true
    done < <(ctr -a "$CONTAINERD_SOCK" -n "$ns" containers ls -q 2>/dev/null || true)
  done < <(ctr -a "$CONTAINERD_SOCK" namespaces ls -q 2>/dev/null || true)
fi

# 1b. dockerd: SIGKILL running containers now (instead of dockerd's 15s graceful stop).
DOCKER_CLI=$(command -v docker || true)
if [[ -n $DOCKER_CLI && -S $STATE/docker.sock ]]; then
  mapfile -t running < <("$DOCKER_CLI" -H "unix://$STATE/docker.sock" ps -q 2>/dev/null || true)
  if [[ ${#running[@]} -gt 0 && -n ${running[0]} ]]; then
    log "killing ${#running[@]} running docker container(s)"
    "$DOCKER_CLI" -H "unix://$STATE/docker.sock" kill "${running[@]}" >/dev/null 2>&1 || true
  fi
fi

# 2. Daemons. dockerd also stops its managed containerd.
stop_pidfile dockerd "$STATE/dockerd.pid" 40
stop_pidfile dockerd-launcher "$STATE/dockerd.pid.launcher" 5
stop_pidfile "dockerd's containerd" "$STATE/docker-exec/containerd/containerd.pid" 15
stop_pidfile containerd "$STATE/containerd.pid" 20
stop_pidfile registry "$STATE/registry.pid" 10
stop_pidfile registry-auth "$STATE/registry-auth.pid" 10

# 3. Leftover shims (and their container processes) belonging to this state folder:
#    processes whose command line references $STATE (shims carry -address $STATE/...).
leftovers() {
  local d pid cmd
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ $pid != "$$" ]] || continue
    cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
    [[ $cmd == *containerd-shim*"$STATE/"* ]] && echo "$pid"
  done
  return 0
}
children_of() { # pid -> direct children
  local d
  for d in /proc/[0-9]*; do
    [[ $(awk '{print $4}' "$d/stat" 2>/dev/null) == "$1" ]] && echo "${d#/proc/}"
  done
  return 0
}
for shim in $(leftovers); do
  for child in $(children_of "$shim"); do
    log "killing container process $child (child of shim $shim)"
    kill -KILL "$child" 2>/dev/null || true
  done
  stop_pid "shim" "$shim" 5
done

# 4. Unmount leftovers under $STATE (deepest first). mountinfo escapes spaces as \040.
mapfile -t mounts < <(awk -v s="$STATE/" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo |
  sed 's/\\040/ /g' | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-)
for m in "${mounts[@]}"; do
  [[ -n $m ]] || continue
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
done
if [[ ${#mounts[@]} -gt 0 ]]; then log "unmounted ${#mounts[@]} leftover mount(s)"; fi

# 5. Stale sockets and IPAM leases (all containers are gone now).
rm -f "$STATE/docker.sock" "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
rm -rf "$STATE/cni/networks"

if [[ $PURGE -eq 1 ]]; then
  ip link del fnrun0 2>/dev/null || true
  rm -rf "$STATE"
  log "purged $STATE"
else
  log "stopped; kept $STATE (images in $STATE/images)"
fi
