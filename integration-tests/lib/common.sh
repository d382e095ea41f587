# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# The one shell library of the fixture scripts (integration-tests/, vm/). Source it, don't run it;
# each area's lib.sh sources it and sets PANGEO_LOG_TAG. Sections: logging and time, the cache
# dir, ports, waiting, test results, processes (pid files), Go builds, certificates.
[ -n "${PANGEO_COMMON_LOADED:-}" ] && return 0
PANGEO_COMMON_LOADED=1   # not exported: a child script loads the library itself

PANGEO_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PANGEO_REPO="$(cd "$PANGEO_LIB_DIR/../.." && pwd)"
PANGEO_LOG_TAG=${PANGEO_LOG_TAG:-pangeo}

# ---------------------------------------------------------------- logging and time
# log MSG...: "[TAG HH:MM:SS] MSG" on stderr. die MSG [CODE]: the same with ERROR:, then exit CODE (1).
log() { printf '[%s %s] %s\n' "$PANGEO_LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }
now() { date +%s.%N; }
# elapsed T0: seconds (one decimal) since a `now` timestamp.
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# ---------------------------------------------------------------- the cache dir
# Everything built once and kept outside the checkout (Go binaries, images, venvs, VM dirs).
pangeo_cache_dir() { echo "${PANGEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pangeo-appliance}"; }

# The shared/ reference folder lies beside the checkout (CI: beside the clone).
pangeo_reference_dir() {
  if [ -n "${PANGEO_REFERENCE_DIR:-}" ]; then echo "$PANGEO_REFERENCE_DIR"; return 0; fi
  local top
  top="$(git -C "$PANGEO_LIB_DIR" rev-parse --show-toplevel 2>/dev/null)" || top="$PANGEO_REPO"
  echo "$top/../shared/reference"
}

# ---------------------------------------------------------------- ports
# free_port VAR: sets VAR to a free TCP port on 127.0.0.1, not one this script handed out already
# ($USED_PORTS). Racy by nature (as every "pick a free port"), but ports are drawn at random from a
# high range and checked against listening sockets.
USED_PORTS=""
free_port() {
  local var="$1" p
  for _ in $(seq 1 200); do
    # Below the NodePort range (30000-32767, which kube-proxy answers on 127.0.0.1 too) and
    # Linux's ephemeral range (32768-60999, where an outgoing connection can hold a port
    # between this check and the server's bind: dask-gateway's proxy once got
    # "address already in use" for a port the check had found free).
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 10000 ))
    case " $USED_PORTS " in *" $p "*) continue ;; esac
    if command -v ss >/dev/null 2>&1; then
      [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && continue
    fi
    # nothing answers on it?
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    USED_PORTS="$USED_PORTS $p"
    printf -v "$var" '%s' "$p"
    return 0
  done
  return 1
}

# ports_taken PORT...: free_port hands out none of these.
ports_taken() { USED_PORTS="$USED_PORTS $*"; }

# port_open HOST PORT: something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ---------------------------------------------------------------- waiting
# wait_for SECONDS COMMAND...: retry (every 0.5 s, output discarded) until COMMAND succeeds; 1 on timeout.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# ---------------------------------------------------------------- test results
# The smoke tests' tally: "PASS: ..." / "FAIL: ..." lines, and "N passed, M failed" last.
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
# check DESCRIPTION COMMAND...: pass when COMMAND succeeds, fail otherwise.
check() { local d="$1"; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
# finish: the closing line, then exit 0 when nothing failed, 1 otherwise.
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ] && exit 0; exit 1; }
# keep_or_remove DIR...: at the end of a smoke test, keep the work dirs (saying so) with
# KEEP_WORKDIR=1 or after a failure, remove them otherwise.
keep_or_remove() {
  local d
  for d in "$@"; do
    if [ "${KEEP_WORKDIR:-0}" = 1 ] || [ "$FAILED" -gt 0 ]; then echo "workdir kept: $d" >&2; else rm -rf "$d"; fi
  done
}
# skip_suite REASON: the whole suite cannot run here (integration-tests/run counts exit 3 as skipped).
skip_suite() { echo "SKIPPED: $*"; echo "0 passed, 0 failed"; exit 3; }

