//! `meshwire bench` runs a tiny configuration of each workload and prints
//! one valid JSON object with the fields DESIGN.md §4 and issue 5 require.
//! Benchmarks are programs, not timed tests: nothing here checks speed,
//! only that the numbers are present and sane. Every run is bounded.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use serde_json::Value;
use std::time::Duration;
use support::run;

/// Generous for a few hundred calls in a debug build on a busy machine.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `meshwire ARGS`, expects exit 0, and returns stdout's last line
/// parsed as a JSON object.
fn bench_json(args: &[&str]) -> serde_json::Map<String, Value> {
    let done = run(args, LIMIT);
    done.assert_code(0);
    let last = done
        .stdout
        .last()
        .unwrap_or_else(|| panic!("{} printed nothing\nstderr:\n{}", done.name, done.stderr));
    match serde_json::from_str::<Value>(last) {
        Ok(Value::Object(m)) => m,
        other => panic!(
            "{}: last stdout line is not a JSON object: {last:?} ({other:?})\nstderr:\n{}",
            done.name, done.stderr
        ),
    }
}

fn num(m: &serde_json::Map<String, Value>, key: &str) -> f64 {
    m.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key:?} missing or not a number in {m:?}"))
}

/// The fields every result has, with `pin none` as asked; `tls` says
/// whether the links ran TLS (meshwire workloads do unless --insecure).
fn check_header(m: &serde_json::Map<String, Value>, workload: &str, tls: bool) {
    assert_eq!(m["workload"], workload, "{m:?}");
    assert_eq!(m["pin"], "none", "{m:?}");
    assert_eq!(m["pin_requested"], "none", "{m:?}");
    assert_eq!(m["tls"], tls, "{m:?}");
    assert_eq!(num(m, "size"), 64.0, "{m:?}");
}

/// Latency percentiles present, positive and ordered.
fn check_latency(m: &serde_json::Map<String, Value>) {
    let keys = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"];
    let v: Vec<f64> = keys.iter().map(|k| num(m, k)).collect();
    assert!(v[0] > 0.0, "p50 must be positive: {m:?}");
    assert!(
        v.windows(2).all(|w| w[0] <= w[1]),
        "percentiles must not decrease ({keys:?} = {v:?})"
    );
    let mean = num(m, "mean_us");
    assert!(
        mean > 0.0 && mean <= v[4],
        "mean {mean} outside (0, max]: {m:?}"
    );
    // A 64-byte echo on loopback in well under a second, even in debug.
    assert!(v[0] < 1_000_000.0, "p50 of {} µs is not sane: {m:?}", v[0]);
}

#[test]
fn tcp_latency_floor_prints_one_json_object() {
    let m = bench_json(&[
        "bench",
        "tcp-latency",
        "--count",
        "200",
        "--warmup",
        "20",
        "--json",
        "--pin",
        "none",
    ]);
    check_header(&m, "tcp-latency", false);
    check_latency(&m);
    assert_eq!(num(&m, "round_trips"), 200.0, "{m:?}");
    assert!(num(&m, "round_trips_per_sec") > 0.0, "{m:?}");
}

#[test]
fn rpc_latency_prints_one_json_object() {
    let m = bench_json(&[
        "bench",
        "rpc-latency",
        "--count",
        "200",
        "--warmup",
        "20",
        "--json",
        "--pin",
        "none",
    ]);
    check_header(&m, "rpc-latency", true);
    assert_eq!(num(&m, "calls"), 200.0, "{m:?}");
    assert!(num(&m, "seconds") > 0.0, "{m:?}");
    assert!(num(&m, "calls_per_sec") > 0.0, "{m:?}");
    check_latency(&m);
}

#[test]
fn rpc_throughput_prints_one_json_object() {
    let m = bench_json(&[
        "bench",
        "rpc-throughput",
        "--count",
        "500",
        "--inflight",
        "8",
        "--warmup",
        "50",
        "--json",
        "--pin",
        "none",
    ]);
    check_header(&m, "rpc-throughput", true);
    assert_eq!(num(&m, "inflight"), 8.0, "{m:?}");
    assert_eq!(num(&m, "calls"), 500.0, "{m:?}");
    let (secs, rate) = (num(&m, "seconds"), num(&m, "msgs_per_sec"));
    assert!(secs > 0.0 && rate > 0.0, "{m:?}");
    // calls / seconds, up to the rounding of both.
    assert!(
        (rate * secs - 500.0).abs() < 0.01 * 500.0,
        "msgs_per_sec {rate} × seconds {secs} should be about 500 calls"
    );
    check_latency(&m);
}

