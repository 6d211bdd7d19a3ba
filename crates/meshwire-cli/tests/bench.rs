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
