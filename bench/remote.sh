#!/usr/bin/env bash
# bench/remote.sh [NBDBOX]  — the network plugins beside nbdkit's, same origin, one run.
#
# Prints one row per figure: nbdbox, nbdkit, ratio.  ratio > 1 means nbdbox is faster
# (rates: nbdbox/nbdkit; latencies: nbdkit/nbdbox).  Best of BENCH_REPS interleaved runs.
#
# Origins (started here, on 127.0.0.1, serving BENCH_SIZE random bytes):
#   curl-http    nginx over HTTP               `curl url=http://.../disk.img`
#   curl-https   nginx over HTTPS, a test CA   `curl url=https://.../disk.img cainfo=CA`
#   nbd          qemu-nbd --shared=0 (raw)     `nbd socket=SOCK`
# Workloads, inside each server's --run:
#   seq1m        nbdcopy --request-size=1M $uri null:     (MB/s)
#   seq64k       nbdcopy --request-size=64K $uri null:    (MB/s)
#   convert      qemu-img convert -O raw $nbd FILE        (MB/s)
#   lat4k        fio, 4 KiB random reads at queue depth 1 (mean latency, µs)
# Readahead over a slow origin (tests/all/support/flaky_origin.py, every GET +BENCH_DELAY_MS):
#   64 KiB sequential reads, one request in flight (nbdcopy --connections=1 --requests=1),
#   nbdbox `--filter=readahead curl` beside nbdkit `--filter=readahead curl`, and beside
#   nbdkit `--filter=readahead --filter=cache curl` (nbdkit 1.32's readahead issues cache
#   requests, which its curl plugin ignores; the cache filter turns them into reads).
#
# Environment: NBDKIT [nbdkit]  BENCH_SIZE [256M]  BENCH_SLOW_SIZE [16M]  BENCH_REPS [3]
#   BENCH_FIO_TIME [5]  BENCH_DELAY_MS [10]  BENCH_TMP [/dev/shm, else /tmp]
set -euo pipefail

now_ns() { date +%s%N; }

# ---- inner mode: runs inside a server's --run, prints "key value" lines ----
if [[ "${1:-}" == --inner ]]; then
    uri=$2 nbd=$3 out=$4 fio_time=$5
    for rs in 1048576:seq1m 65536:seq64k; do
        t0=$(now_ns); nbdcopy --request-size="${rs%%:*}" -- "$uri" null:; t1=$(now_ns)
        echo "${rs#*:}_ns $((t1 - t0))"
    done
    t0=$(now_ns); qemu-img convert -O raw "$nbd" "$out"; t1=$(now_ns)
    rm -f "$out"
    echo "convert_ns $((t1 - t0))"
    # terse v3: field 40 = mean total latency of reads (µs)
    lat=$(fio --name=lat --ioengine=nbd --uri="$uri" --rw=randread --bs=4k --iodepth=1 \
              --numjobs=1 --runtime="$fio_time" --time_based --output-format=terse \
              --terse-version=3 | awk -F';' '$1=="3" {print $40}') || lat=NA
    echo "lat4k_us $lat"
    exit 0
fi
if [[ "${1:-}" == --inner-slow ]]; then
    uri=$2
    t0=$(now_ns)
    nbdcopy --request-size=65536 --connections=1 --requests=1 -- "$uri" null:
    t1=$(now_ns)
    echo "readahead_ns $((t1 - t0))"
    exit 0
fi

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")
NBDBOX=${1:-./target/release/nbdbox}
NBDKIT=${NBDKIT:-nbdkit}
SIZE=${BENCH_SIZE:-256M}
SLOW_SIZE=${BENCH_SLOW_SIZE:-16M}
REPS=${BENCH_REPS:-3}
FIO_TIME=${BENCH_FIO_TIME:-5}
DELAY=${BENCH_DELAY_MS:-10}
TMP=${BENCH_TMP:-/dev/shm}
[[ -d "$TMP" && -w "$TMP" ]] || TMP=/tmp
export PATH=/usr/sbin:/usr/bin:$PATH   # Debian's tools (nginx, and nbdsh's python)

for t in nbdcopy qemu-img qemu-nbd fio openssl nginx numfmt awk python3 "$NBDKIT" "$NBDBOX"; do
    command -v "$t" >/dev/null || { echo "remote.sh: missing $t" >&2; exit 2; }
done
NBDBOX=$(command -v "$NBDBOX")
BYTES=$(numfmt --from=iec "$SIZE")
SLOW_BYTES=$(numfmt --from=iec "$SLOW_SIZE")

WORK=$(mktemp -d "$TMP/nbdbox-remote.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/root" "$WORK/nginx/tmp"
chmod 755 "$WORK" "$WORK/root"   # nginx's workers run as another user
head -c "$BYTES" /dev/urandom > "$WORK/root/disk.img"
chmod 644 "$WORK/root/disk.img"
head -c "$SLOW_BYTES" /dev/urandom > "$WORK/slow.img"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "remote.sh: nothing on port $1" >&2; exit 2; }

# A test CA and a certificate for 127.0.0.1 (as tests/all/support/origins.rs makes them).
(
    cd "$WORK"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA"
    openssl req "${ec[@]}" -keyout server.key -out server.csr -subj /CN=localhost
    echo "subjectAltName=IP:127.0.0.1,DNS:localhost" > san.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile san.cnf
) >/dev/null 2>&1

