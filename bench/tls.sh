#!/usr/bin/env bash
# bench/tls.sh [NBDBOX]  — nbdbox against nbdkit with TLS, on ../shared/bench/compare.sh's
# workloads, for a memory disk of BENCH_SIZE:
#   seqwrite   nbdcopy of a random data file into the export (MB/s)
#   seqread    nbdcopy of the export to null: (MB/s)
#   rand4k     4 KiB random reads, 16 in flight on one connection, from a libnbd Python loop
#              (IOPS): fio's nbd engine cannot read a PSK file (libnbd refuses local files
#              in URIs unless the caller allows them, and fio does not)
#   fio4k      the same with fio's nbd engine (IOPS), without TLS and with X.509 (the client
#              not checking the server's certificate, which costs nothing per request)
# each with no TLS, with X.509 certificates and with a pre-shared key (--tls=require), keys
# made with certtool and psktool as nbdkit-tls(1) shows. Repetitions alternate the servers;
# the median is printed with the ratio nbdbox / nbdkit (> 1: nbdbox faster), then what TLS
# costs each server (figure with TLS / figure without, 1.0 = free).
#
# Environment: NBDKIT [nbdkit]  BENCH_SIZE [1G]  BENCH_REPS [3]  BENCH_RAND_TIME [3]
#   BENCH_TMP [/dev/shm]  BENCH_DATA [$BENCH_TMP/nbdbench-data-<bytes>.img, made once, as
#   compare.sh makes it]  NBD_PYTHON [/usr/bin/python3]
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

# --inner MODE SOCKET RESULT: the workloads, run by the server's --run against $unixsocket.
if [[ ${1:-} = --inner ]]; then
    mode=$2 socket=$3 result=$4
    case "$mode" in
        plain) uri="nbd+unix:///?socket=$socket" fio_uri=$uri ;;
        x509)
            uri="nbds+unix:///?socket=$socket&tls-certificates=$PKI/client"
            fio_uri="nbds+unix:///?socket=$socket&tls-verify-peer=false" ;;
        psk) uri="nbds+unix://alice@/?socket=$socket&tls-psk-file=$PKI/keys.psk" fio_uri= ;;
    esac
    put() { echo "$1 $2" >>"$result"; }
    rate() { awk -v b="$BENCH_SIZE_BYTES" -v t0="$1" -v t1="$2" 'BEGIN { printf "%.1f", b / (t1 - t0) / 1e6 }'; }
    t0=$EPOCHREALTIME
    nbdcopy -- "$BENCH_DATA" "$uri"
    t1=$EPOCHREALTIME
    put seqwrite "$(rate "$t0" "$t1")"
    t0=$EPOCHREALTIME
    nbdcopy -- "$uri" null:
    t1=$EPOCHREALTIME
    put seqread "$(rate "$t0" "$t1")"
    put rand4k "$("$NBD_PYTHON" - "$uri" "$BENCH_RAND_TIME" <<'EOF'
import nbd, random, sys, time
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
blocks = h.get_size() // 4096
buf = nbd.Buffer(4096)
rng = random.Random(1)
done = 0
def completed(error):
    global done
    done += 1
    return 1
start = time.monotonic()
end = start + float(sys.argv[2])
while time.monotonic() < end:
    while h.aio_in_flight() < 16:
        h.aio_pread(buf, rng.randrange(blocks) * 4096, completion=completed)
    h.poll(-1)
while h.aio_in_flight() > 0:
    h.poll(-1)
print("%.0f" % (done / (time.monotonic() - start)))
h.shutdown()
EOF
)"
    if [[ -n $fio_uri ]]; then
        put fio4k "$(fio --name=tls --ioengine=nbd --uri="$fio_uri" --rw=randread --bs=4k --iodepth=16 \
            --numjobs=1 --runtime="$BENCH_RAND_TIME" --time_based --output-format=terse --terse-version=3 |
            awk -F';' '$1 == "3" { print $8 }')"
    fi
    exit 0
fi

NBDBOX=$(command -v "${1:-./target/release/nbdbox}")
NBDKIT=${NBDKIT:-nbdkit}
export BENCH_TMP=${BENCH_TMP:-/dev/shm}
BENCH_SIZE=${BENCH_SIZE:-1G}
export BENCH_SIZE_BYTES
BENCH_SIZE_BYTES=$(numfmt --from=iec "$BENCH_SIZE")
export BENCH_DATA=${BENCH_DATA:-$BENCH_TMP/nbdbench-data-$BENCH_SIZE_BYTES.img}
export BENCH_RAND_TIME=${BENCH_RAND_TIME:-3}
export NBD_PYTHON=${NBD_PYTHON:-/usr/bin/python3}
REPS=${BENCH_REPS:-3}
for t in nbdcopy fio certtool psktool numfmt awk "$NBDKIT" "$NBD_PYTHON"; do
    command -v "$t" >/dev/null || { echo "tls.sh: missing $t" >&2; exit 2; }
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [[ ! -f $BENCH_DATA || $(stat -c %s "$BENCH_DATA") -ne $BENCH_SIZE_BYTES ]]; then
    head -c "$BENCH_SIZE_BYTES" /dev/urandom >"$BENCH_DATA.tmp.$$" && mv "$BENCH_DATA.tmp.$$" "$BENCH_DATA"
