#!/bin/bash
# usage: run.sh BIN LABEL
# Runs on the machine's disk under target/ (not tmpfs); needs a release
# mupdatectl (cargo build --release --bins).
set -e
BIN=$1; L=$2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=$ROOT/target/bench-$L; rm -rf $D; mkdir -p $D
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > $D/c.toml <<C
listen = ["127.0.0.1:$PORT"]
data_dir = "$D/data"
[[users]]
name = "mupdater"
password = "secret"
role = "admin"
C
$BIN --config $D/c.toml --log warn 2>$D/log & PID=$!
trap "kill $PID 2>/dev/null; wait $PID 2>/dev/null" EXIT
sleep 1
MUPDATE_PASSWORD=secret $ROOT/target/release/mupdatectl bench -s 127.0.0.1:$PORT --phases load,find,churn --mailboxes 5000 --churn-seconds 5 --find-seconds 5 --server-pid $PID > $D/out.txt 2>&1
cat $D/out.txt
