#!/usr/bin/env bash
# meshwire against its peers, in one run, on this machine (issue 5;
# docs/BENCHMARKS.md says what each row measures).
#
# Usage: scripts/compare.sh [--pin same|split|all] [--quick]
#   --pin all (default): the whole table once per placement, same then split
#   --quick: shorter runs (about a minute a placement instead of a few)
#   MESHWIRE_INSECURE=1: meshwire's rows with --insecure (default: TLS on,
#   meshwire's default; the peers never use TLS, the TLS rows show the cost)
#
# Installs what is missing (nats-server, libzmq, pkg-config, taskset,
# python3: apt-get, with sudo when not root), builds target/release/meshwire
# and benches/compare (its own workspace), runs every workload 3 times,
# interleaved, and prints one table a placement: the median of 3 of each
# side, the ratio meshwire/peer, the issue's target and whether it is met.
# Every run's JSON goes to target/compare/results.json, the tables to
# target/compare/table.md. A meshwire workload that this build does not
# have yet prints n/a in its row; nothing else fails the script.
set -euo pipefail
pins=all
quick=0
while [ $# -gt 0 ]; do
  case $1 in
    --pin) pins=${2:?--pin needs same, split or all}; shift 2 ;;
    --pin=*) pins=${1#--pin=}; shift ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $pins in
  all) pins="same split" ;;
  same|split) ;;
  *) echo "compare.sh: --pin takes same, split or all" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)

# What the peers need from the system. Debian puts nats-server in /usr/sbin.
missing=()
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists libzmq 2>/dev/null || missing+=(libzmq3-dev)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "compare.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  $sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "compare.sh: building meshwire and compare (release)" >&2
cargo build --release -q -p meshwire-cli --manifest-path "$root/Cargo.toml"
cargo build --release -q --locked --manifest-path "$root/benches/compare/Cargo.toml"

mkdir -p "$root/target/compare"
exec python3 - "$root" "$quick" $pins <<'PY'
import datetime, json, os, statistics, subprocess, sys, time

root, quick, pins = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
out = os.path.join(root, "target", "compare")
mw = [os.path.join(root, "target", "release", "meshwire"), "bench"]
peer = [os.path.join(root, "benches", "compare", "target", "release", "compare")]
# Latency runs count round trips; rate runs last a fixed time.
lat = ["--count", "5000" if quick else "20000", "--warmup", "500" if quick else "1000"]
rate = ["--duration", "1" if quick else "3", "--warmup", "500" if quick else "1000"]
tls = ["--insecure"] if os.environ.get("MESHWIRE_INSECURE") == "1" else []

# key: (argv without --pin, who); meshwire's own rows are TLS on unless
# MESHWIRE_INSECURE=1.
commands = {
    "meshwire rpc-latency": (mw + ["rpc-latency"] + lat + tls, "meshwire"),
    "meshwire rpc-latency --insecure": (mw + ["rpc-latency", "--insecure"] + lat, "meshwire"),
    "meshwire rpc-throughput": (mw + ["rpc-throughput", "--inflight", "64"] + rate + tls, "meshwire"),
    "meshwire rpc-throughput --insecure": (mw + ["rpc-throughput", "--inflight", "64", "--insecure"] + rate, "meshwire"),
    "meshwire request-latency": (mw + ["request-latency"] + lat + tls, "meshwire"),
    "meshwire pubsub-throughput": (mw + ["pubsub-throughput"] + rate + tls, "meshwire"),
    "meshwire stream-throughput": (mw + ["stream-throughput"] + rate + tls, "meshwire"),
    "tcp blocking": (peer + ["tcp-latency", "--mode", "blocking"] + lat, "peer"),
    "tcp tokio": (peer + ["tcp-latency", "--mode", "tokio"] + lat, "peer"),
    "zmq REQ/REP": (peer + ["zmq-latency"] + lat, "peer"),
    "zmq PUSH/PULL": (peer + ["zmq-throughput"] + rate, "peer"),
    "nats request/reply": (peer + ["nats-latency"] + lat, "peer"),
    "nats pub/sub": (peer + ["nats-throughput"] + rate, "peer"),
    "tarpc serial": (peer + ["tarpc-latency"] + lat, "peer"),
    "tarpc 64 in flight": (peer + ["tarpc-throughput", "--inflight", "64"] + rate, "peer"),
    "tonic serial": (peer + ["tonic-latency"] + lat, "peer"),
    "tonic 64 in flight": (peer + ["tonic-throughput", "--inflight", "64"] + rate, "peer"),
}
P50, RATE = "p50_us", "rate"
# (workload, meshwire key, peer key, metric, target as (op, x) or None)
rows = [
    ("serial RPC p50 µs vs tarpc", "meshwire rpc-latency", "tarpc serial", P50, ("<=", 0.6)),
    ("serial RPC p50 µs vs tonic", "meshwire rpc-latency", "tonic serial", P50, ("<=", 0.4)),
    ("serial RPC p50 µs vs tokio TCP ping-pong", "meshwire rpc-latency", "tcp tokio", P50, ("<=", 2.5)),
    ("serial RPC p50 µs vs blocking TCP ping-pong", "meshwire rpc-latency", "tcp blocking", P50, None),
    ("serial RPC p50 µs vs ZeroMQ REQ/REP", "meshwire rpc-latency", "zmq REQ/REP", P50, None),
    ("request/reply via router p50 µs vs NATS", "meshwire request-latency", "nats request/reply", P50, ("<=", 0.5)),
    ("pub→router→sub 64 B msgs/s vs NATS pub→sub", "meshwire pubsub-throughput", "nats pub/sub", RATE, (">=", 2.0)),
    ("direct stream 64 B msgs/s vs ZeroMQ PUSH/PULL", "meshwire stream-throughput", "zmq PUSH/PULL", RATE, (">=", 1.0)),
    ("RPC 64 in flight calls/s vs tarpc", "meshwire rpc-throughput", "tarpc 64 in flight", RATE, (">=", 3.0)),
    ("RPC 64 in flight calls/s vs tonic", "meshwire rpc-throughput", "tonic 64 in flight", RATE, None),
    ("TLS cost: RPC 64 in flight calls/s, TLS vs --insecure", "meshwire rpc-throughput", "meshwire rpc-throughput --insecure", RATE, (">=", 0.85)),
    ("TLS cost: serial RPC p50 µs, TLS vs --insecure", "meshwire rpc-latency", "meshwire rpc-latency --insecure", P50, None),
]
if tls:  # every meshwire row is already --insecure: the TLS rows say nothing
    rows = [r for r in rows if not r[0].startswith("TLS cost")]