# ---------------------------------------------------------------- processes
# A fixture runs its processes each in its own session and records them in a pid file, one
# "NAME PID STARTTIME" line each. stop.sh signals a recorded PID only while it is still that
# process: the same start time, or (a pid file without one) a command line naming the work dir.
proc_cmdline() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null; }
# proc_starttime PID: clock ticks since boot (field 22 of /proc/PID/stat).
proc_starttime() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # the command name (field 2) may contain spaces: cut after its closing parenthesis
  stat="${stat##*) }"
  # now field 3 is the first word; start time is field 22 overall = word 20 here
  awk '{print $20}' <<<"$stat"
}
# proc_alive PID: exists and is not a zombie (a process whose parent has exited is reaped by
# init, which may take a moment; a zombie counts as stopped).
proc_alive() {
  local stat
  [ -n "${1:-}" ] || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}
# proc_recorded PID STARTTIME MARKER: alive and still the recorded process.
proc_recorded() {
  local pid="$1" st="$2" marker="$3" cur
  proc_alive "$pid" || return 1
  cur="$(proc_starttime "$pid")" || return 1
  [ "${st:-0}" != 0 ] && [ "$cur" = "$st" ] && return 0
  proc_cmdline "$pid" | grep -qF "$marker"
}

# fixture_init WD PIDFILE LOGDIR: the fixture about to be started: its processes' working dir,
# its pid file (emptied) and the dir of their logs (NAME.log each). Call it before launch.
fixture_init() {
  FIXTURE_WD=$1 FIXTURE_PIDS=$2 FIXTURE_LOGS=$3
  mkdir -p "$FIXTURE_LOGS"
  : >"$FIXTURE_PIDS"
}
# stop_if_start_fails COMMAND...: the EXIT trap of a start.sh (trap 'stop_if_start_fails
# path/stop.sh "$WD"' EXIT): unless the script called started at its end, stop what was started.
STARTED_OK=0
started() { STARTED_OK=1; }
stop_if_start_fails() {
  [ "$STARTED_OK" = 1 ] && return 0
  log "start failed; stopping what was started"
  "$@" >&2 || true
}

# use_bins NAME GIVEN BUILD_SH BINARY...: sets BIN to GIVEN (the value of the variable NAME, which
# must hold every BINARY) or, when empty, to what BUILD_SH --print-bin-dir builds (cached); says
# "SKIPPED: go not found" and exits 3 without Go.
use_bins() {
  local name="$1" given="$2" build="$3" rc=0; shift 3
  if [ -n "$given" ]; then
    BIN="$given"
    bins_complete "$BIN" "$@" || die "$name=$BIN lacks one of: $*" 1
    return 0
  fi
  BIN="$("$build" --print-bin-dir)" || rc=$?
  if [ "$rc" -eq 3 ]; then echo "SKIPPED: go not found"; exit 3; fi
  [ "$rc" -eq 0 ] || die "$build failed (exit $rc)" 1
}

# launch NAME COMMAND...: start COMMAND in its own session (stdin /dev/null, output to its log),
# record it, and set PID_<NAME> (upper case, - as _).
launch() {
  local name="$1" pid; shift
  log "starting $name"
  (cd "$FIXTURE_WD" && exec setsid "$@" </dev/null >"$FIXTURE_LOGS/$name.log" 2>&1) &
  pid=$!
  echo "$name $pid $(proc_starttime "$pid" || echo 0)" >>"$FIXTURE_PIDS"
  printf -v "PID_$(echo "$name" | tr 'a-z-' 'A-Z_')" '%s' "$pid"
}
# launched_pid NAME [PIDFILE]: the PID recorded for NAME (in FIXTURE_PIDS by default).
launched_pid() {
  local file="${2:-$FIXTURE_PIDS}"
  [ -s "$file" ] && awk -v n="$1" '$1==n{print $2}' "$file"
}
# fail_with_logs MESSAGE NAME...: the last 30 lines of each process's log, then die.
fail_with_logs() {
  local msg="$1" n; shift
  for n in "$@"; do
    echo "---- last 30 lines of $FIXTURE_LOGS/$n.log" >&2
    tail -n 30 "$FIXTURE_LOGS/$n.log" >&2 || true
  done
  die "$msg" 1
}
# die_if_running PIDFILE WHAT: refuse to start over processes of an earlier start that still run.
die_if_running() {
  local name pid
  [ -s "$1" ] || return 0
  while read -r name pid _; do
    if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
      die "$2 already runs in $(dirname "$1") ($name, pid $pid); run its stop.sh first" 1
    fi
  done <"$1"
}

