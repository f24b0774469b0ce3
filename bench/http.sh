#!/usr/bin/env bash
# Loopback HTTP benchmark: nginx serving static files, reached directly and through two relays with
# mutual TLS between them (the VAN routers with HTTP and with TCP services, an nginx pair, an HAProxy
# pair), side by side in one run.
#
#   bash bench/http.sh
#
# Paths (all on 127.0.0.1; "origin" is an nginx serving a 1 KiB and a 64 KiB file):
#   direct        client -> origin
#   van-http      client -> router A listener (protocol http) -> mTLS link -> router B connector
#                 (protocol http) -> origin
#   van-tcp       the same two routers, a second listener/connector pair with protocol tcp
#   nginx-pair    client -> nginx (proxy_pass https, client certificate, upstream keep-alive) -> mTLS
#                 -> nginx (ssl_verify_client on, upstream keep-alive) -> origin
#   haproxy-pair  client -> HAProxy (mode http, server ssl verify required, http-reuse always) -> mTLS
#                 -> HAProxy (mode http, bind ssl verify required) -> origin
#
# Loads per path and repetition (as in shared/reference/baselines.md, "HTTP through two relays"):
#   wrk -t2 -c32 -d${BENCH_SECONDS}s --latency   1 KiB file, keep-alive: req/s, p50, p99
#   the same on the 64 KiB file                   req/s
#   ab -n 5000 -c 16 (no -k)                       1 KiB, a new connection per request: req/s
#   h2load -c8 -m16 -n N (h2c prior knowledge)     1 KiB: req/s
# plus the relays' CPU per request (1 KiB wrk, ab, h2load) and the routers' VmRSS after each van path.
#
# Environment (all optional):
#   BENCH_SECONDS=10      wrk duration per run (-d)
#   BENCH_REPS=3          repetitions; each figure is the median over them
#   BENCH_AB_REQS=5000    ab requests (-n)
#   BENCH_H2_REQS=...     h2load requests (-n); default 20000 x BENCH_SECONDS
#   BENCH_KEY=rsa         rsa (RSA-2048) or ec (ECDSA P-256) certificates
#   BENCH_NGINX_KEEPALIVE=64   idle upstream connections each nginx of the pair keeps (`keepalive`)
#   BENCH_PATHS="direct van-http van-tcp nginx-pair haproxy-pair"   which paths to run
#   BENCH_IDLE_WAIT=30    seconds in all to wait for an idle machine (checked before each path)
#   BENCH_IDLE_BUSY=10    CPU busy percentage (both cores) that counts as idle
#   BENCH_BUILD=1         0 skips `cargo build --release -p van-router`
#   BENCH_VAN_BIN=...     router binary (default ${CARGO_TARGET_DIR:-target}/release/van-router)
#
# Progress goes to stderr (and bench/out/http-run.log); the Markdown report goes to stdout and
# bench/out/http-results.md; every tool's raw output and results.tsv go to bench/out/http-raw/;
# configurations, certificates, document root and process logs to bench/out/http-work/.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
RAW=$OUT/http-raw
WORK=$OUT/http-work
LOG_TAG=http-bench
LOG_FILE=$OUT/http-run.log
REPORT=$OUT/http-results.md
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

SECS=${BENCH_SECONDS:-10}
REPS=${BENCH_REPS:-3}
AB_REQS=${BENCH_AB_REQS:-5000}
H2_REQS=${BENCH_H2_REQS:-}
KEY_TYPE=${BENCH_KEY:-rsa}
NGINX_KEEPALIVE=${BENCH_NGINX_KEEPALIVE:-64}
ALL_PATHS=(direct van-http van-tcp nginx-pair haproxy-pair)
PATHS_WANTED=${BENCH_PATHS:-${ALL_PATHS[*]}}
IDLE_WAIT=${BENCH_IDLE_WAIT:-30}
IDLE_BUSY=${BENCH_IDLE_BUSY:-10}
BUILD=${BENCH_BUILD:-1}
VAN_BIN=${BENCH_VAN_BIN:-$BIN/van-router}

# The loads, fixed so that the figures can be set beside baselines.md.
WRK_ARGS=(-t2 -c32)
AB_CONC=16
H2_ARGS=(-c8 -m16)

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_uint "$SECS" || die "BENCH_SECONDS must be a whole number (got '$SECS')"
# About as long as the wrk runs at 20,000 req/s.
[ -n "$H2_REQS" ] || H2_REQS=$((20000 * SECS))
for v in SECS REPS AB_REQS H2_REQS IDLE_WAIT IDLE_BUSY NGINX_KEEPALIVE; do
	is_uint "${!v}" || die "$v must be a whole number (got '${!v}')"
done
((SECS > 0 && REPS > 0 && AB_REQS > 0 && H2_REQS > 0)) || die "BENCH_SECONDS, BENCH_REPS and the request counts must be positive"

# ---------------------------------------------------------------- results and paths
: >"$RAW/results.tsv"
: >"$RAW/notes.tsv"
: >"$RAW/meta.tsv"

declare -A STATUS REASON MIDS URL1K URL64K URLH2 H2_REASON
for p in "${ALL_PATHS[@]}"; do
	STATUS[$p]=ok
	REASON[$p]=
	MIDS[$p]=
	H2_REASON[$p]=
