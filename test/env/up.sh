#!/usr/bin/env bash
# Brings up the real test environment for fnrun (Docker + containerd +
# two local registries + a hand-built busybox test image).
#
# Everything lives under one state folder, STATE=${FNRUN_STATE:-/var/tmp/fnrun-env}:
#   docker.sock, dockerd.pid, dockerd.log, docker/ (data-root), docker-exec/ (exec-root)
#   containerd.sock, containerd.pid, containerd.log, containerd/{config.toml,root,state,opt}
#   registry/{config.yml,data}, registry-auth/{config.yml,htpasswd,data}, registry*.pid/.log
#   images/busybox.tar (kept by down.sh), docker-config/ (login for :5001), cni/, env
#
# Idempotent: services already running and answering are reused; stale pid files
# and sockets are cleaned. Run as root. No init system is needed.
#
# Usage: test/env/up.sh      then: . "${FNRUN_STATE:-/var/tmp/fnrun-env}/env"
set -euo pipefail

STATE=${FNRUN_STATE:-/var/tmp/fnrun-env}
export FNRUN_STATE=$STATE

REGISTRY=127.0.0.1:5000
AUTH_REGISTRY=127.0.0.1:5001
AUTH_USER=fnrun
AUTH_PASSWORD=fnrun-secret
NAMESPACE=fnrun
LOCAL_IMAGE=fnrun-test/busybox:latest
CTR_LOCAL_IMAGE=docker.io/fnrun-test/busybox:latest
TEST_IMAGE=$REGISTRY/fnrun/busybox:latest
# The conformance suite removes this one and pulls it again: a repository
# of its own, so packages testing at the same time keep TEST_IMAGE.
PULL_TEST_IMAGE=$REGISTRY/fnrun/pull-test:latest
AUTH_TEST_IMAGE=$AUTH_REGISTRY/fnrun/busybox:latest
CNI_BIN=/usr/lib/cni
WAIT_SECONDS=${FNRUN_WAIT_SECONDS:-60}

DOCKER_SOCK=$STATE/docker.sock
DOCKER_HOST_URL=unix://$DOCKER_SOCK
CONTAINERD_SOCK=$STATE/containerd.sock
DOCKER_CONFIG_DIR=$STATE/docker-config
IMAGE_TAR=$STATE/images/busybox.tar

T0=$(date +%s)

log() { printf '[up %3ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf '[up] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

# ---------------------------------------------------------------------------
# 1. Packages
# ---------------------------------------------------------------------------
PACKAGES=(docker.io containerd runc docker-registry busybox-static
  containernetworking-plugins apache2-utils iptables iproute2 curl jq
  ca-certificates tar tini)

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing: ${missing[*]}"
  # Keep maintainer scripts from starting services (there is no init system,
  # and we start our own daemons below). Only add a policy-rc.d if none exists.
  local created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  local rc=0
  {
    apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
  } </dev/null >"$STATE/apt.log" 2>&1 || rc=$?
  if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  [[ $rc -eq 0 ]] || { tail -n 30 "$STATE/apt.log" >&2; die "apt-get failed (see $STATE/apt.log)"; }
}

mkdir -p "$STATE"
install_packages

# Prefer a newer docker CLI if present (/usr/local/bin/docker), else the one from docker.io.
DOCKER_BIN=$(command -v docker || true)
[[ -n $DOCKER_BIN ]] || die "no docker CLI found"
command -v dockerd >/dev/null || die "dockerd not found after install"
command -v docker-registry >/dev/null || die "docker-registry not found after install"
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (busybox-static)"

dk() { DOCKER_CONFIG=$DOCKER_CONFIG_DIR "$DOCKER_BIN" -H "$DOCKER_HOST_URL" "$@"; }
ctrc() { ctr -a "$CONTAINERD_SOCK" -n "$NAMESPACE" "$@"; }

