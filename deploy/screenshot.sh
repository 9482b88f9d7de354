#!/usr/bin/env bash
# Regenerate the README's screenshot (docs/img/dashboard.png) from what `make demo` shows: run the
# demo in a scratch data dir until its results hold a few anomalies and an incident, then let a
# headless Chromium render the dashboard. Usage: make screenshot (needs `make browser` once).
set -euo pipefail

OUT=${OUT:-docs/img/dashboard.png}
PORT=${PORT:-8071}
PY=${PY:-.venv/bin}
DIR=$(mktemp -d -t cutstream-screenshot-XXXXXX)
"$PY/cutstream" demo --data-dir "$DIR/data" --port "$PORT" --duration 240 >"$DIR/demo.log" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

anomalies() {
    "$PY/cutstream" query --data-dir "$DIR/data" --format csv \
        "SELECT count(*) AS n FROM results WHERE anomalyDecision = 1" 2>/dev/null | tail -n 1 || echo 0
}
# the demo's injected spikes come after ~3 simulated days (40-60 s): wait for three of them
for _ in $(seq 1 200); do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "screenshot: the demo stopped early:" >&2
        tail -n 20 "$DIR/demo.log" >&2
        exit 1
    fi
    n=$(anomalies)
    if [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 3)); then
        break
    fi
    sleep 1
done
if ! [[ "$(anomalies)" =~ ^[0-9]+$ ]] || (($(anomalies) < 3)); then
    echo "screenshot: no anomalies after 200 s; see the demo's log:" >&2
    tail -n 20 "$DIR/demo.log" >&2
    exit 1
fi

chromium --headless --no-sandbox --disable-gpu --disable-background-networking --hide-scrollbars \
    --window-size=1440,1300 --virtual-time-budget=20000 --screenshot="$OUT" \
    "http://127.0.0.1:$PORT/" 2>"$DIR/chromium.log" || {
    echo "screenshot: chromium failed:" >&2
    tail -n 20 "$DIR/chromium.log" >&2
    exit 1
}
echo "screenshot: $OUT ($(anomalies) anomalies in the demo's results)"
