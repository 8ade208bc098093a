#!/bin/bash
# A 4 MiB text file with Accept-Encoding: gzip: nginx's `gzip on` (level 1, again for every request)
# against ring3 (gzip -9 once, the result kept in an unlinked file and sent by sendfile). CPU per request
# from /proc/PID/stat over 200 requests (h2load -c 4 on CPU 0, the servers on CPU 1); bytes per response
# by curl. Run: bash bench/big_compress.sh (needs nginx, h2load, curl; ports 8095 and 8096 on loopback).
set -u
WORK=$(mktemp -d)
mkdir -p "$WORK/root" "$WORK/nginx"
chmod 755 "$WORK"  # nginx's worker runs as an unprivileged user
python3 - "$WORK/root/big.txt" <<'PY'
import random, sys
words = [b"ring3", b"kernel", b"toll", b"request", b"server", b"<li>", b"</li>", b"class='row'", b"the", b"of"]
rng = random.Random(7)
text = b" ".join(rng.choice(words) + b"%d" % rng.randrange(1000) for _ in range(560_000))[:4 * 1024 * 1024]
open(sys.argv[1], "wb").write(text)
PY
chmod -R a+rX "$WORK/root"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $WORK/nginx/error.log;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    types { text/plain txt; }
    sendfile on;
    gzip on; gzip_comp_level 1; gzip_types text/plain; gzip_min_length 256;
    server { listen 127.0.0.1:8095; root $WORK/root; }
}
CONF
# CPU per request of a server PID for N requests of big.txt with Accept-Encoding: gzip
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
measure() { # pid port label
  local pid=$1 port=$2 label=$3
  h2load -n 20 -c 4 --h1 -H "Accept-Encoding: gzip" http://127.0.0.1:$port/big.txt > /dev/null 2>&1  # warm (compress once)
  sleep 8
  h2load -n 20 -c 4 --h1 -H "Accept-Encoding: gzip" http://127.0.0.1:$port/big.txt > /dev/null 2>&1
  local before=$(cpu $pid)
  local out=$(taskset -c 0 h2load -n 200 -c 4 --h1 -H "Accept-Encoding: gzip" http://127.0.0.1:$port/big.txt 2>&1 | grep -E "^requests:|traffic:")
  local after=$(cpu $pid)
  local ticks=$((after - before)); local hz=$(getconf CLK_TCK)
  echo "$label: $(echo "$out" | tr '\n' ' ') CPU/request: $(python3 -c "print(round($ticks/$hz/200*1e3, 2))") ms"
  curl -s -o /dev/null -w "$label bytes/response: %{size_download}\n" -H "Accept-Encoding: gzip" http://127.0.0.1:$port/big.txt
}
taskset -c 1 nginx -c $WORK/nginx/nginx.conf
sleep 0.5
NPID=$(cat $WORK/nginx/nginx.pid); NW=$(pgrep -P $NPID | head -1)
measure $NW 8095 "nginx gzip on (level 1)"
kill $NPID
(taskset -c 1 ring3 serve $WORK/root --listen 127.0.0.1:8096 --access-log off --compress-encodings gzip > $WORK/ring3.log 2>&1 &)
sleep 1.5
RPID=$(pgrep -f "listen 127.0.0.1:8096" | head -1)
measure $RPID 8096 "ring3 gzip once (level 9, on disk, sendfile)"
kill $RPID
rm -rf "$WORK"