# ---------------------------------------------------------------------------
# helpers for background services
# ---------------------------------------------------------------------------
pid_alive() { # pidfile
  local pid
  [[ -s $1 ]] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  # PID 1 here may reap orphans late: a zombie counts as dead.
  local stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# wait_for NAME LOGFILE PIDFILE CHECK-COMMAND...
wait_for() {
  local name=$1 logf=$2 pidf=$3
  shift 3
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $pidf ]] && [[ -s $pidf ]] && ! pid_alive "$pidf"; then
      tail -n 20 "$logf" >&2 || true
      die "$name exited during startup; see $logf"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$logf" >&2 || true
      die "$name did not answer within ${WAIT_SECONDS}s; see $logf"
    fi
    sleep 0.2
  done
}

# start_bg PIDFILE LOGFILE CMD... : starts CMD detached (new session), records pid.
start_bg() {
  local pidf=$1 logf=$2
  shift 2
  # Not a process-group leader here, so setsid(1) execs in place and $! is the daemon's pid.
  nohup setsid "$@" </dev/null >>"$logf" 2>&1 &
  echo $! >"$pidf"
}

# ---------------------------------------------------------------------------
# 2a. standalone containerd
# ---------------------------------------------------------------------------
containerd_ok() { ctr -a "$CONTAINERD_SOCK" version; }

start_containerd() {
  local dir=$STATE/containerd pidf=$STATE/containerd.pid logf=$STATE/containerd.log
  if pid_alive "$pidf" && containerd_ok >/dev/null 2>&1; then
    log "containerd already running (pid $(cat "$pidf"))"
    return 0
  fi
  if pid_alive "$pidf"; then
    log "containerd pid alive but not answering; stopping it"
    kill "$(cat "$pidf")" 2>/dev/null || true
    sleep 2
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
  fi
  rm -f "$pidf" "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
  mkdir -p "$dir/root" "$dir/state" "$dir/opt"
  cat >"$dir/config.toml" <<EOF
# generated by test/env/up.sh
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.snapshotter.v1.overlayfs"]
    root_path = ""
  [plugins."io.containerd.service.v1.diff-service"]
    default = ["walking"]
EOF
  log "starting containerd"
  start_bg "$pidf" "$logf" containerd --config "$dir/config.toml"
  wait_for containerd "$logf" "$pidf" containerd_ok
  log "containerd up (pid $(cat "$pidf"))"
}

