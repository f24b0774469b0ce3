#!/usr/bin/env bash
# Loopback benchmark of the VAN router against a direct connection, stunnel and two HAProxies.
#
#   bash bench/run.sh
#
# Paths (all on 127.0.0.1):
#   direct    client -> server
#   van       client -> router A tcp listener -> mTLS link (TLS 1.3) -> router B tcp connector -> server
#   stunnel   client -> stunnel (client) -> mTLS (TLS 1.3, client cert required) -> stunnel (server) -> server
#   haproxy2  client -> haproxy (mode tcp) -> haproxy (mode tcp) -> server
#
# Environment (all optional):
#   BENCH_SECONDS=10      iperf3 duration per run (-t); e.g. 3 for a quick run
#   BENCH_REPS=3          repetitions; each figure is the median over them
#   BENCH_RTT_COUNT=10000 ping-pong round trips (64 B, one connection, TCP_NODELAY)
#   BENCH_CONN_COUNT=1000 new connections (connect + first 64 B echo)
#   BENCH_FLOWS=1000      idle flows held through the routers for the memory figure
#   BENCH_KEY=rsa         rsa (RSA-2048) or ec (ECDSA P-256) certificates
#   BENCH_PATHS="direct van stunnel haproxy2"   which paths to run
#   BENCH_IDLE_WAIT=30    seconds in all to wait for an idle machine (checked before each path)
#   BENCH_IDLE_BUSY=10    CPU busy percentage (both cores) that counts as idle
#   BENCH_BUILD=1         0 skips `cargo build --release -p van-router -p van-bench`
#   BENCH_VAN_BIN=...     router binary to use instead of target/release/van-router
#   BENCH_SLOW_GB=10      van path only: GB (10^9 bytes, fractions allowed) pushed through the routers
#                         into a reader capped at BENCH_SLOW_MBPS, watching the routers' RSS; 0 skips it
#   BENCH_SLOW_MBPS=400   the slow reader's cap, MB/s (10^6 bytes/s)
#
# Progress goes to stderr (and bench/out/run.log); the Markdown report goes to stdout and
# bench/out/results.md; raw figures, iperf3 JSON and latency samples to bench/out/raw/.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
RAW=$OUT/raw
WORK=$OUT/work
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

SECS=${BENCH_SECONDS:-10}
REPS=${BENCH_REPS:-3}
RTT_COUNT=${BENCH_RTT_COUNT:-10000}
CONN_COUNT=${BENCH_CONN_COUNT:-1000}
FLOWS=${BENCH_FLOWS:-1000}
KEY_TYPE=${BENCH_KEY:-rsa}
PATHS_WANTED=${BENCH_PATHS:-direct van stunnel haproxy2}
IDLE_WAIT=${BENCH_IDLE_WAIT:-30}
IDLE_BUSY=${BENCH_IDLE_BUSY:-10}
BUILD=${BENCH_BUILD:-1}
VAN_BIN=${BENCH_VAN_BIN:-$BIN/van-router}
SLOW_GB=${BENCH_SLOW_GB:-10}
SLOW_MBPS=${BENCH_SLOW_MBPS:-400}
ALL_PATHS=(direct van stunnel haproxy2)
LOG_TAG=bench
LOG_FILE=$OUT/run.log

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start

# A non-negative decimal number (BENCH_SLOW_GB, BENCH_SLOW_MBPS).
is_number() { [[ $1 =~ ^[0-9]+(\.[0-9]*)?$|^\.[0-9]+$ ]]; }
# kv KEY LINE: the value of KEY=value in a line of fields.
kv() { sed -n "s/.*\(^\| \)$1=\([^ ]*\).*/\2/p" <<<"$2"; }

# ---------------------------------------------------------------- paths
declare -A STATUS REASON PORT_IPERF PORT_ECHO MIDS
for p in "${ALL_PATHS[@]}"; do
	STATUS[$p]=ok
	REASON[$p]=
	MIDS[$p]=