done

# ---------------------------------------------------------------- tools
# ab and h2load keep few sockets, but nginx and HAProxy size their tables from the limit.
ulimit -n "$(ulimit -Hn | sed 's/unlimited/65536/')" 2>/dev/null || true

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v ab >/dev/null || need+=(apache2-utils)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v openssl >/dev/null || need+=(openssl)
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)
install_missing "$OUT/http-apt.log" "${need[@]}"
NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
HAPROXY=$(command -v haproxy || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true)
for t in wrk ab h2load openssl curl; do
	command -v "$t" >/dev/null || die "$t is missing"
done
# nginx is the origin of every path.
[ -n "$NGINX" ] || die "nginx is missing"
[ -n "$HAPROXY" ] || mark_failed haproxy-pair "haproxy is not installed"
curl -V | grep -qw HTTP2 || log "warning: curl without HTTP/2: the h2c check before each path is skipped"
for p in "${ALL_PATHS[@]}"; do
	case " $PATHS_WANTED " in *" $p "*) ;; *) mark_skipped "$p" "not in BENCH_PATHS" ;; esac
done
for p in $PATHS_WANTED; do
	case " ${ALL_PATHS[*]} " in *" $p "*) ;; *) die "unknown path '$p' in BENCH_PATHS (known: ${ALL_PATHS[*]})" ;; esac
done
van_wanted() { ok van-http || ok van-tcp; }

# ---------------------------------------------------------------- build
VAN_BUILD_ERROR=
if [ "$BUILD" = 1 ] && van_wanted; then
	log "building: cargo build --release -p van-router (log: bench/out/http-build.log)"
	if ! (cd "$ROOT" && CARGO_INCREMENTAL=0 cargo build --release -p van-router) >"$OUT/http-build.log" 2>&1; then
		VAN_BUILD_ERROR="cargo build --release -p van-router failed (see bench/out/http-build.log)"
		log "$VAN_BUILD_ERROR"
	fi
fi
check_van_bin

# ---------------------------------------------------------------- certificates
# make_certs (bench/lib.sh), plus a-full.pem and b-full.pem: HAProxy wants the certificate and its
# key in one file.
make_http_certs() {
	local d=$WORK/certs n
	make_certs || return 1
	for n in a b; do
		cat "$d/$n.pem" "$d/$n.key" >"$d/$n-full.pem" || return 1
	done
}
case $KEY_TYPE in rsa) KEY_DESC="RSA-2048" ;; ec) KEY_DESC="ECDSA P-256" ;; *) die "BENCH_KEY must be rsa or ec" ;; esac
log "generating a CA and $KEY_DESC certificates"
make_http_certs >"$WORK/certs.log" 2>&1 || die "openssl failed (see bench/out/http-work/certs.log)"
CERTS=$WORK/certs

# ---------------------------------------------------------------- machine
nginx_version=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
meta_machine
meta reps "$REPS"
meta seconds "$SECS"
meta key_type "$KEY_DESC"
meta nginx_keepalive "$NGINX_KEEPALIVE"
tools="$nginx_version"
[ -n "$HAPROXY" ] && tools+=", $("$HAPROXY" -v 2>&1 | head -1 | awk '{ print $1, $3 }')"
tools+=", wrk $(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
tools+=", ab $(ab -V 2>&1 | head -1 | awk '{ print $5 }' | tr -d ,)"
tools+=", $(h2load --version 2>&1 | head -1)"
tools+=", $(openssl version | awk '{ print $1, $2 }')"
meta tools "$tools"

# ---------------------------------------------------------------- nginx (origin and pair)
# Every nginx is its own master process in the foreground with its own prefix, pid file, logs and
# temp paths, so a system nginx (or its configuration) plays no part.
NGINX_USER=
# Workers of a master started as root would run as www-data; root keeps them able to read the
# document root wherever the checkout lives.
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"

# nginx_conf NAME HTTP_BLOCK: writes $WORK/nginx-NAME/nginx.conf around the http{} body given.
nginx_conf() {
	local name=$1 body=$2 dir=$WORK/nginx-$1
	mkdir -p "$dir/logs" "$dir/temp"
	cat >"$dir/nginx.conf" <<-EOF
		# nginx $name (bench/http.sh)
		$NGINX_USER
		worker_processes 1;
		pid $dir/nginx.pid;
		error_log $dir/logs/error.log warn;
		events {
		    worker_connections 8192;
		}
		http {
		    access_log off;
		    default_type application/octet-stream;
		    client_body_temp_path $dir/temp/client_body;
		    proxy_temp_path $dir/temp/proxy;
		    fastcgi_temp_path $dir/temp/fastcgi;
		    uwsgi_temp_path $dir/temp/uwsgi;
		    scgi_temp_path $dir/temp/scgi;
		    sendfile on;
		    tcp_nopush on;
		    tcp_nodelay on;
		    # The default (1000) would make wrk and the upstream pools reconnect every 1000
		    # requests; HAProxy and the routers have no such limit.
		    keepalive_requests 1000000;
		    keepalive_timeout 75s;
		$body
		}
	EOF
}

