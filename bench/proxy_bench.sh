#!/usr/bin/env bash
# Proxy overhead benchmark: the same load (kvtier-bench serve, 64 concurrent
# streams) against the same fast fake engines (kvtier-fake-openai), in one run:
#   direct      client -> decode engine                         (baseline)
#   nginx       client -> nginx -> decode engine                (1 upstream call)
#   nginx-pd    client -> nginx auth_request(prefill) -> decode (2 sequential calls)
#   kvtier      client -> kvtier-proxy -> prefill, then decode  (2 sequential calls)
# nginx-pd is the fair comparison for a PD proxy: like kvtier-proxy it waits
# for a prefill call before streaming the decode answer (it does not parse or
# rewrite JSON, so it is still a lower bound on the work).
#
# Usage: bench/proxy_bench.sh            (binaries from ./build)
#   BUILD=build-proxy KVTIER_BENCH=... NUM_PROMPTS=... REPEATS=... bench/proxy_bench.sh
# Writes bench/results/proxy_bench.json and bench/results/proxy_bench.md.
# Loopback (127.0.0.1) only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
BENCH=${KVTIER_BENCH:-$BUILD/tools/kvtier-bench}
PROXY=$BUILD/tools/kvtier-proxy
FAKE=$BUILD/tools/kvtier-fake-openai
NGINX=${NGINX:-/usr/sbin/nginx}
NUM_PROMPTS=${NUM_PROMPTS:-6000}
CONCURRENCY=${CONCURRENCY:-64}
INPUT_LEN=${INPUT_LEN:-128}
OUTPUT_LEN=${OUTPUT_LEN:-16}
REPEATS=${REPEATS:-3}
RATE=${RATE:-500}              # open-loop pass: requests/s, below saturation
RATE_PROMPTS=${RATE_PROMPTS:-2000}
THREADS=${THREADS:-1}  # kvtier-proxy threads = nginx worker_processes
OUT=${OUT:-$ROOT/bench/results}

for bin in "$BENCH" "$PROXY" "$FAKE" "$NGINX"; do
  [[ -x $bin ]] || { echo "missing $bin (build first, or set BUILD/KVTIER_BENCH)" >&2; exit 1; }
done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2; exit 1
}

PREFILL_PORT=$(free_port)
DECODE_PORT=$(free_port)
"$FAKE" --port "$PREFILL_PORT" --engine-id p0 --threads 1 >/dev/null &
PIDS+=($!)
"$FAKE" --port "$DECODE_PORT" --engine-id d0 --threads 1 >/dev/null &
PIDS+=($!)
wait_port "$PREFILL_PORT"
wait_port "$DECODE_PORT"

PROXY_PORT=$(free_port)
"$PROXY" --host 127.0.0.1 --port "$PROXY_PORT" --threads "$THREADS" \
  --prefiller-hosts 127.0.0.1 --prefiller-ports "$PREFILL_PORT" \
  --decoder-hosts 127.0.0.1 --decoder-ports "$DECODE_PORT" 2>"$TMP/proxy.log" &
PIDS+=($!)
wait_port "$PROXY_PORT"

NGINX_PORT=$(free_port)
NGINX_PD_PORT=$(free_port)
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes $THREADS;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  client_max_body_size 32m;
  upstream decode { server 127.0.0.1:$DECODE_PORT; keepalive 256; }
  upstream prefill { server 127.0.0.1:$PREFILL_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://decode;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
  server {
    listen 127.0.0.1:$NGINX_PD_PORT;
    location / {
      auth_request /prefill_leg;
      proxy_pass http://decode;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
    location = /prefill_leg {
      internal;
      proxy_pass http://prefill/v1/completions;
      proxy_http_version 1.1;
      proxy_method POST;
      proxy_pass_request_body off;
      proxy_set_header Connection "";
      proxy_set_header Content-Type application/json;
      proxy_set_body '{"prompt":[1,2,3],"max_tokens":1,"kv_transfer_params":{"do_remote_decode":true}}';
    }
  }
}
CONF
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
PIDS+=($!)
wait_port "$NGINX_PORT"

run() {  # name port repeat [request-rate]
  "$BENCH" serve --backend vllm --model fake-model --host 127.0.0.1 --port "$2" \
    --dataset-name random --random-input-len "$INPUT_LEN" --random-output-len "$OUTPUT_LEN" \
    --num-prompts "$NUM_PROMPTS" --max-concurrency "$CONCURRENCY" --request-rate "${4:-inf}" \
    --ignore-eos --seed 0 --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 \
    --disable-tqdm --save-result --result-dir "$TMP/results" \
    --result-filename "$1-$3.json" >"$TMP/$1-$3.log"
}

# Warm every path once, then interleave the targets so drift hits all alike.
for target in "direct:$DECODE_PORT" "nginx:$NGINX_PORT" "nginx-pd:$NGINX_PD_PORT" "kvtier:$PROXY_PORT"; do
  NUM_PROMPTS=500 run "${target%%:*}" "${target##*:}" warmup
done
# Pass 1, saturation: 64 streams back to back (throughput).
# Pass 2, open loop at RATE req/s, Poisson arrivals (latency added by the proxy
# when the machine is not saturated).
for r in $(seq "$REPEATS"); do
  for target in "direct:$DECODE_PORT" "nginx:$NGINX_PORT" "nginx-pd:$NGINX_PD_PORT" "kvtier:$PROXY_PORT"; do
    run "${target%%:*}" "${target##*:}" "$r"
    NUM_PROMPTS=$RATE_PROMPTS run "rate-${target%%:*}" "${target##*:}" "$r" "$RATE"
  done
done

COMMAND="BUILD=$BUILD NUM_PROMPTS=$NUM_PROMPTS CONCURRENCY=$CONCURRENCY INPUT_LEN=$INPUT_LEN OUTPUT_LEN=$OUTPUT_LEN REPEATS=$REPEATS THREADS=$THREADS RATE=$RATE RATE_PROMPTS=$RATE_PROMPTS bench/proxy_bench.sh"
mkdir -p "$OUT"
python3 "$ROOT/bench/proxy_bench_report.py" "$TMP/results" "$REPEATS" "$OUT" "$COMMAND" \
  "$(nproc) CPUs, $(uname -r), $("$NGINX" -v 2>&1)"