done

# ---------------------------------------------------------------- tools
ulimit -n "$(ulimit -Hn | sed 's/unlimited/65536/')" 2>/dev/null || true
if (($(ulimit -n) < FLOWS * 2 + 200)); then
	log "warning: open-file limit $(ulimit -n) may be too low for $FLOWS flows"
fi

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need+=(stunnel4)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v openssl >/dev/null || need+=(openssl)
command -v jq >/dev/null || need+=(jq)
install_missing "$OUT/apt.log" "${need[@]}"
command -v iperf3 >/dev/null || die "iperf3 is missing"
command -v openssl >/dev/null || die "openssl is missing"
command -v jq >/dev/null || die "jq is missing"
STUNNEL=$(command -v stunnel4 || command -v stunnel || true)
HAPROXY=$(command -v haproxy || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true)
[ -n "$STUNNEL" ] || mark_failed stunnel "stunnel4 is not installed"
[ -n "$HAPROXY" ] || mark_failed haproxy2 "haproxy is not installed"
for p in "${ALL_PATHS[@]}"; do
	case " $PATHS_WANTED " in *" $p "*) ;; *) mark_skipped "$p" "not in BENCH_PATHS" ;; esac
done

# ---------------------------------------------------------------- build
VAN_BUILD_ERROR=
if [ "$BUILD" = 1 ]; then
	log "building: cargo build --release -p van-router -p van-bench (log: bench/out/build.log)"
	if ! (cd "$ROOT" && cargo build --release -p van-router -p van-bench) >"$OUT/build.log" 2>&1; then
		log "combined build failed; building van-bench alone"
		(cd "$ROOT" && cargo build --release -p van-bench) >>"$OUT/build.log" 2>&1 ||
			die "cannot build van-bench (see bench/out/build.log)"
		VAN_BUILD_ERROR="cargo build --release -p van-router failed (see bench/out/build.log)"
	fi
fi
for b in echo-server pingpong connrate holdflows waitready benchreport; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing (cargo build --release -p van-bench)"
done
check_van_bin

# ---------------------------------------------------------------- certificates
is_number "$SLOW_GB" || die "BENCH_SLOW_GB must be a number of GB (e.g. 10 or 0.5)"
{ is_number "$SLOW_MBPS" && awk "BEGIN { exit !($SLOW_MBPS > 0) }"; } || die "BENCH_SLOW_MBPS must be a positive number"
SLOW_BYTES=$(awk "BEGIN { printf \"%.0f\", $SLOW_GB * 1e9 }")

case $KEY_TYPE in rsa) KEY_DESC="RSA-2048" ;; ec) KEY_DESC="ECDSA P-256" ;; *) die "BENCH_KEY must be rsa or ec" ;; esac
log "generating a CA and $KEY_DESC certificates"
make_certs >"$WORK/certs.log" 2>&1 || die "openssl failed (see bench/out/work/certs.log)"
CERTS=$WORK/certs

# ---------------------------------------------------------------- machine
meta_machine
meta reps "$REPS"
meta seconds "$SECS"
meta rtt_count "$RTT_COUNT"
meta conn_count "$CONN_COUNT"
meta flows "$FLOWS"
meta key_type "$KEY_DESC"
meta slow_bytes "$SLOW_BYTES"
meta slow_mbps "$SLOW_MBPS"
tools="$(iperf3 --version 2>&1 | head -1 | awk '{ print $1, $2 }')"
[ -n "$STUNNEL" ] && tools+=", $("$STUNNEL" -version 2>&1 | grep -m1 '^stunnel' | awk '{ print $1, $2 }')"
[ -n "$HAPROXY" ] && tools+=", $("$HAPROXY" -v 2>&1 | head -1 | awk '{ print $1, $3 }')"
tools+=", $(openssl version | awk '{ print $1, $2 }')"
meta tools "$tools"