# start_nginx NAME: checks and starts nginx NAME; sets LAST_PID (the master), or NGINX_ERROR.
NGINX_ERROR=
start_nginx() {
	local dir=$WORK/nginx-$1 out
	if ! out=$("$NGINX" -t -q -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" 2>&1); then
		NGINX_ERROR="nginx-$1 configuration rejected: $(tail -1 <<<"$out")"
		return 1
	fi
	start_bg "nginx-$1" "$NGINX" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
}

# Proxy buffers big enough for the 64 KiB file, and no spilling to a temp file when the client is
# slower than the upstream: a relay should pass bytes on, not write them to disk.
NGINX_PROXY_COMMON='            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;'

# curl_check URL [curl args...]: "CODE HTTPVERSION SIZE" of one GET.
curl_check() {
	local url=$1
	shift
	curl -s -o /dev/null --max-time 5 -w '%{http_code} %{http_version} %{size_download}' "$@" "$url" 2>/dev/null
}
# wait_http URL SIZE SECONDS: until a GET of URL answers 200 with SIZE bytes; LAST_CHECK holds the
# last answer.
LAST_CHECK=
wait_http() {
	local url=$1 size=$2 end=$((SECONDS + $3))
	while :; do
		LAST_CHECK=$(curl_check "$url")
		case $LAST_CHECK in "200 "*" $size") return 0 ;; esac
		((SECONDS < end)) || return 1
		sleep 0.2
	done
}
# check_path PATH: the three URLs of PATH answer as they should; records why h2 cannot be measured.
check_path() {
	local p=$1 r
	if ! wait_http "${URL1K[$p]}" 1024 15; then
		mark_failed "$p" "GET ${URL1K[$p]} did not answer 200 with 1024 bytes within 15 s (last: '${LAST_CHECK:-no answer}')"
		return 1
	fi
	if ! wait_http "${URL64K[$p]}" 65536 5; then
		mark_failed "$p" "GET ${URL64K[$p]} did not answer 200 with 65536 bytes (last: '${LAST_CHECK:-no answer}')"
		return 1
	fi
	if [ -z "${URLH2[$p]:-}" ]; then
		[ -n "${H2_REASON[$p]}" ] || H2_REASON[$p]="no h2c entry point"
	elif curl -V | grep -qw HTTP2; then
		r=$(curl_check "${URLH2[$p]}" --http2-prior-knowledge)
		case $r in
		"200 2 1024") ;;
		*) H2_REASON[$p]="h2c prior knowledge not accepted (curl --http2-prior-knowledge: '${r:-no answer}')" ;;
		esac
	fi
	[ -z "${H2_REASON[$p]}" ] || note "$p" "h2 not measured: ${H2_REASON[$p]}"
	log "$p: ready"
}

# The origin: one HTTP/1.1 port (for the clients of direct and for every relay) and one h2c port
# (nginx 1.22's `listen ... http2` without ssl speaks only prior-knowledge HTTP/2, no HTTP/1.1).
start_origin() {
	mkdir -p "$WORK/www"
	head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
	head -c 65536 /dev/urandom >"$WORK/www/64k.bin"
	chmod -R a+rX "$WORK/www"
	free_port ORIGIN_H1
	free_port ORIGIN_H2
	nginx_conf origin "    server {
        listen 127.0.0.1:$ORIGIN_H1 backlog=4096;
        listen 127.0.0.1:$ORIGIN_H2 http2 backlog=4096;
        root $WORK/www;
        location / {
        }
    }"
	start_nginx origin || die "$NGINX_ERROR"
	ORIGIN_PID=$LAST_PID
	if ! wait_listen "$ORIGIN_H1" 5 || ! wait_listen "$ORIGIN_H2" 5; then
		die "origin nginx did not start (see bench/out/http-work/nginx-origin.log and nginx-origin/logs/)"
	fi
	URL1K[direct]=http://127.0.0.1:$ORIGIN_H1/1k.bin
	URL64K[direct]=http://127.0.0.1:$ORIGIN_H1/64k.bin
	URLH2[direct]=http://127.0.0.1:$ORIGIN_H2/1k.bin
	wait_http "${URL1K[direct]}" 1024 5 || die "origin nginx does not serve 1k.bin (got '$LAST_CHECK')"
	log "origin nginx: http://127.0.0.1:$ORIGIN_H1 (HTTP/1.1), :$ORIGIN_H2 (h2c), pid $ORIGIN_PID"
}