# ---------------------------------------------------------------------------
# 2b. dockerd (with its own managed containerd under the exec-root)
# ---------------------------------------------------------------------------
docker_ok() { curl -fsS --max-time 3 --unix-socket "$DOCKER_SOCK" http://d/_ping; }

pick_storage_driver() {
  # overlay2 needs a kernel overlay and a backing fs with d_type (ext4/xfs ok).
  local probe=$STATE/.ovl-probe
  rm -rf "$probe"
  mkdir -p "$probe"/{l,u,w,m}
  if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
    umount "$probe/m"
    rm -rf "$probe"
    echo overlay2
  else
    rm -rf "$probe"
    echo vfs
  fi
}

start_dockerd() {
  local pidf=$STATE/dockerd.pid logf=$STATE/dockerd.log
  if pid_alive "$pidf" && docker_ok >/dev/null 2>&1; then
    if ip link show docker0 >/dev/null 2>&1; then
      log "dockerd already running (pid $(cat "$pidf"))"
      return 0
    fi
    # Another dockerd started with --bridge=none deletes docker0; ours
    # recreates it, with its addresses and NAT rules, when it restarts.
    log "docker0 is gone; restarting dockerd to recreate it"
  fi
  if pid_alive "$pidf"; then
    log "dockerd pid alive but not answering; stopping it"
    kill "$(cat "$pidf")" 2>/dev/null || true
    sleep 3
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
  fi
  rm -f "$pidf" "$DOCKER_SOCK"
  # A stale managed containerd from a killed dockerd would block the new one.
  local cpid=$STATE/docker-exec/containerd/containerd.pid
  if pid_alive "$cpid"; then kill "$(cat "$cpid")" 2>/dev/null || true; sleep 1; fi
  mkdir -p "$STATE/docker" "$STATE/docker-exec"

  local driver
  driver=${FNRUN_STORAGE_DRIVER:-$(pick_storage_driver)}

  # Networking: the default bridge needs iptables (nat + filter). Debian 12's
  # iptables defaults to the nft backend; if it cannot talk to the kernel we try
  # iptables-legacy, and if neither works we start dockerd with --iptables=false
  # (bridge still exists, but no NAT/port publishing). As a last resort
  # (no bridge at all) --bridge=none: only --network none/host/container:<id> work.
  local net_args=()
  if iptables -t nat -S >/dev/null 2>&1 && iptables -t filter -S >/dev/null 2>&1; then
    :
  elif command -v iptables-legacy >/dev/null && iptables-legacy -t nat -S >/dev/null 2>&1; then
    log "iptables (nft) not usable, switching alternatives to iptables-legacy"
    update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
    update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null 2>&1 || true
  else
    log "WARNING: iptables unusable; starting dockerd with --iptables=false"
    net_args+=(--iptables=false --ip-masq=false)
  fi
  if [[ ${FNRUN_DOCKER_BRIDGE:-} == none ]]; then net_args=(--bridge=none); fi
  # Used by `docker run -p`; harmless otherwise.
  sysctl -qw net.ipv4.ip_forward=1 2>/dev/null || true

  log "starting dockerd (storage driver $driver)"
  start_bg "$pidf.launcher" "$logf" dockerd \
    --host "$DOCKER_HOST_URL" \
    --data-root "$STATE/docker" \
    --exec-root "$STATE/docker-exec" \
    --pidfile "$pidf" \
    --storage-driver "$driver" \
    --exec-opt native.cgroupdriver=cgroupfs \
    --userland-proxy=false \
    --log-level info \
    "${net_args[@]}"
  wait_for dockerd "$logf" "$pidf.launcher" docker_ok
  rm -f "$pidf.launcher"
  log "dockerd up (pid $(cat "$pidf"))"
}

# ---------------------------------------------------------------------------
# 2c. registries
# ---------------------------------------------------------------------------
registry_code() { # url [curl args] -> prints http code
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$@" || true
}
reg_plain_ok() { [[ $(registry_code "http://$REGISTRY/v2/") == 200 ]]; }
reg_auth_ok() {
  [[ $(registry_code "http://$AUTH_REGISTRY/v2/") == 401 ]] &&
    [[ $(registry_code -u "$AUTH_USER:$AUTH_PASSWORD" "http://$AUTH_REGISTRY/v2/") == 200 ]]
}

start_registry() { # name addr check-fn [auth]
  local name=$1 addr=$2 check=$3 auth=${4:-}
  local dir=$STATE/$name pidf=$STATE/$name.pid logf=$STATE/$name.log
  if pid_alive "$pidf" && "$check"; then
    log "$name already running on $addr (pid $(cat "$pidf"))"
    return 0
  fi
  if pid_alive "$pidf"; then
    kill "$(cat "$pidf")" 2>/dev/null || true
    sleep 1
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
  fi
  rm -f "$pidf"
  if curl -s -o /dev/null --max-time 2 "http://$addr/"; then
    die "something else already listens on $addr (not started by $0)"
  fi
  mkdir -p "$dir/data"
  local auth_cfg=""
  if [[ -n $auth ]]; then
    htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" >"$dir/htpasswd"
    auth_cfg=$(printf 'auth:\n  htpasswd:\n    realm: fnrun-registry\n    path: %s\n' "$dir/htpasswd")
  fi
  cat >"$dir/config.yml" <<EOF
# generated by test/env/up.sh
version: 0.1
log:
  level: info
  fields:
    service: $name
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
  secret: fnrun-test-$name
  headers:
    X-Content-Type-Options: [nosniff]
$auth_cfg
EOF
  log "starting $name on $addr"
  start_bg "$pidf" "$logf" docker-registry serve "$dir/config.yml"
  wait_for "$name" "$logf" "$pidf" "$check"
  log "$name up (pid $(cat "$pidf"))"
}

# ---------------------------------------------------------------------------
# 3. test image (one layer, built by hand as a docker-archive)
# ---------------------------------------------------------------------------
build_image() {
  [[ -s $IMAGE_TAR ]] && return 0
  log "building $IMAGE_TAR from $BUSYBOX"
  local work
  work=$(mktemp -d "$STATE/.imgbuild.XXXXXX")
  local root=$work/rootfs out=$work/out
  mkdir -p "$root"/{bin,etc,tmp,root,home/fnrun,proc,sys,dev} "$out"
  cp "$BUSYBOX" "$root/bin/busybox"
  chmod 0755 "$root/bin/busybox"
  local applet
  while IFS= read -r applet; do
    [[ -n $applet && $applet != busybox ]] || continue
    ln -sf busybox "$root/bin/$applet"
  done < <("$BUSYBOX" --list)
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  chown 1000:1000 "$root/home/fnrun"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
fnrun:x:1000:1000:fnrun:/home/fnrun:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
fnrun:x:1000:
nogroup:x:65534:
EOF

  # Layer (uncompressed; diff_id == digest of the tar).
  local layer=$work/layer.tar
  (cd "$root" && tar --format=gnu --numeric-owner --sort=name --mtime=@1704067200 \
    -cf "$layer" bin dev etc home proc root sys tmp)
  local diff_id
  diff_id=$(sha256sum "$layer" | cut -d' ' -f1)

  local arch
  arch=$(dpkg --print-architecture)
  case $arch in
    armhf | armel) arch=arm ;;
    i386) arch=386 ;;
    ppc64el) arch=ppc64le ;;
  esac

  mkdir -p "$out/$diff_id"
  mv "$layer" "$out/$diff_id/layer.tar"
  printf '1.0' >"$out/$diff_id/VERSION"
  jq -cn --arg arch "$arch" --arg diff "sha256:$diff_id" '{
      architecture: $arch,
      os: "linux",
      created: "2024-01-01T00:00:00Z",
      config: {
        Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        Cmd: ["sh"],
        WorkingDir: "/",
        Labels: {"org.opencontainers.image.title": "fnrun-test busybox"}
      },
      rootfs: {type: "layers", diff_ids: [$diff]},
      history: [{created: "2024-01-01T00:00:00Z", created_by: "fnrun test/env/up.sh: busybox-static rootfs"}]
    }' >"$out/config.json"
  local cfg_digest
  cfg_digest=$(sha256sum "$out/config.json" | cut -d' ' -f1)
  mv "$out/config.json" "$out/$cfg_digest.json"
  jq -cn --arg cfg "$cfg_digest.json" --arg layer "$diff_id/layer.tar" --arg tag "$LOCAL_IMAGE" \
    '[{Config: $cfg, RepoTags: [$tag], Layers: [$layer]}]' >"$out/manifest.json"
  jq -cn --arg id "$diff_id" '{"fnrun-test/busybox": {latest: $id}}' >"$out/repositories"

  mkdir -p "$(dirname "$IMAGE_TAR")"
  (cd "$out" && tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
    --mtime=@1704067200 -cf "$IMAGE_TAR.tmp" manifest.json repositories "$cfg_digest.json" "$diff_id")
  mv "$IMAGE_TAR.tmp" "$IMAGE_TAR"
  rm -rf "$work"
  log "built image: config sha256:$cfg_digest, layer sha256:$diff_id"
}