needed = list(dict.fromkeys(k for r in rows for k in (r[1], r[2])))

def metric(run, m):
    if m == P50:
        return run.get("p50_us")
    return run.get("msgs_per_sec", run.get("calls_per_sec"))

def run_once(key, pin):
    argv = commands[key][0] + ["--json", "--pin", pin]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 120 s"}
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[0]
        return {"error": why[:200]}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "no JSON in the output"}

def fmt(x, m):
    if x is None:
        return "n/a"
    return "%.1f" % x if m == P50 else "{:,}".format(round(x)).replace(",", " ")

commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "commit": commit + ("+dirty" if dirty else ""),
    "cpu": model, "nproc": os.cpu_count(), "quick": quick,
    "meshwire_tls": not tls,
}
results = {"meta": meta, "runs": {}, "tables": {}}
tables = []
started = time.monotonic()
for pin in pins:
    runs = {k: [] for k in needed}
    skip = set()
    for rnd in range(3):
        # Interleaved rounds: a burst of noise on a shared machine hits one
        # run of several workloads, not all three runs of one.
        for key in needed:
            if key in skip:
                continue
            r = run_once(key, pin)
            runs[key].append(r)
            if "error" in r:
                # A workload this meshwire does not have fails the same way
                # each time: one try says so.
                skip.add(key)
            m = P50 if "latency" in r.get("workload", "") else RATE
            print("compare.sh: [pin %s, round %d/3, %3.0f s] %-36s %s" % (
                pin, rnd + 1, time.monotonic() - started, key,
                r.get("error") or fmt(metric(r, m), m) + (" µs p50" if m == P50 else "/s")),
                file=sys.stderr, flush=True)
    results["runs"][pin] = runs
    effective = sorted({r.get("pin") for v in runs.values() for r in v if "pin" in r})
    desc = {"same": "every side on CPU 0", "split": "server side on CPU 1, client side on CPU 0"}.get(pin, "")
    lines = [
        "### pin %s (%s)%s" % (pin, desc, "" if effective in ([pin], []) else " — runs used pin %s" % effective),
        "",
        "| workload | meshwire | peer | ratio meshwire/peer | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    table_rows = []
    for name, mk, pk, m, target in rows:
        def med(k):
            v = [metric(r, m) for r in runs[k] if "error" not in r]
            v = [x for x in v if x is not None]
            return statistics.median(v) if len(v) == 3 else None
        a, b = med(mk), med(pk)
        ratio = a / b if a is not None and b else None
        if target is None:
            t, met = "—", "—"
        else:
            t = "%s %.2g×" % ("≤" if target[0] == "<=" else "≥", target[1])
            met = "n/a" if ratio is None else (
                "yes" if (ratio <= target[1] if target[0] == "<=" else ratio >= target[1]) else "no")
        pl = pk if not pk.startswith("meshwire") else "meshwire --insecure"
        lines.append("| %s | %s | %s: %s | %s | %s | %s |" % (
            name, fmt(a, m), pl, fmt(b, m), "n/a" if ratio is None else "%.2f" % ratio, t, met))
        table_rows.append({"workload": name, "meshwire": a, "peer_key": pk, "peer": b,
                           "ratio": ratio, "target": t, "met": met})
    results["tables"][pin] = table_rows
    tables.append("\n".join(lines))

header = ("meshwire vs peers — %s, commit %s, %s (%d CPUs), median of 3, meshwire TLS %s%s" % (
    meta["date"], meta["commit"], meta["cpu"], meta["nproc"] or 0,
    "on" if meta["meshwire_tls"] else "off (--insecure)", ", --quick" if quick else ""))
text = header + "\n\n" + "\n\n".join(tables) + "\n"
missing = sorted({k for pin in results["runs"] for k, v in results["runs"][pin].items() if v and "error" in v[0]})
if missing:
    text += "\nn/a: " + "; ".join("%s (%s)" % (k, results["runs"][pins[0]][k][0]["error"]) for k in missing if results["runs"][pins[0]].get(k)) + "\n"
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
with open(os.path.join(out, "table.md"), "w") as f:
    f.write(text)
print(text)
print("(every run: target/compare/results.json; this table: target/compare/table.md; %.0f s)" % (time.monotonic() - started))
PY