start_nginx_pair() {
	local front front_h2 inner fpid ipid
	free_port front
	free_port front_h2
	free_port inner
	# Inner: TLS server requiring a client certificate from our CA, proxying to the origin over
	# kept-open connections.
	nginx_conf inner "    upstream origin {
        server 127.0.0.1:$ORIGIN_H1;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$inner ssl backlog=4096;
        ssl_protocols TLSv1.3;
        ssl_certificate $CERTS/b.pem;
        ssl_certificate_key $CERTS/b.key;
        ssl_client_certificate $CERTS/ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        location / {
            proxy_pass http://origin;
$NGINX_PROXY_COMMON
        }
    }"
	# Front: HTTP/1.1 and h2c for the clients; TLS 1.3 with a client certificate to the inner one,
	# verifying its certificate (name localhost: nginx checks DNS names, not IP addresses).
	nginx_conf front "    upstream inner {
        server 127.0.0.1:$inner;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$front backlog=4096;
        listen 127.0.0.1:$front_h2 http2 backlog=4096;
        location / {
            proxy_pass https://inner;
$NGINX_PROXY_COMMON
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate $CERTS/a.pem;
            proxy_ssl_certificate_key $CERTS/a.key;
            proxy_ssl_trusted_certificate $CERTS/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }
    }"
	if ! start_nginx inner; then
		mark_failed nginx-pair "$NGINX_ERROR"
		return
	fi
	ipid=$LAST_PID
	if ! start_nginx front; then
		mark_failed nginx-pair "$NGINX_ERROR"
		stop_pid "$ipid"
		return
	fi
	fpid=$LAST_PID
	if ! wait_listen "$front" 5 || ! wait_listen "$inner" 5; then
		mark_failed nginx-pair "nginx did not start (see bench/out/http-work/nginx-{front,inner}*)"
		stop_pid "$fpid" "$ipid"
		return
	fi
	MIDS[nginx-pair]="$fpid $ipid"
	URL1K[nginx-pair]=http://127.0.0.1:$front/1k.bin
	URL64K[nginx-pair]=http://127.0.0.1:$front/64k.bin
	URLH2[nginx-pair]=http://127.0.0.1:$front_h2/1k.bin
	check_path nginx-pair || stop_pid "$fpid" "$ipid"
}

# ---------------------------------------------------------------- haproxy pair
start_haproxy_pair() {
	local front front_h2 inner out n fpid ipid
	free_port front
	free_port front_h2
	free_port inner
	# One thread each, like the single nginx worker; TLS 1.3 both ways.
	local global="global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s"
	# Front: HTTP/1.1 on one bind, h2c (prior knowledge) on another; to the inner one over TLS with
	# a client certificate, verifying the inner's certificate and name, connections shared.
	cat >"$WORK/haproxy-front.cfg" <<-EOF
		$global
		frontend fe
		    bind 127.0.0.1:$front
		    bind 127.0.0.1:$front_h2 proto h2
		    default_backend be
		backend be
		    http-reuse always
		    server inner 127.0.0.1:$inner ssl crt $CERTS/a-full.pem ca-file $CERTS/ca.pem verify required verifyhost localhost sni str(localhost)
	EOF
	# Inner: TLS server requiring a client certificate from our CA.
	cat >"$WORK/haproxy-inner.cfg" <<-EOF
		$global
		frontend fe
		    bind 127.0.0.1:$inner ssl crt $CERTS/b-full.pem ca-file $CERTS/ca.pem verify required
		    default_backend be
		backend be
		    http-reuse always
		    server origin 127.0.0.1:$ORIGIN_H1
	EOF
	for n in front inner; do
		if ! out=$("$HAPROXY" -c -q -f "$WORK/haproxy-$n.cfg" 2>&1); then
			mark_failed haproxy-pair "haproxy-$n.cfg rejected: $(tail -1 <<<"$out")"
			return
		fi
	done
	start_bg haproxy-inner "$HAPROXY" -db -f "$WORK/haproxy-inner.cfg"
	ipid=$LAST_PID
	start_bg haproxy-front "$HAPROXY" -db -f "$WORK/haproxy-front.cfg"
	fpid=$LAST_PID
	if ! wait_listen "$front" 5 || ! wait_listen "$inner" 5; then
		mark_failed haproxy-pair "haproxy did not start (see bench/out/http-work/haproxy-*.log)"
		stop_pid "$fpid" "$ipid"
		return
	fi
	MIDS[haproxy-pair]="$fpid $ipid"
	URL1K[haproxy-pair]=http://127.0.0.1:$front/1k.bin
	URL64K[haproxy-pair]=http://127.0.0.1:$front/64k.bin
	URLH2[haproxy-pair]=http://127.0.0.1:$front_h2/1k.bin
	check_path haproxy-pair || stop_pid "$fpid" "$ipid"
}