docker_images() {
  if ! dk image inspect "$LOCAL_IMAGE" >/dev/null 2>&1; then
    log "docker load $IMAGE_TAR"
    dk load -q -i "$IMAGE_TAR" >&2
  fi
  dk tag "$LOCAL_IMAGE" "$TEST_IMAGE"
  dk tag "$LOCAL_IMAGE" "$PULL_TEST_IMAGE"
  dk tag "$LOCAL_IMAGE" "$AUTH_TEST_IMAGE"

  mkdir -p "$DOCKER_CONFIG_DIR"
  chmod 0700 "$DOCKER_CONFIG_DIR"
  if ! jq -e --arg r "$AUTH_REGISTRY" '.auths[$r].auth // empty' \
    "$DOCKER_CONFIG_DIR/config.json" >/dev/null 2>&1; then
    log "docker login $AUTH_REGISTRY"
    printf '%s' "$AUTH_PASSWORD" | dk login -u "$AUTH_USER" --password-stdin "$AUTH_REGISTRY" >&2
  fi

  local accept='Accept: application/vnd.docker.distribution.manifest.v2+json'
  if [[ $(registry_code -H "$accept" "http://$REGISTRY/v2/fnrun/busybox/manifests/latest") != 200 ]]; then
    log "docker push $TEST_IMAGE"
    dk push -q "$TEST_IMAGE" >&2 || dk push "$TEST_IMAGE" >&2
  fi
  if [[ $(registry_code -H "$accept" "http://$REGISTRY/v2/fnrun/pull-test/manifests/latest") != 200 ]]; then
    log "docker push $PULL_TEST_IMAGE"
    dk push -q "$PULL_TEST_IMAGE" >&2 || dk push "$PULL_TEST_IMAGE" >&2
  fi
  if [[ $(registry_code -u "$AUTH_USER:$AUTH_PASSWORD" -H "$accept" \
    "http://$AUTH_REGISTRY/v2/fnrun/busybox/manifests/latest") != 200 ]]; then
    log "docker push $AUTH_TEST_IMAGE"
    dk push -q "$AUTH_TEST_IMAGE" >&2 || dk push "$AUTH_TEST_IMAGE" >&2
  fi
}

