//! Turning measurements into output: latency histograms, the fields every
//! result carries, the human table, the JSON object, and the progress line.

use super::pin::{Pin, Placement, Side};
use super::Stop;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Latencies in nanoseconds, up to a minute, 3 significant digits.
pub(crate) struct Latencies {
    hist: Histogram<u64>,
}

impl Latencies {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        })
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns);
    }

    /// Adds another set of latencies (from another task) to these.
    pub(crate) fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub(crate) fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0.5 = median) in µs, not rounded: for
    /// parts well below a microsecond.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// The percentiles every latency result reports.
    pub(crate) fn percentiles(&self) -> Percentiles {
        let us = |ns: u64| round1(ns as f64 / 1000.0);
        Percentiles {
            p50_us: us(self.hist.value_at_quantile(0.5)),
            p90_us: us(self.hist.value_at_quantile(0.9)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
            mean_us: round1(self.hist.mean() / 1000.0),
            min_us: us(self.hist.min()),
        }
    }
}

/// Rounds to one decimal (µs with 0.1 resolution).
pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Latency percentiles in microseconds (one decimal).
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Percentiles {
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
    pub(crate) min_us: f64,
}

impl Percentiles {
    /// Table rows, p50 to max.
    pub(crate) fn rows(&self) -> Vec<(String, String)> {
        let us = |v: f64| format!("{v:.1} µs");
        vec![
            ("p50".into(), us(self.p50_us)),
            ("p90".into(), us(self.p90_us)),
            ("p99".into(), us(self.p99_us)),
            ("p99.9".into(), us(self.p999_us)),
            ("max".into(), us(self.max_us)),
            ("mean".into(), us(self.mean_us)),
        ]
    }
}

/// What every result says first: which workload, where it ran, how.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Header {
    pub(crate) workload: &'static str,
    /// The placement used (`none` when the one asked for was unavailable).
    pub(crate) pin: Pin,
    pub(crate) pin_requested: Pin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pin_note: Option<String>,
    pub(crate) server_cpu: Option<usize>,
    pub(crate) client_cpu: Option<usize>,
    pub(crate) tls: bool,
    pub(crate) size: usize,
}

impl Header {
    pub(crate) fn new(
        workload: &'static str,
        placement: &Placement,
        size: usize,
        tls: bool,
    ) -> Self {
        Self {
            workload,
            pin: placement.effective,
            pin_requested: placement.requested,
            pin_note: placement.note.clone(),
            server_cpu: placement.cpu(Side::Server),
            client_cpu: placement.cpu(Side::Client),
            tls,
            size,
        }
    }
}

/// A finished benchmark, ready to print.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The one JSON object (`--json`).
    pub(crate) json: serde_json::Value,
    /// The table's first line.
    pub(crate) title: String,
    /// The table: label, value.
    pub(crate) rows: Vec<(String, String)>,
}