# ---------------------------------------------------------------- servers
free_port ECHO_PORT
free_port IPERF_PORT
start_bg echo-server "$BIN/echo-server" "127.0.0.1:$ECHO_PORT"
wait_listen "$ECHO_PORT" 5 || die "echo-server did not start (see bench/out/work/echo-server.log)"
PORT_IPERF[direct]=$IPERF_PORT
PORT_ECHO[direct]=$ECHO_PORT
# The slow reader (van path only): router B's third connector points to it.
SLOW_PORT=
SLOW_LISTEN=
if ok van && ((SLOW_BYTES > 0)); then
	free_port SLOW_PORT
	start_bg slowsink "$BIN/slowsink" "127.0.0.1:$SLOW_PORT" --rate-mbps "$SLOW_MBPS"
	wait_listen "$SLOW_PORT" 5 || die "slowsink did not start (see bench/out/work/slowsink.log)"
fi

# ---------------------------------------------------------------- van
start_van() {
	if [ -n "$VAN_BUILD_ERROR" ]; then
		mark_failed van "$VAN_BUILD_ERROR"
		return
	fi
	local l_iperf l_echo l_slow out
	free_port l_iperf
	free_port l_echo
	# The third service, to the slow reader (only when that transfer is measured).
	local slow_a=() slow_b=()
	if [ -n "$SLOW_PORT" ]; then
		free_port l_slow
		slow_a=("{name: slow, host: 127.0.0.1, port: $l_slow, routing_key: bench-slow}")
		slow_b=("{name: slow, host: 127.0.0.1, port: $SLOW_PORT, routing_key: bench-slow}")
	fi
	if ! start_van_pair \
		"{name: iperf, host: 127.0.0.1, port: $l_iperf, routing_key: bench-iperf}" \
		"{name: echo, host: 127.0.0.1, port: $l_echo, routing_key: bench-echo}" \
		"${slow_a[@]}" \
		-- \
		"{name: iperf, host: 127.0.0.1, port: $IPERF_PORT, routing_key: bench-iperf}" \
		"{name: echo, host: 127.0.0.1, port: $ECHO_PORT, routing_key: bench-echo}" \
		"${slow_b[@]}"; then
		mark_failed van "$VAN_ERROR"
		return
	fi
	if ! out=$("$BIN/waitready" "127.0.0.1:$l_echo" --timeout-ms 10000 2>&1); then
		mark_failed van "no echo through router A's listener within 10 s ($out); logs: bench/out/work/van-{a,b}.log"
		stop_pid "$VAN_A" "$VAN_B"
		return
	fi
	log "van: ready ($out)"
	PORT_IPERF[van]=$l_iperf
	PORT_ECHO[van]=$l_echo
	SLOW_LISTEN=${l_slow:-}
	MIDS[van]="$VAN_A $VAN_B"
}