/// `--insecure` runs plaintext links and says so.
#[test]
fn rpc_latency_insecure() {
    let m = bench_json(&[
        "bench",
        "rpc-latency",
        "--insecure",
        "--count",
        "100",
        "--warmup",
        "10",
        "--json",
        "--pin",
        "none",
    ]);
    check_header(&m, "rpc-latency", false);
    check_latency(&m);
}

/// `--vs-insecure` runs both and reports what TLS costs.
#[test]
fn vs_insecure_reports_the_cost_of_tls() {
    let m = bench_json(&[
        "bench",
        "rpc-throughput",
        "--vs-insecure",
        "--count",
        "200",
        "--inflight",
        "4",
        "--warmup",
        "10",
        "--json",
        "--pin",
        "none",
    ]);
    assert_eq!(m["comparison"], "tls-vs-insecure", "{m:?}");
    for (side, tls) in [("tls", true), ("insecure", false)] {
        let Some(Value::Object(run)) = m.get(side) else {
            panic!("no {side:?} run in {m:?}");
        };
        check_header(run, "rpc-throughput", tls);
        check_latency(run);
    }
    let Some(Value::Object(cost)) = m.get("cost") else {
        panic!("no cost in {m:?}");
    };
    for key in ["p50_us", "p50_us_pct", "p99_us", "msgs_per_sec_pct"] {
        num(cost, key);
    }
}

/// The human table (the default) names the workload, the pinning and the
/// percentiles.
#[test]
fn rpc_latency_table_by_default() {
    let done = run(
        &[
            "bench",
            "rpc-latency",
            "--count",
            "50",
            "--warmup",
            "0",
            "--pin",
            "none",
        ],
        LIMIT,
    );
    done.assert_code(0);
    let text = done.stdout_text();
    for word in ["rpc-latency", "pin", "none", "tls", "p50", "p99.9", "µs"] {
        assert!(text.contains(word), "table lacks {word:?}:\n{text}");
    }
    assert!(
        serde_json::from_str::<Value>(done.stdout.last().unwrap()).is_err(),
        "without --json the output is a table:\n{text}"
    );
}

/// `--duration` works (and stops in bounded time).
#[test]
fn rpc_throughput_duration() {
    let m = bench_json(&[
        "bench",
        "rpc-throughput",
        "--duration",
        "0.3",
        "--inflight",
        "4",
        "--warmup",
        "10",
        "--json",
        "--pin",
        "none",
    ]);
    check_header(&m, "rpc-throughput", true);
    assert!(num(&m, "calls") >= 1.0, "{m:?}");
    let secs = num(&m, "seconds");
    assert!((0.29..10.0).contains(&secs), "seconds {secs}: {m:?}");
}

/// Pinning that the machine cannot give falls back to `none` and says so;
/// one it can give is reported as asked.
#[test]
fn pin_is_always_reported() {
    let m = bench_json(&[
        "bench",
        "rpc-latency",
        "--count",
        "20",
        "--warmup",
        "0",
        "--json",
        "--pin",
        "split",
    ]);
    assert_eq!(m["pin_requested"], "split", "{m:?}");
    if m["pin"] == "split" {
        assert_eq!(num(&m, "server_cpu"), 1.0, "{m:?}");
        assert_eq!(num(&m, "client_cpu"), 0.0, "{m:?}");
        assert!(!m.contains_key("pin_note"), "{m:?}");
    } else {
        assert_eq!(m["pin"], "none", "{m:?}");
        assert!(m["pin_note"].is_string(), "a fallback must say why: {m:?}");
    }
}

