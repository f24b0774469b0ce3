#!/usr/bin/env bash
# What flow records cost the data path: throughput and connection rate through two linked
# routers with nobody reading records ("off") and with van-console attached to router A,
# reading every record of both routers ("on").
#
#   bash bench/records.sh
#
# Paths (all on 127.0.0.1): client -> router A tcp listener -> mTLS link -> router B -> server.
# Each repetition measures off, then on: iperf3 one stream for BENCH_SECONDS, then BENCH_CONN_COUNT
# sequential connections (connect, 64 B echo, close). Figures are medians over the repetitions;
# the ratio on/off is what the issue bounds (at least 0.95).
#
# Environment (all optional):
#   BENCH_SECONDS=10      iperf3 duration per run
#   BENCH_REPS=3          repetitions
#   BENCH_CONN_COUNT=5000 connections per connection-rate run
#   BENCH_KEY=rsa         certificates: rsa or ec
#   BENCH_BUILD=1         0 skips `cargo build --release -p van-router -p van-console -p van-bench`
#
# Output: a Markdown table on stdout and in bench/out/records.md; logs in bench/out/records.log.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
RAW=$OUT/raw
WORK=$OUT/work
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
SECS=${BENCH_SECONDS:-10}
REPS=${BENCH_REPS:-3}
CONN_COUNT=${BENCH_CONN_COUNT:-5000}
KEY_TYPE=${BENCH_KEY:-rsa}
BUILD=${BENCH_BUILD:-1}
VAN_BIN=$BIN/van-router
IDLE_WAIT=30
IDLE_BUSY=10
ALL_PATHS=(van)
LOG_TAG=records
LOG_FILE=$OUT/records.log

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start

if [ "$BUILD" = 1 ]; then
	log "building: cargo build --release -p van-router -p van-console -p van-bench"
	(cd "$ROOT" && cargo build --release -p van-router -p van-console -p van-bench) >"$OUT/build.log" 2>&1 ||
		die "cargo build failed (see bench/out/build.log)"
fi
for b in van-router van-console echo-server connrate; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing"
done
missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
install_missing "$WORK/apt.log" "${missing[@]}"
for t in iperf3 openssl curl; do command -v "$t" >/dev/null || die "$t is missing"; done

CERTS=$WORK/certs
make_certs >"$WORK/certs.log" 2>&1 || die "openssl failed (see bench/out/work/certs.log)"

free_port ECHO_PORT
free_port IPERF_PORT
free_port L_ECHO
free_port L_IPERF
start_bg echo-server "$BIN/echo-server" "127.0.0.1:$ECHO_PORT"
wait_listen "$ECHO_PORT" 5 || die "echo-server did not start"
start_van_pair \
	"{name: echo, host: 127.0.0.1, port: $L_ECHO, routing_key: echo}" \
	"{name: iperf, host: 127.0.0.1, port: $L_IPERF, routing_key: iperf}" -- \
	"{name: echo, host: 127.0.0.1, port: $ECHO_PORT, routing_key: echo}" \
	"{name: iperf, host: 127.0.0.1, port: $IPERF_PORT, routing_key: iperf}" ||
	die "$VAN_ERROR"
if ! wait_listen "$L_ECHO" 10 || ! wait_listen "$L_IPERF" 10; then
	die "router A's listeners did not come up"
fi
ADMIN_A=$(sed -n 's/^admin: {listen: "\(.*\)"}$/\1/p' "$WORK/van-a.yaml")

# console_on: starts van-console on router A and waits until it has both routers' records.
console_on() {
	free_port CONSOLE_PORT
	start_bg console "$BIN/van-console" --router "$ADMIN_A" --auth unsecured \
		--listen "127.0.0.1:$CONSOLE_PORT" --log warn
	CONSOLE=$LAST_PID
	local _
	for _ in $(seq 100); do
		if curl -sf "http://127.0.0.1:$CONSOLE_PORT/api/v1/routers" 2>/dev/null | grep -q bench-b; then
			return 0
		fi
		sleep 0.1
	done
	die "van-console did not see both routers (see bench/out/work/console.log)"
}

# iperf MODE REP: one iperf3 run through the routers; Gb/s to stdout.
iperf() {
	local json=$RAW/iperf-$1-r$2.json
	start_bg "iperf3-server-$1-$2" iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT"
	wait_listen "$IPERF_PORT" 5 || die "iperf3 server did not start"
	timeout $((SECS + 30)) iperf3 -c 127.0.0.1 -p "$L_IPERF" -t "$SECS" -J >"$json" 2>"$WORK/iperf.err"
	stop_pid "$LAST_PID"
	awk -v b="$(jq -r '.end.sum_received.bits_per_second' "$json" 2>/dev/null || echo 0)" \
		'BEGIN { printf "%.2f", b / 1e9 }'
}

# conns MODE REP: connections per second to stdout.
conns() {
	local out
	out=$("$BIN/connrate" "127.0.0.1:$L_ECHO" --count "$CONN_COUNT" --size 64 --warmup 50 2>>"$WORK/connrate.err")
	echo "$1 rep $2 $out" >>"$RAW/connrate.txt"
	sed -n 's/.*conn_per_s=\([0-9]*\).*/\1/p' <<<"$out"
}

command -v jq >/dev/null || install_missing "$WORK/apt-jq.log" jq
declare -A GBPS CPS
records=
for rep in $(seq "$REPS"); do
	for mode in off on; do
		wait_idle
		[ "$mode" = on ] && console_on
		GBPS[$mode]+="$(iperf "$mode" "$rep") "
		CPS[$mode]+="$(conns "$mode" "$rep") "
		if [ "$mode" = on ]; then
			records=$(curl -s "http://127.0.0.1:$CONSOLE_PORT/metrics" | awk '/^van_console_records_total/ { r = $2 } /^van_console_records_dropped_total/ { d = $2 } END { printf "%s records, %s dropped", r, d }')
			log "console (rep $rep): $records, RSS $(rss_kib "$CONSOLE") KiB"
			stop_pid "$CONSOLE"
		fi
		log "rep $rep $mode: $(awk '{ print $NF }' <<<"${GBPS[$mode]}") Gb/s, $(awk '{ print $NF }' <<<"${CPS[$mode]}") connections/s"
	done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
g_off=$(median "${GBPS[off]}")
g_on=$(median "${GBPS[on]}")
c_off=$(median "${CPS[off]}")
c_on=$(median "${CPS[on]}")
{
	echo "| records | 1 stream Gb/s (runs) | connections/s (runs) |"
	echo "| --- | --- | --- |"
	echo "| off | $g_off (${GBPS[off]% }) | $c_off (${CPS[off]% }) |"
	echo "| on (van-console attached) | $g_on (${GBPS[on]% }) | $c_on (${CPS[on]% }) |"
	echo "| on / off | $(fcalc "$g_on / $g_off") | $(fcalc "$c_on / $c_off") |"
	echo
	echo "Last run with the console: $records. $REPS repetitions, ${SECS} s iperf3, $CONN_COUNT connections each."
} | tee "$OUT/records.md"