# ctr_has_image reads the whole listing first: with pipefail, grep -q
# quitting at the first match makes a longer listing fail with SIGPIPE.
ctr_has_image() {
  local images
  images=$(ctrc images ls -q)
  grep -qxF "$1" <<<"$images"
}

containerd_images() {
  if ! ctr_has_image "$CTR_LOCAL_IMAGE"; then
    log "ctr -n $NAMESPACE images import $IMAGE_TAR"
    ctrc images import "$IMAGE_TAR" >&2
  fi
  ctr_has_image "$CTR_LOCAL_IMAGE" ||
    die "containerd import did not produce $CTR_LOCAL_IMAGE (have: $(ctrc images ls -q | tr '\n' ' '))"
}

# ---------------------------------------------------------------------------
# 4. CNI config + env file
# ---------------------------------------------------------------------------
write_cni() {
  local conf=$STATE/cni/conf
  mkdir -p "$conf" "$STATE/cni/networks"
  # Main network "fnrun": bridge fnrun0 + host-local IPAM (local 10.88.0.0/16 only)
  # + loopback chained last (passes the bridge result through). go-cni users
  # may also add their own loopback network (WithLoNetwork) to bring up "lo".
  cat >"$conf/10-fnrun.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "fnrun",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "fnrun0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/networks",
        "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
        "routes": [{"dst": "10.88.0.0/16"}]
      }
    },
    {
      "type": "loopback"
    }
  ]
}
EOF
}

write_env() {
  local envf=$STATE/env
  cat >"$envf.tmp" <<EOF
# generated by test/env/up.sh; source me: . $envf
export FNRUN_STATE=$STATE
export FNRUN_DOCKER_HOST=$DOCKER_HOST_URL
export FNRUN_CONTAINERD_ADDRESS=$CONTAINERD_SOCK
export FNRUN_CONTAINERD_NAMESPACE=$NAMESPACE
export FNRUN_REGISTRY=$REGISTRY
export FNRUN_AUTH_REGISTRY=$AUTH_REGISTRY
export FNRUN_AUTH_USER=$AUTH_USER
export FNRUN_AUTH_PASSWORD=$AUTH_PASSWORD
export FNRUN_TEST_IMAGE=$TEST_IMAGE
export FNRUN_PULL_TEST_IMAGE=$PULL_TEST_IMAGE
export FNRUN_AUTH_TEST_IMAGE=$AUTH_TEST_IMAGE
export FNRUN_LOCAL_IMAGE=$LOCAL_IMAGE
export FNRUN_CONTAINERD_LOCAL_IMAGE=$CTR_LOCAL_IMAGE
export FNRUN_IMAGE_TAR=$IMAGE_TAR
export FNRUN_CNI_BIN=$CNI_BIN
export FNRUN_CNI_CONF=$STATE/cni/conf
export FNRUN_DOCKER_CONFIG=$DOCKER_CONFIG_DIR
EOF
  mv "$envf.tmp" "$envf"
}