# ---------------------------------------------------------------- stunnel
start_stunnel() {
	local c_iperf c_echo s_iperf s_echo out
	free_port c_iperf
	free_port c_echo
	free_port s_iperf
	free_port s_echo
	cat >"$WORK/stunnel-client.conf" <<-EOF
		foreground = yes
		pid =
		syslog = no
		debug = warning
		socket = l:TCP_NODELAY=1
		socket = r:TCP_NODELAY=1

		[iperf]
		client = yes
		accept = 127.0.0.1:$c_iperf
		connect = 127.0.0.1:$s_iperf
		cert = $CERTS/a.pem
		key = $CERTS/a.key
		CAfile = $CERTS/ca.pem
		verifyChain = yes
		checkIP = 127.0.0.1
		sslVersionMin = TLSv1.3

		[echo]
		client = yes
		accept = 127.0.0.1:$c_echo
		connect = 127.0.0.1:$s_echo
		cert = $CERTS/a.pem
		key = $CERTS/a.key
		CAfile = $CERTS/ca.pem
		verifyChain = yes
		checkIP = 127.0.0.1
		sslVersionMin = TLSv1.3
	EOF
	cat >"$WORK/stunnel-server.conf" <<-EOF
		foreground = yes
		pid =
		syslog = no
		debug = warning
		socket = l:TCP_NODELAY=1
		socket = r:TCP_NODELAY=1

		[iperf]
		accept = 127.0.0.1:$s_iperf
		connect = 127.0.0.1:$IPERF_PORT
		cert = $CERTS/b.pem
		key = $CERTS/b.key
		CAfile = $CERTS/ca.pem
		verifyChain = yes
		requireCert = yes
		sslVersionMin = TLSv1.3

		[echo]
		accept = 127.0.0.1:$s_echo
		connect = 127.0.0.1:$ECHO_PORT
		cert = $CERTS/b.pem
		key = $CERTS/b.key
		CAfile = $CERTS/ca.pem
		verifyChain = yes
		requireCert = yes
		sslVersionMin = TLSv1.3
	EOF
	start_bg stunnel-server "$STUNNEL" "$WORK/stunnel-server.conf"
	local srv=$LAST_PID
	start_bg stunnel-client "$STUNNEL" "$WORK/stunnel-client.conf"
	local cli=$LAST_PID
	if ! out=$("$BIN/waitready" "127.0.0.1:$c_echo" --timeout-ms 10000 2>&1); then
		mark_failed stunnel "no echo through stunnel within 10 s ($out); logs: bench/out/work/stunnel-*.log"
		stop_pid "$cli" "$srv"
		return
	fi
	log "stunnel: ready ($out)"
	PORT_IPERF[stunnel]=$c_iperf
	PORT_ECHO[stunnel]=$c_echo
	MIDS[stunnel]="$cli $srv"
}

# ---------------------------------------------------------------- haproxy
start_haproxy2() {
	local h1_iperf h1_echo h2_iperf h2_echo out n
	free_port h1_iperf
	free_port h1_echo
	free_port h2_iperf
	free_port h2_echo
	write_haproxy() { # FILE IPERF_IN IPERF_OUT ECHO_IN ECHO_OUT
		cat >"$1" <<-EOF
			global
			    maxconn 4096
			defaults
			    mode tcp
			    timeout connect 5s
			    timeout client 2m
			    timeout server 2m
			listen iperf
			    bind 127.0.0.1:$2
			    server s 127.0.0.1:$3
			listen echo
			    bind 127.0.0.1:$4
			    server s 127.0.0.1:$5
		EOF
	}
	write_haproxy "$WORK/haproxy-1.cfg" "$h1_iperf" "$h2_iperf" "$h1_echo" "$h2_echo"
	write_haproxy "$WORK/haproxy-2.cfg" "$h2_iperf" "$IPERF_PORT" "$h2_echo" "$ECHO_PORT"
	for n in 1 2; do
		if ! out=$("$HAPROXY" -c -q -f "$WORK/haproxy-$n.cfg" 2>&1); then
			mark_failed haproxy2 "haproxy-$n.cfg rejected: $(tail -1 <<<"$out")"
			return
		fi
	done
	start_bg haproxy-2 "$HAPROXY" -db -f "$WORK/haproxy-2.cfg"
	local second=$LAST_PID
	start_bg haproxy-1 "$HAPROXY" -db -f "$WORK/haproxy-1.cfg"
	local first=$LAST_PID
	if ! out=$("$BIN/waitready" "127.0.0.1:$h1_echo" --timeout-ms 10000 2>&1); then
		mark_failed haproxy2 "no echo through haproxy within 10 s ($out); logs: bench/out/work/haproxy-*.log"
		stop_pid "$first" "$second"
		return
	fi
	log "haproxy2: ready ($out)"
	PORT_IPERF[haproxy2]=$h1_iperf
	PORT_ECHO[haproxy2]=$h1_echo
	MIDS[haproxy2]="$first $second"
}