HTTP_PORT=$(free_port) HTTPS_PORT=$(free_port)
cat > "$WORK/nginx/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log;
events { worker_connections 512; }
http {
  access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path $WORK/nginx/tmp; proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp; uwsgi_temp_path $WORK/nginx/tmp; scgi_temp_path $WORK/nginx/tmp;
  server { listen 127.0.0.1:$HTTP_PORT; root $WORK/root; }
  server { listen 127.0.0.1:$HTTPS_PORT ssl; root $WORK/root;
           ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key; }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
qemu-nbd --socket="$WORK/q.sock" --format=raw --read-only --persistent --shared=0 \
    "$WORK/root/disk.img" & PIDS+=($!)
python3 "$ROOT/tests/all/support/flaky_origin.py" "$WORK/slow.port" "$WORK/slow.img" delay 1 "$DELAY" \
    2>/dev/null & PIDS+=($!)
wait_port "$HTTP_PORT"; wait_port "$HTTPS_PORT"
for _ in $(seq 200); do [[ -S $WORK/q.sock && -f $WORK/slow.port ]] && break; sleep 0.05; done
SLOW_URL="http://127.0.0.1:$(cat "$WORK/slow.port")/disk.img"

RES=$WORK/results    # lines: server key value
: > "$RES"

origin_args() {   # origin -> the plugin and its parameters (the same for both servers)
    case $1 in
        curl-http) echo "curl url=http://127.0.0.1:$HTTP_PORT/disk.img" ;;
        curl-https) echo "curl url=https://127.0.0.1:$HTTPS_PORT/disk.img cainfo=$WORK/ca.pem" ;;
        nbd) echo "nbd socket=$WORK/q.sock" ;;
    esac
}

measure() {   # server origin -> appends "server origin/key value" lines
    local server=$1 origin=$2 cmd out
    if [[ $server == nbdbox ]]; then cmd=$NBDBOX; else cmd=$NBDKIT; fi
    local run; run="$(printf '%q' "$SELF") --inner \"\$uri\" \"\$nbd\" $(printf '%q' "$WORK/convert.raw") $FIO_TIME"
    # shellcheck disable=SC2046
    if out=$(timeout 900 "$cmd" -U - $(origin_args "$origin") --run "$run" 2>"$WORK/err"); then
        while read -r k v; do
            [[ -n $v ]] || continue
            case $k in
                *_ns) echo "$server $origin/${k%_ns}_MBps $(awk -v b="$BYTES" -v n="$v" 'BEGIN{printf "%.1f", b / (n / 1e9) / 1e6}')" ;;
                *) echo "$server $origin/$k $v" ;;
            esac
        done <<<"$out" >> "$RES"
    else
        echo "# $server $origin failed:" >&2; tail -5 "$WORK/err" >&2 || true
    fi
}

slow() {   # label server-command filters... -> appends "label readahead_MBps value"
    local label=$1 cmd=$2 out; shift 2
    if out=$(timeout 900 "$cmd" -U - "$@" curl "url=$SLOW_URL" \
            --run "$(printf '%q' "$SELF") --inner-slow \"\$uri\"" 2>"$WORK/err"); then
        awk -v l="$label" -v b="$SLOW_BYTES" '$1=="readahead_ns" {printf "%s readahead_MBps %.2f\n", l, b / ($2 / 1e9) / 1e6}' \
            <<<"$out" >> "$RES"
    else
        echo "# $label failed:" >&2; tail -5 "$WORK/err" >&2 || true
    fi
}

for ((r = 1; r <= REPS; r++)); do
    if (( r % 2 )); then order="nbdbox nbdkit"; else order="nbdkit nbdbox"; fi
    for origin in curl-http curl-https nbd; do
        for s in $order; do
            echo "# rep $r/$REPS: $s $origin" >&2
            measure "$s" "$origin"
        done
    done
    echo "# rep $r/$REPS: readahead over +${DELAY} ms" >&2
    slow nbdbox "$NBDBOX" --filter=readahead
    slow nbdkit "$NBDKIT" --filter=readahead
    slow nbdkit-cache "$NBDKIT" --filter=readahead --filter=cache
done

best() {   # server key lo|hi
    awk -v s="$1" -v k="$2" -v d="$3" '$1==s && $2==k && $3!="NA" && $3!="" {
        v=$3+0; if (!n || (d=="lo" ? v<b : v>b)) b=v; n++ }
        END{ if (n) print b; else print "NA" }' "$RES"
}

row() {   # label ours theirs key lo|hi
    local a b ratio=NA
    a=$(best "$2" "$4" "$5"); b=$(best "$3" "$4" "$5")
    if [[ $a != NA && $b != NA ]]; then
        ratio=$(awk -v a="$a" -v b="$b" -v d="$5" 'BEGIN{ if (a<=0||b<=0) print "NA";
            else printf "%.2f", (d=="lo" ? b/a : a/b) }')
    fi
    printf '%-34s %12s %12s %8s\n' "$1" "$a" "$b" "$ratio"
}

printf '%-34s %12s %12s %8s\n' "# figure (best of $REPS)" nbdbox nbdkit ratio
for origin in curl-http curl-https nbd; do
    row "$origin seq 1M reads MB/s" nbdbox nbdkit "$origin/seq1m_MBps" hi
    row "$origin seq 64K reads MB/s" nbdbox nbdkit "$origin/seq64k_MBps" hi
    row "$origin qemu-img convert MB/s" nbdbox nbdkit "$origin/convert_MBps" hi
    row "$origin 4K read latency us" nbdbox nbdkit "$origin/lat4k_us" lo
done
row "readahead +${DELAY}ms MB/s" nbdbox nbdkit readahead_MBps hi
row "readahead vs nbdkit +cache MB/s" nbdbox nbdkit-cache readahead_MBps hi
echo "# size=$SIZE slow size=$SLOW_SIZE fio: ${FIO_TIME}s qd1; MB = 10^6 bytes; ratio > 1: nbdbox faster"