# term NAME PID CHECK...: SIGTERM, wait up to STOP_TIMEOUT seconds (15; stop_recorded sets it)
# while CHECK still holds, then SIGKILL. Counts in TERMINATED.
TERMINATED=0
term() {
  local name="$1" pid="$2" t0 deadline timeout="${STOP_TIMEOUT:-15}"; shift 2
  TERMINATED=$((TERMINATED + 1))
  t0=$(now)
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(date +%s) + timeout ))
  while "$@" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  if "$@"; then
    log "SIGKILL $name ($pid): still running ${timeout}s after SIGTERM"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do "$@" || break; sleep 0.1; done
  else
    log "stopped $name ($pid) after SIGTERM in $(elapsed "$t0")s"
  fi
}
# stop_recorded PIDFILE MARKER TIMEOUT [NAME]: stop NAME's recorded process (term), or every
# recorded one, newest first, one at a time.
stop_recorded() {
  local file="$1" marker="$2" only="${4:-}" lines l name pid st
  STOP_TIMEOUT=$3
  [ -s "$file" ] || return 0
  mapfile -t lines < <(tac "$file")
  for l in "${lines[@]}"; do
    read -r name pid st _ <<<"$l"
    [[ "${pid:-}" =~ ^[0-9]+$ ]] || continue
    [ -z "$only" ] || [ "$name" = "$only" ] || continue
    proc_recorded "$pid" "${st:-0}" "$marker" || continue
    term "$name" "$pid" proc_recorded "$pid" "${st:-0}" "$marker"
  done
}

# ---------------------------------------------------------------- Go builds
# The control plane's and the test node's binaries, built from Go modules and cached by key.
# find_go: PATH first, then the usual install location.
find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return 0; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return 0; fi
  return 1
}
# The module and build caches, shared by every Go build here: .../controlplane/{gomod,gocache}.
go_cache_root() { echo "$(pangeo_cache_dir)/controlplane"; }
# go_modules_hash DIR MODULE...: 12 hex digits over each module's go.mod and go.sum, in order.
go_modules_hash() {
  local dir="$1" m; shift
  (cd "$dir" && for m in "$@"; do cat "$m/go.mod" "$m/go.sum"; done) | sha256sum | cut -c1-12
}
# bins_complete DIR NAME...: every NAME is an executable in DIR.
bins_complete() {
  local d="$1" b; shift
  for b in "$@"; do [ -x "$d/$b" ] || return 1; done
  return 0
}
# The Go build cache (about 4 GiB) is only a speed-up for the next version bump, which is rare;
# once every Go binary is cached, drop it so the disk stays free for the Rust builds and the image.
go_drop_cache() { GOCACHE="$(go_cache_root)/gocache" "$1" clean -cache >/dev/null 2>&1 || true; }