ok van && start_van
ok stunnel && start_stunnel
ok haproxy2 && start_haproxy2

# ---------------------------------------------------------------- router memory
# RSS idle (fresh routers, before any other test), with FLOWS idle flows, after they close.
measure_memory() {
	local a b ready line opened errors i hp
	read -r a b <<<"${MIDS[van]}"
	sleep 1
	emit 0 van rss_idle_a_kib "$(rss_kib "$a")"
	emit 0 van rss_idle_b_kib "$(rss_kib "$b")"
	ready=$WORK/holdflows.ready
	rm -f "$ready"
	start_bg holdflows "$BIN/holdflows" "127.0.0.1:${PORT_ECHO[van]}" --count "$FLOWS" \
		--ready-file "$ready" --hold-secs 600
	hp=$LAST_PID
	for i in $(seq 1200); do
		[ -s "$ready" ] && break
		kill -0 "$hp" 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -s "$ready" ]; then
		note van "memory: holdflows did not finish opening $FLOWS flows within 120 s (see bench/out/work/holdflows.log)"
		stop_pid "$hp"
		return
	fi
	line=$(<"$ready")
	opened=$(kv opened "$line")
	errors=$(kv errors "$line")
	log "van: holding flows: $line"
	sleep 2
	emit 0 van rss_flows_a_kib "$(rss_kib "$a")"
	emit 0 van rss_flows_b_kib "$(rss_kib "$b")"
	emit 0 van flows_opened "$opened"
	emit 0 van flows_errors "$errors"
	((errors > 0)) && note van "memory: $errors of $FLOWS flows could not be opened"
	stop_pid "$hp"
	sleep 3
	emit 0 van rss_closed_a_kib "$(rss_kib "$a")"
	emit 0 van rss_closed_b_kib "$(rss_kib "$b")"
	log "van: RSS KiB A idle/flows/closed and B: $(awk -F'\t' '$3 ~ /^rss_/ { printf "%s=%s ", $3, $4 }' "$RAW/results.tsv")"
}
if ok van; then
	log "van: router memory with $FLOWS idle flows"
	measure_memory
fi

# ---------------------------------------------------------------- measurements
# run_iperf PATH REP LABEL [iperf3 args...]: one iperf3 run against a fresh one-off server.
run_iperf() {
	local path=$1 rep=$2 label=$3
	shift 3
	local json=$RAW/iperf-$path-$label-r$rep.json srv rc c0 c1 t0 t1 bps bytes err try
	for try in 1 2; do
		start_bg "iperf3-server-$path-$label-r$rep" iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT"
		srv=$LAST_PID
		if ! wait_listen "$IPERF_PORT" 5; then
			stop_pid "$srv"
			note "$path" "iperf3 server did not start"
			return 1
		fi
		# shellcheck disable=SC2086 # a list of pids
		c0=$(cpu_ticks ${MIDS[$path]})
		t0=$(date +%s.%N)
		timeout $((SECS + 30)) iperf3 -c 127.0.0.1 -p "${PORT_IPERF[$path]}" -t "$SECS" -J "$@" \
			>"$json" 2>"$json.stderr"
		rc=$?
		t1=$(date +%s.%N)
		# shellcheck disable=SC2086 # a list of pids
		c1=$(cpu_ticks ${MIDS[$path]})
		stop_pid "$srv"
		bps=$(jq -r '.end.sum_received.bits_per_second // empty' "$json" 2>/dev/null)
		bytes=$(jq -r '.end.sum_received.bytes // empty' "$json" 2>/dev/null)
		if [ "$rc" = 0 ] && [ -n "$bps" ] && [ -n "$bytes" ] && [ "$bytes" != 0 ]; then
			break
		fi
		err=$(jq -r '.error // empty' "$json" 2>/dev/null)
		[ -n "$err" ] || err="exit $rc $(tail -c 300 "$json.stderr")"
		if [ "$try" = 1 ]; then
			log "$path: iperf3 $label failed ($err); retrying once"
			sleep 1
		else
			note "$path" "iperf3 $label (rep $rep) failed: $err"
			return 1
		fi
	done
	local gbps
	gbps=$(fcalc "$bps / 1e9")
	emit "$rep" "$path" "$label" "$gbps"
	local msg="$label $gbps Gb/s"
	if [ "$label" = tput1_gbps ] && [ -n "${MIDS[$path]}" ] && [ -n "$c0" ] && [ -n "$c1" ]; then
		local cpu_s
		cpu_s=$(fcalc "($c1 - $c0) / $CLK_TCK")
		emit "$rep" "$path" cpu_s_per_gb "$(fcalc "$cpu_s / ($bytes / 1e9)")"
		emit "$rep" "$path" relay_cores "$(fcalc "$cpu_s / ($t1 - $t0)")"
		msg+=", relays ${cpu_s} CPU-s for $(fcalc "$bytes / 1e9") GB"
	fi
	log "$path: $msg"
}