# ---------------------------------------------------------------------------
# 5. the test function of `fnrun serve` (test/fnfunc): a static Go binary
#    alone in a one-layer image, loaded into both daemons and pushed to the
#    registry; rebuilt when its source or the Go toolchain changes
# ---------------------------------------------------------------------------
FNFUNC_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FNFUNC_LOCAL=fnrun-test/fnfunc:latest
FNFUNC_CTR_LOCAL=docker.io/fnrun-test/fnfunc:latest
FNFUNC_IMAGE=$REGISTRY/fnrun/fnfunc:latest
FNFUNC_TAR=$STATE/images/fnfunc.tar

build_fnfunc() { # -> writes $FNFUNC_TAR
  local gobin work root out layer diff_id arch cfg_digest
  gobin=$(command -v go || echo /usr/local/go/bin/go)
  [[ -x $gobin ]] || die "go not found: it builds the test function (test/fnfunc)"
  work=$(mktemp -d "$STATE/.fnfuncbuild.XXXXXX")
  root=$work/rootfs out=$work/out
  mkdir -p "$root"/{etc,tmp} "$out"
  log "building the test function image from test/fnfunc"
  (cd "$FNFUNC_SRC" && CGO_ENABLED=0 "$gobin" build -trimpath -ldflags='-s -w' \
    -o "$root/fnfunc" ./test/fnfunc) || die "go build of test/fnfunc failed"
  chmod 0755 "$root/fnfunc"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/:/fnfunc\nfnrun:x:1000:1000:fnrun:/tmp:/fnfunc\n' >"$root/etc/passwd"
  printf 'root:x:0:\nfnrun:x:1000:\n' >"$root/etc/group"
  : >"$root/etc/hosts"
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  layer=$work/layer.tar
  (cd "$root" && tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
    --mtime=@1704067200 -cf "$layer" etc fnfunc tmp)
  diff_id=$(sha256sum "$layer" | cut -d' ' -f1)
  arch=$(dpkg --print-architecture)
  case $arch in armhf | armel) arch=arm ;; i386) arch=386 ;; ppc64el) arch=ppc64le ;; esac
  mkdir -p "$out/$diff_id"
  mv "$layer" "$out/$diff_id/layer.tar"
  printf '1.0' >"$out/$diff_id/VERSION"
  jq -cn --arg arch "$arch" --arg diff "sha256:$diff_id" '{
      architecture: $arch, os: "linux", created: "2024-01-01T00:00:00Z",
      config: {Env: ["PATH=/"], Entrypoint: ["/fnfunc"], WorkingDir: "/",
               Labels: {"org.opencontainers.image.title": "fnrun serve test function"}},
      rootfs: {type: "layers", diff_ids: [$diff]},
      history: [{created: "2024-01-01T00:00:00Z", created_by: "fnrun test/env/up.sh: test/fnfunc"}]
    }' >"$out/config.json"
  cfg_digest=$(sha256sum "$out/config.json" | cut -d' ' -f1)
  mv "$out/config.json" "$out/$cfg_digest.json"
  jq -cn --arg cfg "$cfg_digest.json" --arg layer "$diff_id/layer.tar" --arg tag "$FNFUNC_LOCAL" \
    '[{Config: $cfg, RepoTags: [$tag], Layers: [$layer]}]' >"$out/manifest.json"
  jq -cn --arg id "$diff_id" '{"fnrun-test/fnfunc": {latest: $id}}' >"$out/repositories"
  mkdir -p "$(dirname "$FNFUNC_TAR")"
  (cd "$out" && tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
    --mtime=@1704067200 -cf "$FNFUNC_TAR.tmp" manifest.json repositories "$cfg_digest.json" "$diff_id")
  mv "$FNFUNC_TAR.tmp" "$FNFUNC_TAR"
  rm -rf "$work"
  log "built the test function image: config sha256:$cfg_digest"
}

