# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/http.sh (both source this file): logging, background
# processes and their cleanup, free ports, /proc figures (CPU ticks, RSS, machine busy), the raw
# result files and per-path status, the repetitions loop, installing missing tools with apt-get,
# the test certificates and the pair of VAN routers.
#
# Sourcing only defines functions and plain variables (PIDS, LAST_PID, USED_PORTS, CLK_TCK,
# IDLE_BUDGET, IDLE_RESULT); the script then calls bench_start, which empties its output
# directories and installs the cleanup traps.
#
# Set before sourcing:
#   LOG_TAG    log() prefix: "bench" gives "[bench 12:34:56] message"
#   LOG_FILE   the file log() appends to (besides stderr)
#   IDLE_WAIT  seconds wait_idle may wait over the whole run
# Read by the functions when they run:
#   ROOT, OUT, RAW, WORK (the checkout and the output directories), IDLE_BUSY, REPS, ALL_PATHS,
#   KEY_TYPE, CERTS, VAN_BIN, VAN_BUILD_ERROR, and the associative arrays STATUS, REASON, MIDS.

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%T)" "$*" | tee -a "$LOG_FILE" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
LAST_PID=

# start_bg NAME CMD...: runs CMD in the background, output to $WORK/NAME.log; sets LAST_PID.
start_bg() {
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# stop_pid PID...: TERM, up to 3 s grace, KILL; reaps it and forgets it. The children of each
# PID (nginx workers) are killed too if they outlive their master.
stop_pid() {
	local pid i alive kids=()
	for pid in "$@"; do
		# shellcheck disable=SC2207 # pids are single words
		kids+=($(pgrep -P "$pid" 2>/dev/null))
		kill -TERM "$pid" 2>/dev/null
	done
	for i in $(seq 30); do
		alive=0
		for pid in "$@" "${kids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${kids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
	for pid in "$@"; do
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		local keep=() p
		for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
		PIDS=("${keep[@]}")
	done
	return 0
}

# cleanup: stops every process start_bg started and has not been stopped (the EXIT trap).
cleanup() {
	trap - EXIT INT TERM
	if ((${#PIDS[@]})); then
		stop_pid "${PIDS[@]}"
	fi
}

# bench_start: the script's first step: OUT, fresh RAW and WORK directories, an empty LOG_FILE, and
# the traps that stop every process start_bg started when the script exits or is interrupted.
bench_start() {
	mkdir -p "$OUT"
	rm -rf "$RAW" "$WORK"
	mkdir -p "$RAW" "$WORK"
	: >"$LOG_FILE"
	trap cleanup EXIT
	trap 'log "interrupted"; exit 130' INT TERM
}

# ---------------------------------------------------------------- results and path status
emit() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/results.tsv"; }
note() {
	local msg=${2//$'\t'/ }
	msg=${msg//$'\n'/ }
	printf '%s\t%s\n' "$1" "$msg" >>"$RAW/notes.tsv"
	log "$1: $msg"
}
meta() { printf '%s\t%s\n' "$1" "$2" >>"$RAW/meta.tsv"; }
# meta_machine: the machine and checkout lines of meta.tsv (nproc, cpu_model, kernel, os, date, git_rev).
meta_machine() {
	local rev
	meta nproc "$(nproc)"
	meta cpu_model "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	meta kernel "$(uname -r)"
	# shellcheck disable=SC1091 # the running system's file
	meta os "$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
	meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	[ -n "$(git -C "$ROOT" status --porcelain -- router proto 2>/dev/null)" ] && rev+=" (with uncommitted changes)"
	meta git_rev "$rev"
}

# shellcheck disable=SC2034 # REASON is read by the scripts
mark_failed() {
	STATUS[$1]=failed
	REASON[$1]=$2
	log "$1: FAILED: $2"
}
# shellcheck disable=SC2034
mark_skipped() {
	STATUS[$1]=skipped
	REASON[$1]=$2
}
ok() { [ "${STATUS[$1]}" = ok ]; }
# mids_alive PATH: whether every relay process of PATH still runs; marks PATH failed if not.
# shellcheck disable=SC2153 # MIDS is set by the scripts
mids_alive() {
	local pid
	for pid in ${MIDS[$1]}; do
		if ! kill -0 "$pid" 2>/dev/null; then
			mark_failed "$1" "a relay process exited during the run (see ${WORK#"$ROOT"/}/)"
			return 1
		fi
	done
	return 0
}

# ---------------------------------------------------------------- ports
USED_PORTS=" "
port_in_use() {
	local hex
	hex=$(printf ':%04X ' "$1")
	grep -qi -- "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# free_port VAR: a port in 20000..31999 (below the ephemeral range) that no socket uses.
free_port() {
	local p _
	for _ in $(seq 500); do
		p=$((20000 + RANDOM % 12000))
		case $USED_PORTS in *" $p "*) continue ;; esac
		if ! port_in_use "$p"; then
			USED_PORTS+="$p "
			printf -v "$1" '%s' "$p"
			return 0
		fi
	done
	die "no free port found"
}
# wait_listen PORT SECONDS: until something listens on 127.0.0.1:PORT.
wait_listen() {
	local hex i
	hex=$(printf '%04X' "$1")
	for i in $(seq $(($2 * 20))); do
		if awk -v h=":$hex" 'toupper(substr($2, length($2) - 4)) == h && $4 == "0A" { f = 1 } END { exit !f }' \
			/proc/net/tcp /proc/net/tcp6 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# ---------------------------------------------------------------- /proc helpers
# shellcheck disable=SC2034 # used by the scripts
CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID...: utime+stime summed (all threads), in clock ticks.
cpu_ticks() {
	local t=0 pid v
	for pid in "$@"; do
		v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || return 1
		[ -n "$v" ] || return 1
		t=$((t + v))
	done
	echo "$t"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
# cpu_busy_pct: share of all CPUs busy over one second.
cpu_busy_pct() {
	local c u n s i w q sq st rest b1 t1 b2 t2
	# shellcheck disable=SC2034 # c and rest are placeholders
	read -r c u n s i w q sq st rest </proc/stat
	b1=$((u + n + s + q + sq + st))
	t1=$((b1 + i + w))
	sleep 1
	# shellcheck disable=SC2034
	read -r c u n s i w q sq st rest </proc/stat
	b2=$((u + n + s + q + sq + st))
	t2=$((b2 + i + w))
	echo $((100 * (b2 - b1) / (t2 - t1 > 0 ? t2 - t1 : 1)))
}
# wait_idle: until the machine is idle (at most IDLE_BUSY % busy over one second), for at most
# 15 s per call and IDLE_WAIT s over the whole run; sets IDLE_RESULT to the last busy figure.
# Another compile on this 2-core machine halves every figure; the report shows how busy it was.
IDLE_BUDGET=$IDLE_WAIT
IDLE_RESULT=
# shellcheck disable=SC2034 # IDLE_RESULT is read by the scripts
wait_idle() {
	local start=$SECONDS busy limit
	limit=$((IDLE_BUDGET < 15 ? IDLE_BUDGET : 15))
	while :; do
		busy=$(cpu_busy_pct)
		if ((busy <= IDLE_BUSY)); then
			IDLE_RESULT="$busy%"
			break
		fi
		if ((SECONDS - start >= limit)); then
			IDLE_RESULT="$busy%!"
			log "machine still busy ($busy%); measuring anyway"
			break
		fi
		log "machine busy ($busy%), waiting for idle"
	done
	IDLE_BUDGET=$((IDLE_BUDGET - (SECONDS - start - 1)))
	((IDLE_BUDGET > 0)) || IDLE_BUDGET=0
}
fcalc() { awk "BEGIN { printf \"%.4f\", $1 }"; }

# run_reps MEASURE: REPS repetitions; in each, for every path still ok: waits for an idle machine,
# checks that its relays still run and calls MEASURE PATH REP. How busy the machine was before
# each path goes to meta.tsv (idle_busy).
run_reps() {
	local measure=$1 rep path idle_list=
	for rep in $(seq "$REPS"); do
		log "repetition $rep of $REPS"
		idle_list+="${idle_list:+; }rep $rep:"
		for path in "${ALL_PATHS[@]}"; do
			ok "$path" || continue
			wait_idle
			idle_list+=" $path $IDLE_RESULT"
			log "$path (rep $rep): background CPU busy $IDLE_RESULT"
			mids_alive "$path" || continue
			"$measure" "$path" "$rep"
		done
	done
	meta idle_busy "$idle_list"
}

# ---------------------------------------------------------------- tools and the router
# install_missing APT_LOG PKG...: installs the packages with apt-get (sudo unless root), output to
# APT_LOG; nothing without packages. A failure is logged, not fatal: the caller checks the tools.
install_missing() {
	local apt_log=$1 sudo=
	shift
	(($#)) || return 0
	[ "$(id -u)" = 0 ] || sudo=sudo
	log "installing $* with apt-get"
	{
		$sudo apt-get update -qq &&
			$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
	} >"$apt_log" 2>&1 || log "apt-get failed (see ${apt_log#"$ROOT"/})"
}

# check_van_bin: after the build: a router given by BENCH_VAN_BIN does not need it; sets
# VAN_BUILD_ERROR if VAN_BIN cannot be run.
check_van_bin() {
	if [ -n "${BENCH_VAN_BIN:-}" ]; then
		VAN_BUILD_ERROR=
	fi
	if [ -z "$VAN_BUILD_ERROR" ] && [ ! -x "$VAN_BIN" ]; then
		VAN_BUILD_ERROR="$VAN_BIN is missing"
	fi
}

# start_van_pair LISTENER... -- CONNECTOR...: two routers joined by an mTLS link (router A dials
# router B, with the certificates a and b of CERTS), router A with the tcp_listeners and router B
# with the tcp_connectors given (YAML flow mappings, one an argument). Writes $WORK/van-a.yaml and
# van-b.yaml, checks both (--check) and starts B, then A: sets VAN_B and VAN_A, or VAN_ERROR and
# returns 1 if a configuration is rejected. Whether traffic passes is for the caller to check.
# shellcheck disable=SC2034 # VAN_A, VAN_B and VAN_ERROR are read by the scripts
start_van_pair() {
	local listeners=() admin_a admin_b link c out
	while (($#)) && [ "$1" != -- ]; do
		listeners+=("$1")
		shift
	done
	shift
	VAN_ERROR=
	free_port admin_a
	free_port admin_b
	free_port link
	{
		cat <<-EOF
			router: {id: bench-a, mode: interior}
			admin: {listen: "127.0.0.1:$admin_a"}
			tls_profiles:
			  - {name: link, ca_file: $CERTS/ca.pem, cert_file: $CERTS/a.pem, key_file: $CERTS/a.key}
			links:
			  - {name: to-b, host: 127.0.0.1, port: $link, cost: 1, tls_profile: link}
			tcp_listeners:
		EOF
		printf '  - %s\n' "${listeners[@]}"
	} >"$WORK/van-a.yaml"
	{
		cat <<-EOF
			router: {id: bench-b, mode: interior}
			admin: {listen: "127.0.0.1:$admin_b"}
			tls_profiles:
			  - {name: link, ca_file: $CERTS/ca.pem, cert_file: $CERTS/b.pem, key_file: $CERTS/b.key}
			link_listeners:
			  - {name: inter-router, host: 127.0.0.1, port: $link, cost: 1, tls_profile: link}
			tcp_connectors:
		EOF
		printf '  - %s\n' "$@"
	} >"$WORK/van-b.yaml"
	for c in a b; do
		if ! out=$("$VAN_BIN" --config "$WORK/van-$c.yaml" --check 2>&1); then
			VAN_ERROR="router $c configuration rejected: $(tail -1 <<<"$out")"
			return 1
		fi
	done
	start_bg van-b "$VAN_BIN" --config "$WORK/van-b.yaml"
	VAN_B=$LAST_PID
	start_bg van-a "$VAN_BIN" --config "$WORK/van-a.yaml"
	VAN_A=$LAST_PID
}

# ---------------------------------------------------------------- certificates
# gen_key FILE: a KEY_TYPE private key.
gen_key() {
	if [ "$KEY_TYPE" = ec ]; then
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
	else
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"
	fi
}
# make_certs: in $WORK/certs a test CA (ca.pem, ca.key) and two leaf certificates signed by it
# (a.pem/a.key, b.pem/b.key; server and client use, for 127.0.0.1 and localhost). Everyone
# presents one and verifies the peer's against the CA.
make_certs() {
	local d=$WORK/certs n ku
	mkdir -p "$d"
	cat >"$d/ca.cnf" <<-EOF
		[req]
		distinguished_name = dn
		prompt = no
		[dn]
		CN = van-bench test CA
		[v3_ca]
		basicConstraints = critical,CA:TRUE
		keyUsage = critical,keyCertSign,cRLSign
		subjectKeyIdentifier = hash
	EOF
	gen_key "$d/ca.key" || return 1
	openssl req -x509 -new -key "$d/ca.key" -config "$d/ca.cnf" -extensions v3_ca -days 3 -sha256 \
		-out "$d/ca.pem" || return 1
	if [ "$KEY_TYPE" = ec ]; then ku=digitalSignature; else ku=digitalSignature,keyEncipherment; fi
	for n in a b; do
		gen_key "$d/$n.key" || return 1
		openssl req -new -key "$d/$n.key" -subj "/CN=bench-$n" -out "$d/$n.csr" || return 1
		cat >"$d/$n.ext" <<-EOF
			basicConstraints = critical,CA:FALSE
			keyUsage = critical,$ku
			extendedKeyUsage = serverAuth,clientAuth
			subjectAltName = IP:127.0.0.1,DNS:localhost
			subjectKeyIdentifier = hash
			authorityKeyIdentifier = keyid
		EOF
		openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 3 \
			-sha256 -extfile "$d/$n.ext" -out "$d/$n.pem" || return 1
		openssl verify -CAfile "$d/ca.pem" "$d/$n.pem" >/dev/null || return 1
	done
}