run_pingpong() {
	local path=$1 rep=$2 out
	if ! out=$(timeout 300 "$BIN/pingpong" "127.0.0.1:${PORT_ECHO[$path]}" --count "$RTT_COUNT" --size 64 \
		--warmup 1000 --raw "$RAW/rtt-$path-r$rep.ns" 2>&1); then
		note "$path" "ping-pong (rep $rep) failed: $out"
		return 1
	fi
	echo "$path rep $rep $out" >>"$RAW/pingpong.txt"
	emit "$rep" "$path" rtt_p50_us "$(kv p50_us "$out")"
	emit "$rep" "$path" rtt_p99_us "$(kv p99_us "$out")"
	log "$path: RTT p50 $(kv p50_us "$out") µs, p99 $(kv p99_us "$out") µs"
}

run_connrate() {
	local path=$1 rep=$2 out rc errs
	out=$(timeout 600 "$BIN/connrate" "127.0.0.1:${PORT_ECHO[$path]}" --count "$CONN_COUNT" --size 64 \
		--warmup 20 --raw "$RAW/conn-$path-r$rep.ns" 2>"$WORK/connrate.err")
	rc=$?
	if [ "$rc" != 0 ] && [ "$rc" != 2 ]; then
		note "$path" "connect+echo (rep $rep) failed: $out $(tail -c 300 "$WORK/connrate.err")"
		return 1
	fi
	echo "$path rep $rep $out" >>"$RAW/connrate.txt"
	errs=$(kv errors "$out")
	[ "$rc" = 2 ] && note "$path" "connect+echo (rep $rep): $errs failed attempts: $(tail -c 300 "$WORK/connrate.err")"
	emit "$rep" "$path" conn_p50_us "$(kv p50_us "$out")"
	emit "$rep" "$path" conn_p99_us "$(kv p99_us "$out")"
	log "$path: connect+echo p50 $(kv p50_us "$out") µs, p99 $(kv p99_us "$out") µs ($(kv conn_per_s "$out") conn/s)"
}

# measure_path PATH REP: the loads of one repetition (run_reps calls it), up to a relay that exits.
measure_path() {
	local path=$1 rep=$2
	run_iperf "$path" "$rep" tput1_gbps
	mids_alive "$path" || return
	run_iperf "$path" "$rep" tputP8_gbps -P 8
	mids_alive "$path" || return
	run_pingpong "$path" "$rep"
	mids_alive "$path" || return
	run_connrate "$path" "$rep"
	mids_alive "$path"
}
run_reps measure_path