# ---------------------------------------------------------------- van routers
# One pair of routers for both van paths: router A has the listeners, router B the connectors.
# Keys: bench-http (protocol http, HTTP/1.1 and h2c from clients, HTTP/1.1 to the origin),
# bench-tcp (protocol tcp to the origin's HTTP/1.1 port) and bench-tcp-h2 (protocol tcp to the
# origin's h2c port: a tcp service carries bytes, so its h2 load needs an h2c target).
VAN_A=
VAN_B=
start_van() {
	local p
	if [ -n "$VAN_BUILD_ERROR" ]; then
		for p in van-http van-tcp; do ok "$p" && mark_failed "$p" "$VAN_BUILD_ERROR"; done
		return
	fi
	local l_http l_tcp l_tcp_h2
	free_port l_http
	free_port l_tcp
	free_port l_tcp_h2
	if ! start_van_pair \
		"{name: http, host: 127.0.0.1, port: $l_http, routing_key: bench-http, protocol: http}" \
		"{name: tcp, host: 127.0.0.1, port: $l_tcp, routing_key: bench-tcp, protocol: tcp}" \
		"{name: tcp-h2, host: 127.0.0.1, port: $l_tcp_h2, routing_key: bench-tcp-h2, protocol: tcp}" \
		-- \
		"{name: http, host: 127.0.0.1, port: $ORIGIN_H1, routing_key: bench-http, protocol: http}" \
		"{name: tcp, host: 127.0.0.1, port: $ORIGIN_H1, routing_key: bench-tcp, protocol: tcp}" \
		"{name: tcp-h2, host: 127.0.0.1, port: $ORIGIN_H2, routing_key: bench-tcp-h2, protocol: tcp}"; then
		for p in van-http van-tcp; do ok "$p" && mark_failed "$p" "$VAN_ERROR"; done
		return
	fi
	for p in van-http van-tcp; do MIDS[$p]="$VAN_A $VAN_B"; done
	URL1K[van-http]=http://127.0.0.1:$l_http/1k.bin
	URL64K[van-http]=http://127.0.0.1:$l_http/64k.bin
	URLH2[van-http]=http://127.0.0.1:$l_http/1k.bin
	URL1K[van-tcp]=http://127.0.0.1:$l_tcp/1k.bin
	URL64K[van-tcp]=http://127.0.0.1:$l_tcp/64k.bin
	URLH2[van-tcp]=http://127.0.0.1:$l_tcp_h2/1k.bin
	# The http listener answers 503 until B's connector is reachable and the tcp listeners refuse
	# connections until then: check_path polls until the file comes through (15 s at most).
	for p in van-http van-tcp; do
		ok "$p" && check_path "$p"
	done
	if ! ok van-http && ! ok van-tcp; then
		stop_pid "$VAN_A" "$VAN_B"
	fi
}

start_origin
ok direct && check_path direct
van_wanted && start_van
ok nginx-pair && start_nginx_pair
ok haproxy-pair && start_haproxy_pair

# ---------------------------------------------------------------- measurements
# relay_pids PATH: the relay processes of PATH with their children (the nginx workers).
relay_pids() {
	local pid
	for pid in ${MIDS[$1]}; do
		echo "$pid"
		pgrep -P "$pid" 2>/dev/null
	done
}

# Around each measured load: CPU ticks of the relays before (cpu_begin PATH) and the ticks used
# since, printed by cpu_end PATH REP WHAT (nothing for a path without relays).
CPU_PIDS=
CPU_T0=
cpu_begin() {
	CPU_PIDS=$(relay_pids "$1" | tr '\n' ' ')
	CPU_T0=
	[ -n "$CPU_PIDS" ] || return 0
	# shellcheck disable=SC2086 # a list of pids
	CPU_T0=$(cpu_ticks $CPU_PIDS)
}
cpu_end() {
	local path=$1 rep=$2 what=$3 t1
	[ -n "$CPU_PIDS" ] && [ -n "$CPU_T0" ] || return 0
	# shellcheck disable=SC2086
	if ! t1=$(cpu_ticks $CPU_PIDS); then
		note "$path" "$what (rep $rep): a relay process went away; no CPU figure"
		return 0
	fi
	echo "$((t1 - CPU_T0))"
}

# judge PATH REP WHAT DONE BAD: whether a run's figures count. Any failed or non-2xx request is
# noted; more than 1 % of them (a relay answering errors fast would look fast) drops the figures.
judge() {
	local path=$1 rep=$2 what=$3 done=$4 bad=$5
	if ! ((done > 0)); then
		note "$path" "$what (rep $rep): no request completed; figure dropped"
		return 1
	fi
	((bad == 0)) && return 0
	if ((bad * 100 > done)); then
		note "$path" "$what (rep $rep): $bad of $done requests failed or were not 2xx; figure dropped"
		return 1
	fi
	note "$path" "$what (rep $rep): $bad of $done requests failed or were not 2xx (kept: ≤ 1 %)"
	return 0
}

# to_ms VALUE: wrk's latency (e.g. 812.00us, 1.20ms, 1.02s) in ms.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}

# run_wrk PATH REP SIZE: wrk on the 1k or 64k file, keep-alive.
run_wrk() {
	local path=$1 rep=$2 size=$3 url f rc reqs rps bad p50 p99 ticks=
	if [ "$size" = 1k ]; then url=${URL1K[$path]}; else url=${URL64K[$path]}; fi
	f=$RAW/wrk-$path-$size-r$rep.txt
	cpu_begin "$path"
	timeout --foreground $((SECS + 30)) wrk "${WRK_ARGS[@]}" -d"${SECS}s" --latency "$url" >"$f" 2>&1
	rc=$?
	[ "$size" = 1k ] && ticks=$(cpu_end "$path" "$rep" "wrk 1k")
	reqs=$(awk '/ requests in / { print $1; exit }' "$f")
	rps=$(awk '/^Requests\/sec:/ { print $2; exit }' "$f")
	bad=$(awk '/Non-2xx or 3xx responses:/ { b += $NF }
		/Socket errors:/ { gsub(/,/, ""); b += $4 + $6 + $8 + $10 }
		END { print b + 0 }' "$f")
	if [ "$rc" != 0 ] || [ -z "$reqs" ] || [ -z "$rps" ]; then
		note "$path" "wrk $size (rep $rep) failed (exit $rc): $(tail -c 300 "$f")"
		return 1
	fi
	judge "$path" "$rep" "wrk $size" "$reqs" "$bad" || return 1
	if [ "$size" = 1k ]; then
		p50=$(to_ms "$(awk '$1 == "50%" { print $2; exit }' "$f")")
		p99=$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$f")")
		emit "$rep" "$path" ka1k_rps "$rps"
		emit "$rep" "$path" ka1k_p50_ms "$p50"
		emit "$rep" "$path" ka1k_p99_ms "$p99"
		if [ -n "$ticks" ]; then
			emit "$rep" "$path" cpu_ka1k_us "$(fcalc "$ticks / $CLK_TCK * 1e6 / $reqs")"
		fi
		log "$path: wrk 1 KiB $rps req/s, p50 $p50 ms, p99 $p99 ms${ticks:+, relays $(fcalc "$ticks / $CLK_TCK") CPU-s}"
	else
		emit "$rep" "$path" ka64k_rps "$rps"
		log "$path: wrk 64 KiB $rps req/s"
	fi
}