# go_build_start WHAT ROOT KEY BINARY...: the skeleton of a cached build. Needs GO and PRINT_ONLY.
# A cache hit (also after waiting for another builder's lock: one builder per cache dir) logs it,
# prints the bin dir with PRINT_ONLY=1 and exits 0. Otherwise sets BIN (ROOT/KEY/bin) and TMP (the
# dir to build into, removed on exit), exports the Go environment, and returns.
go_build_start() {
  local what="$1" root="$2" key="$3"; shift 3
  BIN="$root/$key/bin"
  GO_BUILD_BINARIES=("$@")
  bins_complete "$BIN" "$@" && go_build_hit
  mkdir -p "$root"
  exec 9>"$root/.build.lock"
  if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    log "another build holds $root/.build.lock; waiting"
    flock 9
  fi
  bins_complete "$BIN" "$@" && go_build_hit   # built by someone else while we waited
  export GOMODCACHE GOCACHE
  GOMODCACHE="$(go_cache_root)/gomod"
  GOCACHE="$(go_cache_root)/gocache"
  export GOFLAGS=-mod=readonly     # go.mod/go.sum are committed; never rewrite them
  export GOTOOLCHAIN=local
  export GOWORK=off
  log "cache miss: building $what into $BIN"
  log "go: $GO ($("$GO" env GOVERSION)), GOMODCACHE=$GOMODCACHE, GOCACHE=$GOCACHE"
  TMP="$root/$key/bin.tmp.$$"
  rm -rf "$TMP"; mkdir -p "$TMP"
  # shellcheck disable=SC2064  # TMP is fixed now
  trap "rm -rf '$TMP'" EXIT
}
go_build_hit() {
  log "cache hit: $BIN"
  [ "${PRINT_ONLY:-0}" = 1 ] && echo "$BIN"
  exit 0
}
# go_build LABEL MODULE_DIR [go build args...] -- PACKAGE...: every binary of one module in one
# `go build -o TMP/`, so shared packages compile once.
go_build() {
  local label="$1" dir="$2" args=() t0; shift 2
  while [ "$1" != "--" ]; do args+=("$1"); shift; done; shift
  t0=$(date +%s)
  log "building $label ($*) ..."
  if ! (cd "$dir" && "$GO" build -trimpath "${args[@]}" -o "$TMP/" "$@") >"$TMP/$label.log" 2>&1; then
    tail -n 40 "$TMP/$label.log" >&2
    die "building $label failed (see output above; go downloads missing modules from \$GOPROXY=$("$GO" env GOPROXY))" 1
  fi
  log "built $label in $(( $(date +%s) - t0 ))s"
}
# go_build_finish: checks TMP, moves it to BIN, prints BIN with PRINT_ONLY=1.
go_build_finish() {
  bins_complete "$TMP" "${GO_BUILD_BINARIES[@]}" \
    || die "build finished but a binary is missing in $TMP (expected: ${GO_BUILD_BINARIES[*]})" 1
  rm -f "$TMP"/*.log
  rm -rf "$BIN"
  mv "$TMP" "$BIN"
  trap - EXIT
}

# ---------------------------------------------------------------- certificates
# pki_init DIR LOG [CA_CRT CA_KEY]: the PKI dir, openssl's log, and the CA that cert signs with
# (default DIR/ca.crt, DIR/ca.key).
pki_init() { PKI=$1 PKI_LOG=$2 CA_CRT=${3:-$1/ca.crt} CA_KEY=${4:-$1/ca.key}; }
ossl() { openssl "$@" >>"$PKI_LOG" 2>&1 || die "openssl $1 failed (see $PKI_LOG)" 1; }
ec_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
# ca_cert NAME CN: a self-signed CA, PKI/NAME.{key,crt}.
ca_cert() {
  ec_key "$PKI/$1.key"
  ossl req -x509 -new -key "$PKI/$1.key" -sha256 -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/$1.crt"
}
# cert NAME SUBJECT EXTKEYUSAGE [SUBJECTALTNAME]: PKI/NAME.{key,crt}, signed by CA_CRT/CA_KEY.
cert() {
  local name="$1" subj="$2" eku="$3" san="${4:-}" ext="$PKI/$1.ext"
  ec_key "$PKI/$name.key"
  ossl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  ossl x509 -req -in "$PKI/$name.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" -CAcreateserial \
    -CAserial "$PKI/$(basename "$CA_CRT" .crt).srl" -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt"
  rm -f "$PKI/$name.csr" "$ext"
  chmod 600 "$PKI/$name.key"
}
# kubeconfig FILE SERVER CA_FILE CERT_NAME: self-contained (certificates embedded as base64 data).
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pangeo-test
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 "$3")
users:
- name: $4
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$4.crt")
    client-key-data: $(base64 -w0 "$PKI/$4.key")
contexts:
- name: pangeo-test
  context:
    cluster: pangeo-test
    user: $4
current-context: pangeo-test
EOF
  chmod 600 "$1"
}