/// Bad arguments exit 2 with a message that says what to do.
#[test]
fn bad_arguments_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "rpc-latency", "--count", "0"], "--count"),
        (&["bench", "rpc-latency", "--pin", "both"], "--pin"),
        (&["bench", "rpc-latency", "--duration", "0"], "above 0"),
        (&["bench", "rpc-latency", "--size", "99999999"], "use less"),
        (
            &["bench", "rpc-throughput", "--inflight", "0"],
            "--inflight",
        ),
        (
            &["bench", "rpc-latency", "--count", "5", "--duration", "1"],
            "cannot be used with",
        ),
        (&["bench", "no-such-workload"], "unrecognized subcommand"),
        (&["bench", "tcp-latency", "--vs-insecure"], "--vs-insecure"),
        (
            &["bench", "rpc-latency", "--insecure", "--vs-insecure"],
            "cannot be used with",
        ),
        (&["bench", "model", "--nodes", "1..4"], "--nodes 2..8"),
        (&["bench", "model", "--nodes", "2..33"], "--nodes 2..8"),
        (&["bench", "model", "--nodes", "6..3"], "--nodes 2..8"),
        (&["bench", "model", "--rounds", "0"], "--rounds 200"),
        (
            &["bench", "model", "--plot", "/no/such/dir/x.svg"],
            "does not exist",
        ),
        (
            &["bench", "model", "--vs-insecure", "--plot", "x.svg"],
            "--vs-insecure",
        ),
    ];
    for (args, expect) in cases {
        let done = run(args, LIMIT);
        done.assert_code(2);
        assert!(
            done.stderr.contains(expect),
            "meshwire {}: stderr should mention {expect:?}:\n{}",
            args.join(" "),
            done.stderr
        );
    }
}

/// request-latency: serial requests through a router to a responder.
#[test]
fn request_latency_prints_one_json_object() {
    let m = bench_json(&[
        "bench",
        "request-latency",
        "--count",
        "200",
        "--warmup",
        "20",
        "--json",
        "--pin",
        "none",
    ]);
    check_header(&m, "request-latency", true);
    assert_eq!(num(&m, "requests"), 200.0, "{m:?}");
    check_latency(&m);
}

/// The one-way workloads: every reliable message arrives once, the rates
/// are positive, and best effort and fan-out say what they were.
#[test]
fn throughput_workloads_print_one_json_object() {
    let cases: &[(&str, &[&str], f64)] = &[
        ("pubsub-throughput", &[], 1.0),
        ("pubsub-throughput", &["--best-effort"], 1.0),
        ("stream-throughput", &[], 1.0),
        ("fanout", &["--subs", "3"], 3.0),
    ];
    for (workload, extra, subs) in cases {
        let mut args = vec![
            "bench", workload, "--count", "2000", "--warmup", "100", "--json", "--pin", "none",
        ];
        args.extend_from_slice(extra);
        let m = bench_json(&args);
        check_header(&m, workload, true);
        assert_eq!(num(&m, "published"), 2000.0, "{m:?}");
        assert_eq!(num(&m, "subs"), *subs, "{m:?}");
        let best_effort = extra.contains(&"--best-effort");
        assert_eq!(
            m["delivery"],
            if best_effort {
                "best-effort"
            } else {
                "reliable-ordered"
            },
            "{m:?}"
        );
        if !best_effort {
            assert_eq!(num(&m, "delivered"), 2000.0 * subs, "{m:?}");
        }
        assert!(num(&m, "msgs_per_sec") > 0.0, "{m:?}");
        assert!(
            num(&m, "deliveries_per_sec") >= num(&m, "msgs_per_sec"),
            "{m:?}"
        );
    }
}

