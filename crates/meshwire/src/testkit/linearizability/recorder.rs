//! [`Recorder`]: where concurrent clients log what they did.

use super::{ClientId, History, HistoryError, KvOp, KvOutcome, Operation};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A history being recorded by concurrent clients. Clone it into each
/// client (it is an `Arc`); it can be shared between threads and tasks.
///
/// Times come from one atomic counter, so they are distinct and agree with
/// real time: an operation that finished before another was invoked has
/// the lower tick. Call [`Recorder::invoke`] right before the request
/// leaves the client and [`OpHandle::finish`] right after the answer
/// arrives; anything in between counts as "maybe in effect". An answer
/// that proves the operation never takes effect (a refused write, a failed
/// read) ends it with [`OpHandle::refused`] instead.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    clock: AtomicU64,
    /// Every invoked operation in invocation order; `None` once the
    /// client said it was refused ([`OpHandle::refused`]).
    operations: Mutex<Vec<Option<Operation>>>,
}

impl Shared {
    fn tick(&self) -> u64 {
        // SeqCst: the ticks of all clients must form one order that agrees
        // with what each thread saw happen.
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn operations(&self) -> MutexGuard<'_, Vec<Option<Operation>>> {
        // A client that panicked mid-push leaves a whole Vec behind: the
        // lock's poison carries no broken invariant.
        self.operations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Recorder {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs that `client` invokes `op` now. Until the returned handle is
    /// finished, the operation's outcome is unknown; a handle dropped
    /// unfinished (the client crashed, or its future was cancelled) leaves
    /// it unknown for good, which is right: it may have taken effect.
    pub fn invoke(&self, client: ClientId, op: KvOp) -> OpHandle {
        let invoked = self.shared.tick();
        let mut operations = self.shared.operations();
        let index = operations.len();
        operations.push(Some(Operation {
            client,
            invoked,
            returned: None,
            op,
            outcome: KvOutcome::Unknown,
        }));
        OpHandle {
            shared: Arc::clone(&self.shared),
            index,
        }
    }

    /// What has been recorded so far; operations still in flight are
    /// unknown, refused ones are left out. Fails if an outcome does not
    /// answer its operation (a bug in the test).
    pub fn history(&self) -> Result<History, HistoryError> {
        let operations = self.shared.operations().iter().flatten().cloned().collect();
        History::new(operations)
    }

    /// How many operations have been invoked (refused ones included).
    pub fn len(&self) -> usize {
        self.shared.operations().len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One invoked operation of a [`Recorder`], waiting for its outcome.
#[derive(Debug)]
#[must_use = "finish the operation with its outcome (dropping it records an unknown outcome)"]
pub struct OpHandle {
    shared: Arc<Shared>,
    index: usize,
}

impl OpHandle {
    /// Logs that the operation returned `outcome` now. Pass
    /// [`KvOutcome::Unknown`] when the client gave up (a timeout): the
    /// time is kept for explanations, and the operation may still take
    /// effect later.
    pub fn finish(self, outcome: KvOutcome) {
        let returned = self.shared.tick();
        let mut operations = self.shared.operations();
        if let Some(Some(operation)) = operations.get_mut(self.index) {
            operation.returned = Some(returned);
            operation.outcome = outcome;
        }
    }

    /// Leaves the operation out of the history: the system answered that
    /// it never takes effect (a write refused before it was proposed, or
    /// whose log entry was overwritten), or a read failed and saw nothing.
    ///
    /// Such an operation changes nothing and observed nothing, so leaving
    /// it out is exact, where an unknown outcome would let the checker
    /// assume it took effect, and make the search wider. Only use it when
    /// the answer proves this; when in doubt, finish with
    /// [`KvOutcome::Unknown`].
    pub fn refused(self) {
        if let Some(slot) = self.shared.operations().get_mut(self.index) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::linearizability::{check, Budget, CheckResult};
    use std::collections::HashMap;

    /// A correct map: one lock, one log.
    #[derive(Default)]
    struct LockedMap {
        inner: Mutex<LogAndKeys>,
    }

    /// The last log index handed out, and what each key holds.
    type LogAndKeys = (u64, HashMap<String, (Vec<u8>, u64)>);

    impl LockedMap {
        fn apply(&self, op: &KvOp) -> KvOutcome {
            let mut guard = self.inner.lock().unwrap();
            let (log, map) = &mut *guard;
            match op {
                KvOp::Get { key } => KvOutcome::Got(map.get(key).cloned()),
                KvOp::Put { key, value } => {
                    *log += 1;
                    map.insert(key.clone(), (value.clone(), *log));
                    KvOutcome::Put(*log)
                }
                KvOp::Delete { key } => {
                    *log += 1;
                    let existed = map.remove(key).is_some();
                    KvOutcome::Deleted {
                        existed,
                        version: *log,
                    }
                }
                KvOp::Cas {
                    key,
                    expected,
                    value,
                } => {
                    let current = map.get(key).map_or(0, |(_, version)| *version);
                    if current != *expected {
                        return KvOutcome::Cas(Err(current));
                    }
                    *log += 1;
                    map.insert(key.clone(), (value.clone(), *log));
                    KvOutcome::Cas(Ok(*log))
                }
            }
        }
    }

    #[test]
    fn threads_recording_a_correct_map_pass() {
        let recorder = Recorder::new();
        let map = Arc::new(LockedMap::default());
        let threads: Vec<_> = (0..4u64)
            .map(|client| {
                let recorder = recorder.clone();
                let map = Arc::clone(&map);
                std::thread::spawn(move || {
                    let mut seen = 0;
                    for i in 0..200u64 {
                        let key = format!("k{}", (client + i) % 3);
                        let op = match i % 4 {
                            0 => KvOp::put(key, format!("{client}/{i}")),
                            1 => KvOp::get(key),
                            2 => KvOp::cas(key, seen, format!("cas {client}/{i}")),
                            _ if i % 8 == 3 => KvOp::delete(key),
                            _ => KvOp::get(key),
                        };
                        let call = recorder.invoke(client, op.clone());
                        let outcome = map.apply(&op);
                        if let KvOutcome::Got(Some((_, version))) = outcome {
                            seen = version;
                        }
                        // Some calls "time out": the map applied them, the
                        // client never learns.
                        if i % 17 == 5 {
                            call.finish(KvOutcome::Unknown);
                        } else if i % 19 != 7 {
                            call.finish(outcome);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let history = recorder.history().unwrap();
        assert_eq!(history.len(), 800);
        let result = check(&history, Budget::steps(10_000_000));
        assert_eq!(result, CheckResult::Ok, "{result}");
    }

    #[test]
    fn an_unfinished_operation_is_unknown_and_a_mismatched_outcome_is_refused() {
        let recorder = Recorder::new();
        let dropped = recorder.invoke(1, KvOp::put("k", "a"));
        drop(dropped);
        let history = recorder.history().unwrap();
        assert_eq!(history.operations()[0].outcome, KvOutcome::Unknown);
        assert_eq!(history.operations()[0].returned, None);

        recorder.invoke(2, KvOp::get("k")).finish(KvOutcome::Put(3));
        assert_eq!(
            recorder.history(),
            Err(HistoryError::OutcomeMismatch {
                index: 1,
                op: "get",
                outcome: "put result"
            })
        );
    }

    #[test]
    fn a_refused_operation_is_left_out() {
        let recorder = Recorder::new();
        recorder
            .invoke(1, KvOp::put("k", "a"))
            .finish(KvOutcome::Put(4));
        let refused = recorder.invoke(2, KvOp::put("k", "b"));
        recorder
            .invoke(3, KvOp::get("k"))
            .finish(KvOutcome::Got(Some((b"a".to_vec(), 4))));
        refused.refused();
        assert_eq!(recorder.len(), 3, "a refused operation was still invoked");
        let history = recorder.history().unwrap();
        let clients: Vec<_> = history.operations().iter().map(|o| o.client).collect();
        assert_eq!(clients, [1, 3]);
        assert_eq!(check(&history, Budget::steps(1_000)), CheckResult::Ok);
    }
}