# ---------------------------------------------------------------- slow reader (van path)
# SLOW_BYTES through router A's listener into a reader capped at SLOW_MBPS, sampling both
# routers' VmRSS every 100 ms; idle RSS right before (after every other test).
measure_slow_reader() {
	local a b line rc limit
	read -r a b <<<"${MIDS[van]}"
	wait_idle
	log "van: slow reader: $(fcalc "$SLOW_BYTES / 1e9") GB into a reader capped at $SLOW_MBPS MB/s (background CPU busy $IDLE_RESULT)"
	sleep 1
	emit 0 van slow_rss_idle_a_kib "$(rss_kib "$a")"
	emit 0 van slow_rss_idle_b_kib "$(rss_kib "$b")"
	# Twice the time at the cap, plus a minute.
	limit=$(awk "BEGIN { printf \"%d\", 2 * $SLOW_BYTES / ($SLOW_MBPS * 1e6) + 60 }")
	line=$(timeout "$limit" "$BIN/slowsend" "127.0.0.1:$SLOW_LISTEN" --bytes "$SLOW_BYTES" \
		--watch-pids "$a,$b" --sample-ms 100 --samples "$RAW/slow-rss.tsv" 2>"$WORK/slowsend.err")
	rc=$?
	echo "$line" >>"$RAW/slowsend.txt"
	log "van: slow reader: $line"
	if [ -z "$line" ]; then
		[ "$rc" = 124 ] && rc+=", timed out after $limit s"
		note van "slow reader: slowsend failed (exit $rc): $(tail -c 300 "$WORK/slowsend.err")"
		return 1
	fi
	[ "$rc" = 0 ] || note van "slow reader: transfer incomplete or altered (exit $rc): $line $(tail -c 300 "$WORK/slowsend.err")"
	emit 0 van slow_sent_bytes "$(kv sent "$line")"
	emit 0 van slow_received_bytes "$(kv received "$line")"
	emit 0 van slow_count_ok "$([ "$(kv count_ok "$line")" = yes ] && echo 1 || echo 0)"
	emit 0 van slow_content_ok "$([ "$(kv content "$line")" = ok ] && echo 1 || echo 0)"
	emit 0 van slow_send_secs "$(kv send_secs "$line")"
	emit 0 van slow_secs "$(kv secs "$line")"
	emit 0 van slow_mb_per_s "$(kv mb_per_s "$line")"
	emit 0 van slow_read_wait_pct "$(kv read_wait_pct "$line")"
	emit 0 van slow_samples "$(kv samples "$line")"
	emit 0 van slow_rss_peak_a_kib "$(kv rss_peak_kib "$line" | cut -d, -f1)"
	emit 0 van slow_rss_peak_b_kib "$(kv rss_peak_kib "$line" | cut -d, -f2)"
	emit 0 van slow_hwm_a_kib "$(kv hwm_kib "$line" | cut -d, -f1)"
	emit 0 van slow_hwm_b_kib "$(kv hwm_kib "$line" | cut -d, -f2)"
	sleep 3
	emit 0 van slow_rss_after_a_kib "$(rss_kib "$a")"
	emit 0 van slow_rss_after_b_kib "$(rss_kib "$b")"
}
if ok van && ((SLOW_BYTES > 0)); then
	if [ -z "$SLOW_LISTEN" ] || ! mids_alive van; then
		note van "slow reader: not measured (the routers are not running)"
	else
		measure_slow_reader
		for pid in ${MIDS[van]}; do
			if ! kill -0 "$pid" 2>/dev/null; then
				note van "slow reader: a router exited during the transfer (see bench/out/work/van-{a,b}.log)"
				emit 0 van slow_router_exited 1
				break
			fi
		done
	fi
fi

# ---------------------------------------------------------------- report
for p in "${ALL_PATHS[@]}"; do
	printf '%s\t%s\t%s\n' "$p" "${STATUS[$p]}" "${REASON[$p]}" >>"$RAW/status.tsv"
done
cp "$WORK"/*.yaml "$WORK"/*.conf "$WORK"/*.cfg "$RAW/" 2>/dev/null
log "done; report in bench/out/results.md"
"$BIN/benchreport" "$RAW" --out "$OUT/results.md"
