#!/usr/bin/env bash
# Control-plane timings on this host, through the skupper CLI as a user runs it:
#   init       two sites up (CLI returns when each controller answers)
#   link       token create -> link create -> link active
#   expose     expose in east -> the service answers through west
#   restart    SIGKILL east's router -> the service answers through west again
#   withdraw   east deleted -> west no longer lists the service
# Skupper 1.x's figures for the same events are documented, not measured here: a site that
# leaves keeps its services listed elsewhere until the service-sync TTL (3 min default), and
# a router restart interrupts traffic for 1-2 minutes (skupper issue #940).
#
# Knobs: BENCH_REPS (5), BENCH_BUILD (1: cargo build --release -p skupper first).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${BENCH_REPS:-5}
if [ "${BENCH_BUILD:-1}" = 1 ]; then cargo build --release -q -p skupper; fi
SK=$PWD/target/release/skupper
HOME_DIR=$(mktemp -d /tmp/van-cp-bench.XXXXXX)
export SKUPPER_HOME=$HOME_DIR
# Local sites even where a kubeconfig would make the CLI choose Kubernetes.
export SKUPPER_PLATFORM=local
BACKEND_PID=
cleanup() {
  for ns in west east; do "$SK" -n "$ns" delete >/dev/null 2>&1 || true; done
  [ -n "$BACKEND_PID" ] && kill "$BACKEND_PID" 2>/dev/null || true
  rm -rf "$HOME_DIR"
}
trap cleanup EXIT

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
# A free port below the ephemeral range, so no outgoing connection takes it before a site binds it.
free_port() {
  python3 -c '
import random, socket
while True:
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}
# GET / at $1:$2 with bash's /dev/tcp; prints the body's first line, fails if nothing came.
get() {
  local out
  out=$(timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null) || return 1
  [[ "$out" == *"hello from east"* ]]
}
wait_for() { # wait_for <timeout s> <command...>
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out: $*" >&2; return 1; }
    sleep 0.02
  done
}
no_backend_in_west() { ! "$SK" -n west service status -o json | grep -q '"address": *"backend"'; }
router_pid() {
  python3 - "$HOME_DIR/namespaces/$1/run/supervisor.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"status\n")
data = s.recv(4096).decode()
for line in data.splitlines():
    if line.startswith("router running"):
        print([w[4:] for w in line.split() if w.startswith("pid=")][0])
PY
}

mkdir -p "$HOME_DIR/www" && echo "hello from east" > "$HOME_DIR/www/index.html"
BPORT=$(free_port)
python3 -m http.server "$BPORT" --bind 127.0.0.1 --directory "$HOME_DIR/www" >/dev/null 2>&1 &
BACKEND_PID=$!
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$BPORT" 2>/dev/null

declare -a T_INIT T_LINK T_EXPOSE T_RESTART T_WITHDRAW
for rep in $(seq 1 "$REPS"); do
  SPORT=$(free_port)
  t0=$(now)
  "$SK" -n west init --ingress-host 127.0.0.1 --ingress-bind 127.0.0.1 --listener-host 127.0.0.2 \
    --inter-router-port "$(free_port)" --edge-port "$(free_port)" --claims-port "$(free_port)" >/dev/null
  "$SK" -n east init --ingress-host 127.0.0.1 --ingress-bind 127.0.0.1 --listener-host 127.0.0.3 \
    --inter-router-port "$(free_port)" --edge-port "$(free_port)" --claims-port "$(free_port)" >/dev/null
  t1=$(now)
  "$SK" -n west token create "$HOME_DIR/t.yaml" >/dev/null
  "$SK" -n east link create "$HOME_DIR/t.yaml" --name to-west >/dev/null
  "$SK" -n east link status to-west --wait 60s >/dev/null
  t2=$(now)
  "$SK" -n east expose host 127.0.0.1 --port "$SPORT" --target-port "$BPORT" --address backend >/dev/null
  wait_for 60 get 127.0.0.2 "$SPORT"
  t3=$(now)
  kill -9 "$(router_pid east)"
  t3b=$(now)
  sleep 0.05 # let the listener at west notice (otherwise the first GET may still hit the old path)
  wait_for 120 get 127.0.0.2 "$SPORT"
  t4=$(now)
  "$SK" -n east delete >/dev/null
  t5=$(now)
  wait_for 300 no_backend_in_west
  t6=$(now)
  "$SK" -n west delete >/dev/null
  T_INIT+=("$(ms "$t0" "$t1")"); T_LINK+=("$(ms "$t1" "$t2")"); T_EXPOSE+=("$(ms "$t2" "$t3")")
  T_RESTART+=("$(ms "$t3b" "$t4")"); T_WITHDRAW+=("$(ms "$t5" "$t6")")
  echo "rep $rep: init ${T_INIT[-1]} ms, link ${T_LINK[-1]} ms, expose ${T_EXPOSE[-1]} ms, router restart ${T_RESTART[-1]} ms, withdraw ${T_WITHDRAW[-1]} ms" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
minmax() { printf '%s\n' "$@" | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }
echo
echo "Control plane, $REPS reps, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
echo
echo "| event | median ms | range ms | Skupper 1.x (documented) | ratio |"
echo "| --- | ---: | ---: | --- | ---: |"
echo "| two sites initialised | $(median "${T_INIT[@]}") | $(minmax "${T_INIT[@]}") | — | |"
echo "| token → link active | $(median "${T_LINK[@]}") | $(minmax "${T_LINK[@]}") | — | |"
echo "| expose → answers in the other site | $(median "${T_EXPOSE[@]}") | $(minmax "${T_EXPOSE[@]}") | up to 5 s (service-sync period) | $(awk -v m="$(median "${T_EXPOSE[@]}")" 'BEGIN{printf "%.3f", m/5000}') |"
echo "| router SIGKILL → answers again | $(median "${T_RESTART[@]}") | $(minmax "${T_RESTART[@]}") | 60–120 s (#940) | $(awk -v m="$(median "${T_RESTART[@]}")" 'BEGIN{printf "%.4f", m/60000}') |"
echo "| site deleted → its service withdrawn | $(median "${T_WITHDRAW[@]}") | $(minmax "${T_WITHDRAW[@]}") | up to 180 s (service-sync TTL) | $(awk -v m="$(median "${T_WITHDRAW[@]}")" 'BEGIN{printf "%.4f", m/180000}') |"