fi

# Keys: a CA, the server's certificate, a client's, and a PSK file (nbdkit-tls(1)).
export PKI=$WORK/pki
mkdir -p "$PKI/server" "$PKI/client"
certtool_q() { certtool "$@" >/dev/null 2>&1; }
certtool_q --generate-privkey --outfile "$PKI/ca-key.pem"
printf 'cn = bench ca\nca\ncert_signing_key\n' >"$PKI/ca.info"
certtool_q --generate-self-signed --load-privkey "$PKI/ca-key.pem" --template "$PKI/ca.info" \
    --outfile "$PKI/server/ca-cert.pem"
cp "$PKI/server/ca-cert.pem" "$PKI/client/ca-cert.pem"
certify() { # NAME DIR TEMPLATE
    certtool_q --generate-privkey --outfile "$2/$1-key.pem"
    printf '%b' "$3" >"$PKI/$1.info"
    certtool_q --generate-certificate --load-ca-certificate "$PKI/server/ca-cert.pem" \
        --load-ca-privkey "$PKI/ca-key.pem" --load-privkey "$2/$1-key.pem" \
        --template "$PKI/$1.info" --outfile "$2/$1-cert.pem"
}
certify server "$PKI/server" 'cn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\nsigning_key\n'
certify client "$PKI/client" 'cn = bench client\ntls_www_client\nencryption_key\nsigning_key\n'
psktool -u alice -p "$PKI/keys.psk" >/dev/null

declare -A TLS_ARGS=(
    [plain]=""
    [x509]="--tls=require --tls-certificates=$PKI/server"
    [psk]="--tls=require --tls-psk=$PKI/keys.psk"
)
MODES=(plain x509 psk)
WORKLOADS=(seqwrite seqread rand4k fio4k)
declare -A UNIT=([seqwrite]=MB/s [seqread]=MB/s [rand4k]=IOPS [fio4k]=IOPS)

# One captive run of SERVER in MODE; its figures go to $WORK/samples as "server mode key value".
run() {
    local server=$1 mode=$2 result=$WORK/result
    : >"$result"
    local -a tls
    read -r -a tls <<<"${TLS_ARGS[$mode]}"
    local cmd=$NBDBOX
    [[ $server = nbdkit ]] && cmd=$NBDKIT
    "$cmd" -U - "${tls[@]}" memory "$BENCH_SIZE" \
        --run "$(printf '%q' "$SELF") --inner $mode \"\$unixsocket\" $(printf '%q' "$result")" \
        >>"$WORK/log" 2>&1 || echo "# $server $mode failed (see the log)" >&2
    awk -v s="$server" -v m="$mode" '{ print s, m, $1, $2 }' "$result" >>"$WORK/samples"
}

for ((rep = 1; rep <= REPS; rep++)); do
    for mode in "${MODES[@]}"; do
        if ((rep % 2)); then run nbdbox "$mode"; run nbdkit "$mode"; else run nbdkit "$mode"; run nbdbox "$mode"; fi
    done
done

median() { # SERVER MODE KEY
    awk -v s="$1" -v m="$2" -v k="$3" '$1 == s && $2 == m && $3 == k { print $4 }' "$WORK/samples" | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b <= 0) print "NA"; else printf "%.2f", a / b }'; }

echo "# nbdbox: $NBDBOX; nbdkit: $NBDKIT ($("$NBDKIT" --version | head -1)); memory $BENCH_SIZE, median of $REPS"
printf '%-20s %10s %10s %7s  %s\n' "# mode workload" nbdbox nbdkit ratio unit
for mode in "${MODES[@]}"; do
    for w in "${WORKLOADS[@]}"; do
        a=$(median nbdbox "$mode" "$w") b=$(median nbdkit "$mode" "$w")
        [[ $a = NA && $b = NA ]] && continue
        printf '%-20s %10s %10s %7s  %s\n' "$mode $w" "$a" "$b" "$(ratio "$a" "$b")" "${UNIT[$w]}"
    done
done
echo "# what TLS costs: figure with TLS / without (1.00 = free)"
printf '%-20s %10s %10s\n' "# mode workload" nbdbox nbdkit
for mode in x509 psk; do
    for w in "${WORKLOADS[@]}"; do
        row=()
        for server in nbdbox nbdkit; do
            row+=("$(ratio "$(median "$server" "$mode" "$w")" "$(median "$server" plain "$w")")")
        done
        [[ ${row[0]} = NA && ${row[1]} = NA ]] && continue
        printf '%-20s %10s %10s\n' "$mode $w" "${row[@]}"
    done
done
