//! Where the sides of a benchmark run: the `--pin` plan, and the pinned
//! single-threaded runtimes the sides run on.

use anyhow::Context as _;
use std::future::Future;
use tokio::sync::oneshot;

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

impl Pin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Pin::Same => "same",
            Pin::Split => "split",
            Pin::None => "none",
        }
    }
}

/// Which side of a benchmark a thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The router, servers, responders, subscribers: what answers.
    Server,
    /// The callers, publishers, requesters: what drives the load.
    Client,
}

/// The placement a run actually uses (which may differ from the one asked
/// for when the machine cannot give it).
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    /// What `--pin` asked for.
    pub(crate) requested: Pin,
    /// What the run uses.
    pub(crate) effective: Pin,
    /// Why they differ, for the output.
    pub(crate) note: Option<String>,
}

impl Placement {
    /// The CPU a side's thread is pinned to, if any.
    pub(crate) fn cpu(&self, side: Side) -> Option<usize> {
        match (self.effective, side) {
            (Pin::None, _) => None,
            (Pin::Same, _) | (Pin::Split, Side::Client) => Some(0),
            (Pin::Split, Side::Server) => Some(1),
        }
    }

    /// A human description, e.g. "split (server on CPU 1, client on CPU 0)".
    pub(crate) fn describe(&self) -> String {
        let place = |s| match self.cpu(s) {
            Some(c) => format!("CPU {c}"),
            None => "any CPU".to_owned(),
        };
        let mut d = format!(
            "{} (server on {}, client on {})",
            self.effective.as_str(),
            place(Side::Server),
            place(Side::Client)
        );
        if self.requested != self.effective {
            d.push_str(&format!(
                "; --pin {} was asked for",
                self.requested.as_str()
            ));
        }
        d
    }
}

/// Checks that the CPUs `requested` needs exist and that this process may
/// pin threads to them; falls back to no pinning (with a note) when not.
pub(crate) fn plan(requested: Pin) -> Placement {
    let needed: &[usize] = match requested {
        Pin::None => &[],
        Pin::Same => &[0],
        Pin::Split => &[0, 1],
    };
    let fallback = |why: String| Placement {
        requested,
        effective: Pin::None,
        note: Some(format!(
            "--pin {} {why}; running unpinned (pin none) instead",
            requested.as_str()
        )),
    };
    if !needed.is_empty() {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if let Some(missing) = needed.iter().find(|c| !available.contains(c)) {
            return fallback(format!(
                "needs CPU {missing}, but this process may only run on CPUs {available:?} \
                 (use --pin same on a single CPU, or widen the CPU set, e.g. taskset)"
            ));
        }
        // Pinning can still be refused (a container's policy): try it on a
        // throwaway thread so the benchmark's own threads never half-pin.
        let probe = needed.to_vec();
        let ok = std::thread::spawn(move || {
            probe
                .into_iter()
                .all(|id| core_affinity::set_for_current(core_affinity::CoreId { id }))
        })
        .join()
        .unwrap_or(false);
        if !ok {
            return fallback(
                "could not pin a thread (the OS refused sched_setaffinity)".to_owned(),
            );
        }
    }
    Placement {
        requested,
        effective: requested,
        note: None,
    }
}

/// A side running on its own OS thread with a single-threaded runtime.
pub(crate) struct SideThread<T> {
    name: &'static str,
    handle: std::thread::JoinHandle<()>,
    done: oneshot::Receiver<anyhow::Result<T>>,
}

/// Starts `f` on a new OS thread, pinned as `placement` says for `side`,
/// on a current-thread tokio runtime (so every task of that side runs on
/// that one pinned thread).
pub(crate) fn spawn_side<T, F, Fut>(
    name: &'static str,
    placement: &Placement,
    side: Side,
    f: F,
) -> anyhow::Result<SideThread<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let cpu = placement.cpu(side);
    let (tx, done) = oneshot::channel();
    let handle = std::thread::Builder::new()
        .name(format!("bench-{name}"))
        .spawn(move || {
            let r = (|| {
                if let Some(id) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        anyhow::bail!(
                            "could not pin the {name} thread to CPU {id}; \
                             rerun with --pin none"
                        );
                    }
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .with_context(|| {
                        format!("cannot start the {name} runtime; check the process limits")
                    })?;
                rt.block_on(f())
            })();
            let _ = tx.send(r);
        })
        .with_context(|| {
            format!("cannot start the {name} thread; check the process and thread limits")
        })?;
    Ok(SideThread { name, handle, done })
}

impl<T> SideThread<T> {
    /// Waits for the side to finish and returns what it returned.
    pub(crate) async fn finish(self) -> anyhow::Result<T> {
        let r = self.done.await;
        let name = self.name;
        let handle = self.handle;
        // The thread sends last thing, so this join is immediate.
        let joined = tokio::task::spawn_blocking(move || handle.join()).await;
        match (r, joined) {
            (Ok(r), Ok(Ok(()))) => r,
            (_, Ok(Err(panic))) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_owned());
                anyhow::bail!(
                    "the bench {name} thread panicked: {msg}; this is a bug, please report it \
                     with the command line"
                )
            }
            (r, _) => r.unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "the bench {name} thread ended without a result; this is a bug, please \
                     report it with the command line"
                ))
            }),
        }
    }
}