# run_ab PATH REP: ab without keep-alive, a new client connection per request.
run_ab() {
	local path=$1 rep=$2 f rc reqs rps failed non2xx ticks
	f=$RAW/ab-$path-r$rep.txt
	cpu_begin "$path"
	timeout --foreground 300 ab -q -n "$AB_REQS" -c "$AB_CONC" "${URL1K[$path]}" >"$f" 2>&1
	rc=$?
	ticks=$(cpu_end "$path" "$rep" ab)
	reqs=$(awk -F: '/^Complete requests:/ { print $2 + 0; exit }' "$f")
	rps=$(awk '/^Requests per second:/ { print $4; exit }' "$f")
	failed=$(awk -F: '/^Failed requests:/ { print $2 + 0; exit }' "$f")
	non2xx=$(awk -F: '/^Non-2xx responses:/ { print $2 + 0; exit }' "$f")
	if [ "$rc" != 0 ] || [ -z "$reqs" ] || [ -z "$rps" ]; then
		note "$path" "ab (rep $rep) failed (exit $rc): $(tail -c 300 "$f")"
		return 1
	fi
	judge "$path" "$rep" ab "$reqs" $((${failed:-0} + ${non2xx:-0})) || return 1
	emit "$rep" "$path" nc_rps "$rps"
	[ -n "$ticks" ] && emit "$rep" "$path" cpu_nc_us "$(fcalc "$ticks / $CLK_TCK * 1e6 / $reqs")"
	log "$path: ab (new connection per request) $rps req/s${ticks:+, relays $(fcalc "$ticks / $CLK_TCK") CPU-s}"
}

# run_h2load PATH REP: h2load with h2c prior knowledge (its default for http:// URIs).
run_h2load() {
	local path=$1 rep=$2 f rc rps ok2 total non2xx ticks
	f=$RAW/h2load-$path-r$rep.txt
	cpu_begin "$path"
	timeout --foreground 300 h2load "${H2_ARGS[@]}" -n "$H2_REQS" "${URLH2[$path]}" >"$f" 2>&1
	rc=$?
	ticks=$(cpu_end "$path" "$rep" h2load)
	rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4; exit }' "$f")
	total=$(awk '/^requests:/ { print $2; exit }' "$f")
	ok2=$(awk '/^status codes:/ { print $3; exit }' "$f")
	if [ "$rc" != 0 ] || [ -z "$rps" ] || [ -z "$total" ] || [ -z "$ok2" ]; then
		note "$path" "h2load (rep $rep) failed (exit $rc): $(tail -c 300 "$f")"
		return 1
	fi
	if ! grep -q '^Application protocol: h2c' "$f"; then
		note "$path" "h2load (rep $rep): HTTP/2 was not spoken ($(grep -m1 '^Application protocol' "$f")); figure dropped"
		return 1
	fi
	non2xx=$((total - ok2))
	judge "$path" "$rep" h2load "$total" "$non2xx" || return 1
	emit "$rep" "$path" h2_rps "$rps"
	[ -n "$ticks" ] && emit "$rep" "$path" cpu_h2_us "$(fcalc "$ticks / $CLK_TCK * 1e6 / $ok2")"
	log "$path: h2load $rps req/s${ticks:+, relays $(fcalc "$ticks / $CLK_TCK") CPU-s}"
}

# measure_path PATH REP: the loads of one repetition (run_reps calls it), up to a relay that exits.
measure_path() {
	local path=$1 rep=$2
	# Warm-up (not measured): the relays open their pooled connections, TLS sessions settle.
	timeout --foreground 30 wrk "${WRK_ARGS[@]}" -d1s "${URL1K[$path]}" >"$RAW/warmup-$path-r$rep.txt" 2>&1
	run_wrk "$path" "$rep" 1k
	mids_alive "$path" || return
	sleep 1
	run_wrk "$path" "$rep" 64k
	mids_alive "$path" || return
	sleep 1
	run_ab "$path" "$rep"
	mids_alive "$path" || return
	if [ -z "${H2_REASON[$path]}" ]; then
		sleep 1
		run_h2load "$path" "$rep"
		mids_alive "$path" || return
	fi
	case $path in van-*)
		sleep 1
		emit "$rep" "$path" rss_a_kib "$(rss_kib "$VAN_A")"
		emit "$rep" "$path" rss_b_kib "$(rss_kib "$VAN_B")"
		;;
	esac
}
run_reps measure_path
for p in "${ALL_PATHS[@]}"; do
	printf '%s\t%s\t%s\t%s\n' "$p" "${STATUS[$p]}" "${REASON[$p]}" "${H2_REASON[$p]}" >>"$RAW/status.tsv"
