//! Where the sides of a run go: the same `--pin` plan as `meshwire bench`
//! (crates/meshwire-cli/src/cmd/bench/pin.rs), so that a row of the table
//! compares two programs placed alike. That module is private to the CLI,
//! hence this small copy.

use anyhow::Context as _;
use std::future::Future;

/// `--pin`: how the sides are placed on CPUs.
#[derive(clap::ValueEnum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Pin {
    /// Every side on CPU 0.
    Same,
    /// The server side on CPU 1, the client side on CPU 0.
    Split,
    /// No pinning: the OS decides.
    None,
}

/// Which side of a run a thread (or process) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Servers, responders, receivers, subscribers, nats-server: what answers.
    Server,
    /// Callers, requesters, senders, publishers: what drives the load.
    Client,
}

/// The placement a run uses, which falls back to `none` (with a note) when
/// the machine cannot pin as asked.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) requested: Pin,
    pub(crate) effective: Pin,
    pub(crate) note: Option<String>,
}

impl Placement {
    /// The CPU a side is pinned to, if any.
    pub(crate) fn cpu(&self, side: Side) -> Option<usize> {
        match (self.effective, side) {
            (Pin::None, _) => None,
            (Pin::Same, _) | (Pin::Split, Side::Client) => Some(0),
            (Pin::Split, Side::Server) => Some(1),
        }
    }
}

/// Checks that the CPUs `requested` needs exist and may be pinned to.
pub(crate) fn plan(requested: Pin) -> Placement {
    let needed: &[usize] = match requested {
        Pin::None => &[],
        Pin::Same => &[0],
        Pin::Split => &[0, 1],
    };
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    match needed.iter().find(|c| !available.contains(c)) {
        Some(missing) => Placement {
            requested,
            effective: Pin::None,
            note: Some(format!(
                "--pin needs CPU {missing}, this process may only use {available:?}; running unpinned"
            )),
        },
        None => Placement {
            requested,
            effective: requested,
            note: None,
        },
    }
}

/// Pins the calling thread as `placement` says for `side`.
fn pin_current(placement: &Placement, side: Side) -> anyhow::Result<()> {
    if let Some(id) = placement.cpu(side) {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            anyhow::bail!("could not pin a {side:?} thread to CPU {id}; rerun with --pin none");
        }
    }
    Ok(())
}

/// Runs `f` on a new OS thread pinned for `side` (blocking peers: std TCP,
/// ZeroMQ, whose own I/O thread is started from there and so inherits the
/// pinning).
pub(crate) fn spawn_blocking_side<T, F>(
    placement: &Placement,
    side: Side,
    f: F,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let placement = placement.clone();
    std::thread::Builder::new()
        .name(format!("compare-{side:?}"))
        .spawn(move || {
            pin_current(&placement, side)?;
            f()
        })
        .context("cannot start a benchmark thread")
}

/// Runs `f` on a new OS thread pinned for `side`, on a current-thread tokio
/// runtime, so every task of that side (and every task a peer library
/// spawns from it) runs on that one thread, as `meshwire bench` does.
pub(crate) fn spawn_side<T, F, Fut>(
    placement: &Placement,
    side: Side,
    f: F,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    spawn_blocking_side(placement, side, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a tokio runtime")?
            .block_on(f())
    })
}

/// Waits for a side thread, turning a panic into an error.
pub(crate) fn join<T>(h: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))?
}
