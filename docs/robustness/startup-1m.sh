#!/usr/bin/env bash
# Startup of mupdated with 1M mailboxes: kill -9 right after a bulk load,
# after a clean stop, kill -9 during churn. Each restart is timed by
# startup-probe.py (first accepted connection, greeting, refusals).
# Usage: docs/robustness/startup-1m.sh BIN_DIR WORK_DIR [MAILBOXES]
# BIN_DIR holds release mupdated and mupdatectl; WORK_DIR is emptied.
# Stops exactly the processes it started, by PID.
set -u
B=$1; W=$2; N=${3:-1000000}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$W"; mkdir -p "$W"
P=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
printf 'listen = ["127.0.0.1:%s"]\ndata_dir = "%s/data"\n[[users]]\nname = "mupdater"\npassword = "secret"\nrole = "admin"\n' "$P" "$W" > "$W/m.toml"
probe() { python3 "$here/startup-probe.py" "$W/m.toml" "$P" "$W/$1.log" "$B/mupdated"; }
stop() { kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.2; done; }
"$B/mupdated" --config "$W/m.toml" --log warn 2>"$W/first.log" </dev/null >/dev/null & PID=$!
trap 'kill -9 $PID 2>/dev/null' EXIT
sleep 1
MUPDATE_PASSWORD=secret "$B/mupdatectl" --server "127.0.0.1:$P" --user mupdater bench --phases load --mailboxes "$N" --load-connections 8 > "$W/load.out" 2>&1
grep "load mailboxes/s" "$W/load.out"
kill -9 "$PID"; wait "$PID" 2>/dev/null
OUT=$(probe after-load); PID=${OUT##*pid=}; echo "kill -9 right after the bulk load: $OUT"
stop "$PID"
OUT=$(probe clean); PID=${OUT##*pid=}; echo "after a clean stop: $OUT"
MUPDATE_PASSWORD=secret timeout 60 "$B/mupdatectl" --server "127.0.0.1:$P" --user mupdater bench --phases churn --mailboxes "$N" --churn-seconds 20 > "$W/churn.out" 2>&1 &
CHURN=$!
sleep 12; kill -9 "$PID"; sleep 1
OUT=$(probe churn); PID=${OUT##*pid=}; echo "kill -9 during churn: $OUT"
wait "$CHURN" 2>/dev/null
stop "$PID"