fnfunc_image() {
  local stamp=$STATE/images/fnfunc.stamp hash fresh=0 gobin
  gobin=$(command -v go || echo /usr/local/go/bin/go)
  hash=$({ cat "$FNFUNC_SRC"/test/fnfunc/*.go; "$gobin" version 2>/dev/null; } | sha256sum | cut -c1-32)
  if [[ ! -s $FNFUNC_TAR || $(cat "$stamp" 2>/dev/null) != "$hash" ]]; then
    build_fnfunc
    fresh=1
  fi
  if [[ $fresh == 1 ]] || ! dk image inspect "$FNFUNC_IMAGE" >/dev/null 2>&1; then
    log "docker load $FNFUNC_TAR"
    dk load -q -i "$FNFUNC_TAR" >&2
    dk tag "$FNFUNC_LOCAL" "$FNFUNC_IMAGE"
  fi
  local accept='Accept: application/vnd.docker.distribution.manifest.v2+json'
  if [[ $fresh == 1 || $(registry_code -H "$accept" "http://$REGISTRY/v2/fnrun/fnfunc/manifests/latest") != 200 ]]; then
    log "docker push $FNFUNC_IMAGE"
    dk push -q "$FNFUNC_IMAGE" >&2 || dk push "$FNFUNC_IMAGE" >&2
  fi
  if [[ $fresh == 1 ]] || ! ctr_has_image "$FNFUNC_CTR_LOCAL"; then
    log "ctr -n $NAMESPACE images import $FNFUNC_TAR"
    # An older copy pulled from the registry would shadow the new build.
    ctrc images rm "$FNFUNC_IMAGE" >/dev/null 2>&1 || true
    ctrc images import "$FNFUNC_TAR" >&2
  fi
  echo "$hash" >"$stamp"
  echo "export FNRUN_FNFUNC_IMAGE=$FNFUNC_IMAGE" >>"$STATE/env"
}

# ---------------------------------------------------------------------------
# 6. the containerd driver's shim (cmd/containerd-shim-fnrun-v2), where
#    containerd looks for shims and the driver finds it: /usr/local/bin
# ---------------------------------------------------------------------------
SHIM=/usr/local/bin/containerd-shim-fnrun-v2

install_shim() {
  local gobin tmp
  gobin=$(command -v go || echo /usr/local/go/bin/go)
  [[ -x $gobin ]] || die "go not found: it builds the containerd shim (cmd/containerd-shim-fnrun-v2)"
  tmp=$(mktemp "$STATE/.shim.XXXXXX")
  (cd "$FNFUNC_SRC" && CGO_ENABLED=0 "$gobin" build -trimpath -ldflags='-s -w' \
    -o "$tmp" ./cmd/containerd-shim-fnrun-v2) || { rm -f "$tmp"; die "go build of cmd/containerd-shim-fnrun-v2 failed"; }
  if cmp -s "$tmp" "$SHIM"; then
    rm -f "$tmp"
    return
  fi
  log "installing $SHIM"
  install -m 0755 "$tmp" "$SHIM"
  rm -f "$tmp"
}

# ---------------------------------------------------------------------------
main() {
  install_shim
  start_containerd
  start_dockerd
  start_registry registry "$REGISTRY" reg_plain_ok
  start_registry registry-auth "$AUTH_REGISTRY" reg_auth_ok auth
  build_image
  docker_images
  containerd_images
  write_cni
  write_env
  fnfunc_image
  log "ready"
  cat "$STATE/env"
}

main "$@"