/// model: the parts of an exchange, one row per n with the model and the
/// measurement side by side, and the plot as a well-formed SVG with a line
/// and a legend entry per series.
#[test]
fn model_prints_one_json_object_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("model.svg");
    let svg_arg = svg_path.to_str().unwrap();
    let m = bench_json(&[
        "bench", "model", "--nodes", "2..3", "--rounds", "5", "--warmup", "1", "--json", "--pin",
        "none", "--plot", svg_arg,
    ]);
    check_header(&m, "model", true);
    check_latency(&m);
    assert_eq!((num(&m, "nodes_from"), num(&m, "nodes_to")), (2.0, 3.0));
    assert_eq!(num(&m, "rounds"), 5.0, "{m:?}");
    let (ts, tr, tp) = (num(&m, "ts_us"), num(&m, "tr_us"), num(&m, "tp_us"));
    assert!(ts >= 0.0 && tr > 0.0 && tp >= 0.0, "{m:?}");
    // The parts are consecutive on one clock: their sum is one exchange.
    let one = num(&m, "model_exchange_us");
    assert!((one - (ts + tr + tp)).abs() < 0.05, "{m:?}");
    assert!(num(&m, "exchange_us") > 0.0 && num(&m, "publish_acked_us") > 0.0);
    let Some(Value::Array(rows)) = m.get("rows") else {
        panic!("no rows in {m:?}");
    };
    assert_eq!(rows.len(), 2, "one row per n: {rows:?}");
    for (row, n) in rows.iter().zip([2.0, 3.0]) {
        let Value::Object(row) = row else {
            panic!("row {row:?} is not an object");
        };
        assert_eq!(num(row, "n"), n);
        assert_eq!(num(row, "exchanges"), n * (n - 1.0) / 2.0);
        assert_eq!(num(row, "calls"), n);
        for (kind, interactions) in [("all_to_all", n * (n - 1.0) / 2.0), ("rpc", n)] {
            let Some(Value::Object(v)) = row.get(kind) else {
                panic!("no {kind:?} in {row:?}");
            };
            let model = num(v, "model_us");
            assert!(
                (model - interactions * one).abs() <= 0.05 * interactions + 0.1,
                "{kind} model {model} should be {interactions}·{one}: {v:?}"
            );
            let (p50, p99) = (num(v, "measured_p50_us"), num(v, "measured_p99_us"));
            assert!(p50 > 0.0 && p50 <= p99, "{kind}: {v:?}");
            assert!(num(v, "pipelined_p50_us") > 0.0, "{kind}: {v:?}");
            assert!(num(v, "ratio") > 0.0, "{kind}: {v:?}");
        }
    }
    assert_eq!(m["plot"], svg_arg, "{m:?}");

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.starts_with("<svg"),
        "not an SVG: {}",
        &svg[..svg.len().min(200)]
    );
    let doc = roxmltree::Document::parse(&svg)
        .unwrap_or_else(|e| panic!("the plot is not well-formed XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let count = |tag: &str| {
        doc.descendants()
            .filter(|n| n.tag_name().name() == tag)
            .count()
    };
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    let series = [
        "all-to-all, model n(n-1)/2·(ts+tr+tp)",
        "all-to-all, measured serial (p50)",
        "all-to-all, measured all in flight (p50)",
        "RPC, model n·(ts+tr+tp)",
        "RPC, measured serial (p50)",
        "RPC, measured all in flight (p50)",
    ];
    for label in series {
        assert!(
            texts.iter().any(|t| t.trim() == label),
            "legend lacks {label:?}: {texts:?}"
        );
    }
    // A line per series and a legend sample per series (dashed ones are
    // drawn as many short lines), a dot per measured serial point.
    assert!(count("polyline") >= 2 * series.len(), "too few lines");
    assert_eq!(count("circle"), 2 * rows.len(), "a dot per measured point");
    for axis in ["n (nodes)", "T per round (µs)"] {
        assert!(
            texts.iter().any(|t| t.trim() == axis),
            "no axis label {axis:?}"
        );
    }
    assert!(
        texts
            .iter()
            .any(|t| t.contains("pin none") && t.contains("TLS on")),
        "the title names the pinning and TLS: {texts:?}"
    );
}

#[test]
fn kv_prints_one_json_object_for_both_modes() {
    let m = bench_json(&[
        "bench",
        "kv",
        "--pin",
        "none",
        "--json",
        "--ops",
        "20",
        "--warmup",
        "5",
        "--seconds",
        "0.2",
        "--inflight",
        "4",
    ]);
    check_header(&m, "kv", true);
    assert_eq!(num(&m, "members"), 3.0);
    let results = m["results"].as_array().expect("results array");
    assert_eq!(
        results.len(),
        8,
        "2 modes × put/get × serial/in flight: {m:?}"
    );
    for r in results {
        let r = r.as_object().unwrap();
        assert!(matches!(
            r["consistency"].as_str(),
            Some("linearizable" | "eventual")
        ));
        assert!(matches!(r["op"].as_str(), Some("put" | "get")));
        assert!(num(r, "ops") >= 1.0 && num(r, "ops_per_sec") > 0.0, "{r:?}");
        check_latency(r);
    }
    // The common schema: the linearizable serial put.
    assert!(num(&m, "p50_us") > 0.0);
}