/// Prints the table or the JSON object to stdout.
pub(crate) fn print(out: &Outcome, json: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", out.json)?;
    } else {
        writeln!(stdout, "{}", out.title)?;
        let width = out.rows.iter().map(|(k, _)| k.chars().count()).max();
        for (k, v) in &out.rows {
            writeln!(stdout, "  {k:<w$}  {v}", w = width.unwrap_or(0))?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// One workload run with TLS and with `--insecure`, and what TLS cost:
/// latency percentiles and the rate, side by side, with the differences.
pub(crate) fn tls_cost(secure: &Outcome, plain: &Outcome) -> anyhow::Result<Outcome> {
    let (s, p) = (&secure.json, &plain.json);
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    let pct = |a: f64, b: f64| round1(if b == 0.0 { 0.0 } else { (a - b) / b * 100.0 });
    let mut cost = serde_json::Map::new();
    let mut rows = Vec::new();
    for (key, label) in [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")] {
        if let (Some(a), Some(b)) = (num(s, key), num(p, key)) {
            cost.insert(key.to_owned(), round1(a - b).into());
            cost.insert(format!("{key}_pct"), pct(a, b).into());
            rows.push((
                label.to_owned(),
                format!(
                    "{a:.1} µs with TLS, {b:.1} µs without ({:+.1} µs, {:+.1}%)",
                    a - b,
                    pct(a, b)
                ),
            ));
        }
    }
    for key in ["calls_per_sec", "msgs_per_sec"] {
        if let (Some(a), Some(b)) = (num(s, key), num(p, key)) {
            cost.insert(format!("{key}_pct"), pct(a, b).into());
            rows.push((
                key.replace("_per_sec", "/s"),
                format!(
                    "{} with TLS, {} without ({:+.1}%)",
                    rate(a),
                    rate(b),
                    pct(a, b)
                ),
            ));
        }
    }
    // Both runs had the same placement; say it as the runs' tables do.
    if let Some(pin) = secure.rows.iter().find(|(label, _)| label == "pin") {
        rows.insert(0, pin.clone());
    }
    let json = serde_json::json!({
        "workload": s.get("workload"),
        "comparison": "tls-vs-insecure",
        "pin": s.get("pin"),
        "tls": s,
        "insecure": p,
        "cost": cost,
    });
    Ok(Outcome {
        json,
        title: format!(
            "{} — the cost of TLS (mutual TLS 1.3 vs --insecure)",
            secure.title
        ),
        rows,
    })
}

/// The result of a serial round-trip workload: `noun` ("calls",
/// "requests") round trips in `elapsed`, their latencies, and `pin` for the
/// table. JSON: the header, `{noun}`, `seconds`, `{noun}_per_sec` and the
/// percentiles.
pub(crate) fn serial_outcome(
    header: Header,
    pin: String,
    noun: &str,
    lat: &Latencies,
    elapsed: std::time::Duration,
    title: String,
) -> anyhow::Result<Outcome> {
    let n = lat.count();
    let secs = elapsed.as_secs_f64();
    let per_sec = round1(n as f64 / secs.max(1e-9));
    let tls = header.tls;
    let percentiles = lat.percentiles();
    let mut json = match serde_json::to_value(&header)? {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    json.insert(noun.to_owned(), n.into());
    json.insert("seconds".to_owned(), ((secs * 1e6).round() / 1e6).into());
    json.insert(format!("{noun}_per_sec"), per_sec.into());
    if let serde_json::Value::Object(p) = serde_json::to_value(&percentiles)? {
        json.extend(p);
    }
    let mut rows = vec![
        ("pin".to_owned(), pin),
        tls_row(tls),
        (
            noun.to_owned(),
            format!("{n} in {secs:.2} s ({} {noun}/s)", rate(per_sec)),
        ),
    ];
    rows.extend(percentiles.rows());
    Ok(Outcome {
        json: serde_json::Value::Object(json),
        title,
        rows,
    })
}

/// The table row saying how links were protected.
pub(crate) fn tls_row(tls: bool) -> (String, String) {
    let how = if tls {
        "on (mutual TLS 1.3)"
    } else {
        "off (--insecure)"
    };
    ("tls".to_owned(), how.to_owned())
}

/// Formats a rate with thousands separators: 123456.7 -> "123 457".
pub(crate) fn rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Counters a benchmark's client side updates for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    phase: AtomicU8,
    done: AtomicU64,
    /// What one tick counts, when it is not a call (see [`Progress::unit`]).
    unit: OnceLock<&'static str>,
}

/// The phases of a run, as [`Progress`] shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Setup = 0,
    Warmup = 1,
    Measuring = 2,
}

impl Progress {
    pub(crate) fn phase(&self, p: Phase) {
        self.done.store(0, Ordering::Relaxed);
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    fn load(&self) -> (Phase, u64) {
        let phase = match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Setup,
            1 => Phase::Warmup,
            _ => Phase::Measuring,
        };
        (phase, self.done.load(Ordering::Relaxed))
    }

    /// Names what one tick counts ("rounds"), for the progress line; calls
    /// unless said otherwise. The first name given stays.
    pub(crate) fn unit(&self, unit: &'static str) {
        let _ = self.unit.set(unit);
    }

    /// One more operation done in the current phase.
    pub(crate) fn tick(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Awaits `fut`, drawing a progress line on stderr while it runs, if stderr
/// is a terminal and the run takes longer than a second.
pub(crate) async fn with_progress<T>(
    label: &str,
    progress: &Progress,
    stop: Stop,
    warmup: u64,
    fut: impl Future<Output = T>,
) -> T {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut measuring_since: Option<Instant> = None;
    let mut shown = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let fut = std::pin::pin!(fut);
    let mut fut = fut;
    let out = loop {
        tokio::select! {
            out = &mut fut => break out,
            _ = tick.tick() => {
                let (phase, done) = progress.load();
                // Read each time: the client side names it once it runs.
                let unit = progress.unit.get().copied().unwrap_or("calls");
                if phase == Phase::Measuring && measuring_since.is_none() {
                    measuring_since = Some(Instant::now());
                }
                if !terminal || started.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let (what, fraction) = match phase {
                    Phase::Setup => ("connecting".to_owned(), None),
                    Phase::Warmup => (format!("warm-up {done}/{warmup}"),
                          Some(done as f64 / warmup.max(1) as f64)),
                    Phase::Measuring => match stop {
                        Stop::Count(n) => (format!("{done}/{n} {unit}"), Some(done as f64 / n as f64)),
                        Stop::After(d) => {
                            let t = measuring_since.map_or(Duration::ZERO, |s| s.elapsed());
                            (format!("{done} {unit}, {:.1}/{:.1} s", t.as_secs_f64(), d.as_secs_f64()),
                             Some(t.as_secs_f64() / d.as_secs_f64()))
                        }
                    },
                };
                let bar = fraction.map_or_else(String::new, |f| {
                    let f = f.clamp(0.0, 1.0);
                    let filled = (f * 30.0).round() as usize;
                    format!("[{}{}] {:>3.0}% ", "#".repeat(filled), "-".repeat(30 - filled), f * 100.0)
                });
                eprint!("\r\x1b[2K{label}: {bar}{what}");
                let _ = std::io::stderr().flush();
                shown = true;
            }
        }
    };
    if shown {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    out
}