done
cp "$WORK"/*.yaml "$WORK"/*.cfg "$RAW/" 2>/dev/null
for n in origin front inner; do
	[ -f "$WORK/nginx-$n/nginx.conf" ] && cp "$WORK/nginx-$n/nginx.conf" "$RAW/nginx-$n.conf"
done

# ---------------------------------------------------------------- report
# Medians (and min, max, count) of every path and metric over the repetitions.
declare -A MED MIN MAX CNT
while IFS=$'\t' read -r p m med lo hi n; do
	MED[$p.$m]=$med
	MIN[$p.$m]=$lo
	MAX[$p.$m]=$hi
	CNT[$p.$m]=$n
done < <(sort -t$'\t' -k2,2 -k3,3 -k4,4g "$RAW/results.tsv" | awk -F'\t' '
	{ k = $2 "\t" $3; v[k, ++n[k]] = $4; if (!(k in seen)) { seen[k] = 1; order[++K] = k } }
	END {
		for (i = 1; i <= K; i++) {
			k = order[i]; c = n[k]
			med = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2
			printf "%s\t%.6g\t%.6g\t%.6g\t%d\n", k, med, v[k, 1], v[k, c], c
		}
	}')

# fmt_int N: 12,345 (or — when empty).
fmt_int() {
	[ -n "${1:-}" ] || {
		echo "—"
		return
	}
	awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); o = ""
		while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
		print s o }'
}
fmt_dec() { # fmt_dec N DECIMALS
	if [ -n "${1:-}" ]; then awk -v n="$1" -v d="$2" 'BEGIN { printf "%.*f\n", d, n }'; else echo "—"; fi
}
val() { echo "${MED[$1.$2]:-}"; }

# The table's h2 cell: the figure, or — with the reason.
h2_cell() {
	local p=$1 v
	v=$(val "$p" h2_rps)
	if [ -n "$v" ]; then
		fmt_int "$v"
	elif [ -n "${H2_REASON[$p]}" ]; then
		echo "— (${H2_REASON[$p]})"
	else
		echo "— (failed, see notes)"
	fi
}

render() {
	local p row a b n
	echo "# HTTP through two relays: van-router against nginx and HAProxy pairs (loopback)"
	echo
	awk -F'\t' '
		$1 == "date" { d = $2 } $1 == "cpu_model" { c = $2 } $1 == "nproc" { np = $2 }
		$1 == "kernel" { k = $2 } $1 == "os" { os = $2 } $1 == "git_rev" { g = $2 }
		$1 == "tools" { t = $2 } $1 == "key_type" { kt = $2 } $1 == "reps" { r = $2 } $1 == "seconds" { s = $2 }
		END {
			printf "%s; %s, %s vCPU; %s, kernel %s; van-router at %s.\n\n", d, c, np, os, k, g
			printf "Tools: %s. Certificates: %s, one CA, TLS 1.3 on every mutual-TLS hop.\n\n", t, kt
			printf "Repetitions: %s; each figure is their median. `wrk -t2 -c32 -d%ss --latency` (keep-alive), ", r, s
		}' "$RAW/meta.tsv"
	echo "\`ab -n $AB_REQS -c $AB_CONC\` without keep-alive (a new client connection per request),"
	echo "\`h2load -c8 -m16 -n $H2_REQS\` with h2c prior knowledge; the 64 KiB figure is wrk on the 64 KiB file."
	echo "Latency in ms. Relay CPU: utime+stime of all relay processes of the path (not the origin,"
	echo "not the load generator) over each load run, divided by the requests completed. Router RSS:"
	echo "VmRSS of router A / router B after the path's runs (the two van paths share the routers)."
	echo "One worker or thread per relay where configurable (nginx \`worker_processes 1\`, HAProxy"
	echo "\`nbthread 1\`); the routers run their default tokio runtime. nginx pair: upstream \`keepalive $NGINX_KEEPALIVE\`."
	echo
	echo "| path | 1 KiB keep-alive req/s | p50 / p99 ms | 64 KiB req/s | new conn req/s | h2 req/s | relay CPU µs/req (1 KiB / new conn / h2) | router RSS MiB |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
	for p in "${ALL_PATHS[@]}"; do
		case ${STATUS[$p]} in
		skipped) continue ;;
		failed)
			if [ -z "$(val "$p" ka1k_rps)$(val "$p" nc_rps)$(val "$p" h2_rps)" ]; then
				echo "| $p | failed: ${REASON[$p]} | | | | | | |"
				continue
			fi
			;;
		esac
		row="| $p | $(fmt_int "$(val "$p" ka1k_rps)") | $(fmt_dec "$(val "$p" ka1k_p50_ms)" 2) / $(fmt_dec "$(val "$p" ka1k_p99_ms)" 2)"
		row+=" | $(fmt_int "$(val "$p" ka64k_rps)") | $(fmt_int "$(val "$p" nc_rps)") | $(h2_cell "$p")"
		if [ -n "${MIDS[$p]}" ]; then
			row+=" | $(fmt_int "$(val "$p" cpu_ka1k_us)") / $(fmt_int "$(val "$p" cpu_nc_us)") / $(fmt_int "$(val "$p" cpu_h2_us)")"
		else
			row+=" | —"
		fi
		a=$(val "$p" rss_a_kib)
		b=$(val "$p" rss_b_kib)
		if [ -n "$a" ] && [ -n "$b" ]; then
			row+=" | $(fmt_dec "$(fcalc "$a / 1024")" 1) / $(fmt_dec "$(fcalc "$b / 1024")" 1)"
		else
			row+=" | —"
		fi
		echo "$row |"
	done
	echo
	render_ratios
	echo
	echo "## Spread over the repetitions (min – max)"
	echo
	echo "| path | 1 KiB keep-alive req/s | p99 ms | 64 KiB req/s | new conn req/s | h2 req/s |"
	echo "| --- | --- | --- | --- | --- | --- |"
	for p in "${ALL_PATHS[@]}"; do
		[ "${STATUS[$p]}" = skipped ] && continue
		row="| $p"
		for n in ka1k_rps ka1k_p99_ms ka64k_rps nc_rps h2_rps; do
			if [ -n "${MED[$p.$n]:-}" ]; then
				if [ "$n" = ka1k_p99_ms ]; then
					row+=" | $(fmt_dec "${MIN[$p.$n]}" 2) – $(fmt_dec "${MAX[$p.$n]}" 2) (${CNT[$p.$n]})"
				else
					row+=" | $(fmt_int "${MIN[$p.$n]}") – $(fmt_int "${MAX[$p.$n]}") (${CNT[$p.$n]})"
				fi
			else
				row+=" | —"
			fi
		done
		echo "$row |"
	done
	echo
	echo "(n) is the number of repetitions that gave the figure."
	echo
	echo "Background CPU busy before each path (\`!\` = the machine was not idle, measured anyway):"
	awk -F'\t' '$1 == "idle_busy" { print $2 }' "$RAW/meta.tsv"
	if [ -s "$RAW/notes.tsv" ] || grep -q '	failed	' "$RAW/status.tsv"; then
		echo
		echo "## Notes"
		echo
		awk -F'\t' '$2 == "failed" { printf "- %s failed: %s\n", $1, $3 }' "$RAW/status.tsv"
		awk -F'\t' '{ printf "- %s: %s\n", $1, $2 }' "$RAW/notes.tsv"
	fi
}

# ratio_row LABEL METRIC HIGHER_IS_BETTER(1|0) DECIMALS: van-http against the better of the two
# pairs on that figure, as a ratio that reads ≥ 1.0× when van-http is at least as good.
ratio_row() {
	local label=$1 m=$2 hib=$3 dec=$4 v best='' who='' p x r ge fv fb
	v=$(val van-http "$m")
	for p in nginx-pair haproxy-pair; do
		x=$(val "$p" "$m")
		[ -n "$x" ] || continue
		if [ -z "$best" ] || awk -v x="$x" -v b="$best" -v h="$hib" 'BEGIN { exit !(h ? x > b : x < b) }'; then
			best=$x
			who=$p
		fi
	done
	if ((dec == 0)); then fv=$(fmt_int "$v") fb=$(fmt_int "$best"); else fv=$(fmt_dec "$v" "$dec") fb=$(fmt_dec "$best" "$dec"); fi
	if [ -z "$v" ] || [ -z "$best" ] || ! awk -v v="$v" -v b="$best" 'BEGIN { exit !(v > 0 && b > 0) }'; then
		echo "| $label | $fv | ${who:-—} $fb | — | — |"
		return
	fi
	if [ "$hib" = 1 ]; then r=$(fcalc "$v / $best"); else r=$(fcalc "$best / $v"); fi
	if awk -v r="$r" 'BEGIN { exit !(r >= 1.0) }'; then ge="yes"; else ge="**no**"; fi
	echo "| $label | $fv | $who $fb | $(fmt_dec "$r" 2)× | $ge |"
}
render_ratios() {
	echo "## van-http against the faster mTLS pair"
	echo
	echo "For each figure, van-http's median against the better of nginx-pair and haproxy-pair on that"
	echo "figure. The ratio is oriented so that ≥ 1.0× means van-http is at least as good (req/s: van ÷"
	echo "pair; latency and CPU per request: pair ÷ van)."
	echo
	echo "| figure | van-http | faster pair | ratio | ≥ 1.0× |"
	echo "| --- | --- | --- | --- | --- |"
	ratio_row "1 KiB keep-alive req/s" ka1k_rps 1 0
	ratio_row "1 KiB keep-alive p50 ms" ka1k_p50_ms 0 2
	ratio_row "1 KiB keep-alive p99 ms" ka1k_p99_ms 0 2
	ratio_row "64 KiB keep-alive req/s" ka64k_rps 1 0
	ratio_row "new conn req/s" nc_rps 1 0
	ratio_row "h2 req/s" h2_rps 1 0
	ratio_row "relay CPU µs/req, 1 KiB keep-alive" cpu_ka1k_us 0 0
	ratio_row "relay CPU µs/req, new conn" cpu_nc_us 0 0
	ratio_row "relay CPU µs/req, h2" cpu_h2_us 0 0
}

log "done; report in bench/out/http-results.md"
render | tee "$REPORT"
