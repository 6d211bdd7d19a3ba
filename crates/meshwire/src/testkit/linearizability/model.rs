//! The sequential model of one key, as the search steps through it.
//!
//! Values are interned to small ids per key so that a state is a few
//! machine words: the search copies and hashes states constantly.

use std::fmt;

/// A value, interned: equal ids are equal bytes (within one key).
pub(super) type ValueId = u32;

/// An operation as the model sees it: values interned, unknown outcomes
/// as `None`. Unknown `get`s never get here (they say nothing).
#[derive(Debug, Clone, Copy)]
pub(super) enum ModelOp {
    /// A known read.
    Get {
        /// What it saw: a value and its version, or absent.
        seen: Option<(ValueId, u64)>,
    },
    /// A write of `value`, at `version` if known.
    Put {
        value: ValueId,
        version: Option<u64>,
    },
    /// A delete and, if known, (existed, version).
    Delete { outcome: Option<(bool, u64)> },
    /// A compare-and-set and, if known, its result.
    Cas {
        expected: u64,
        value: ValueId,
        outcome: Option<Result<u64, u64>>,
    },
}

/// What one key holds at one point of a linearization.
///
/// A write of unknown outcome that the search decides took effect has a
/// version nobody saw. It is still a log index: above every earlier
/// write's, below every later one's. So the state keeps the highest known
/// version and how many unknown ones came after it: a later known write
/// needs room for them (`version > last_known + pending`). When a read
/// sees the value of the newest unknown write, the read tells its version
/// and the count starts again from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct KeyState {
    /// What the key holds; `None` when absent.
    held: Option<Held>,
    /// The highest version known to have been written (0: none).
    last_known: u64,
    /// Writes of unknown version after `last_known`.
    pending: u32,
}

/// A present value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Held {
    value: ValueId,
    /// `None`: written by the newest of the `pending` unknown writes.
    version: Option<u64>,
}

/// Why an operation cannot take effect in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    /// It saw something (a value, a version, whether the key existed)
    /// that the key does not hold.
    Observation,
    /// A version it returned is not above `floor`: writes before it on
    /// this key already took the log indices up to `floor`.
    Version { version: u64, floor: u64 },
}

impl KeyState {
    /// A key nobody wrote.
    pub(super) const ABSENT: Self = Self {
        held: None,
        last_known: 0,
        pending: 0,
    };

    /// The state after `op` takes effect here, or why it cannot.
    pub(super) fn step(&self, op: ModelOp) -> Result<Self, Rejection> {
        match op {
            ModelOp::Get { seen: None } => match self.held {
                None => Ok(*self),
                Some(_) => Err(Rejection::Observation),
            },
            ModelOp::Get {
                seen: Some((value, version)),
            } => match self.held {
                Some(held) if held.value == value => self.at_version(version),
                _ => Err(Rejection::Observation),
            },
            ModelOp::Put { value, version } => self.write(Some(value), version),
            ModelOp::Delete {
                outcome: Some((existed, version)),
            } => {
                if existed != self.held.is_some() {
                    return Err(Rejection::Observation);
                }
                self.write(None, Some(version))
            }
            ModelOp::Delete { outcome: None } => self.write(None, None),
            ModelOp::Cas {
                expected,
                value,
                outcome: Some(Ok(version)),
            } => self.at_version(expected)?.write(Some(value), Some(version)),
            ModelOp::Cas {
                expected,
                outcome: Some(Err(current)),
                ..
            } => {
                // A cas that saw the expected version must have succeeded.
                if current == expected {
                    return Err(Rejection::Observation);
                }
                self.at_version(current)
            }
            // Unknown: if it can succeed here, it does. "It failed here"
            // changes nothing, which is the same as taking effect after
            // every other operation (its return is at infinity, so the
            // search always tries that place too).
            ModelOp::Cas {
                expected,
                value,
                outcome: None,
            } => match self.at_version(expected) {
                Ok(state) => state.write(Some(value), None),
                Err(_) => Ok(*self),
            },
        }
    }

    /// This state if the key's version is `version` (0: absent), pinning
    /// the version of an unknown write when the key holds one.
    fn at_version(&self, version: u64) -> Result<Self, Rejection> {
        match self.held {
            None if version == 0 => Ok(*self),
            None => Err(Rejection::Observation),
            Some(Held {
                version: Some(held),
                ..
            }) if held == version => Ok(*self),
            Some(Held {
                version: Some(_), ..
            }) => Err(Rejection::Observation),
            Some(Held {
                value,
                version: None,
            }) => {
                // The newest of `pending` unknown writes: the others need
                // distinct indices between `last_known` and it.
                let floor = self.floor().saturating_sub(1);
                if version <= floor {
                    return Err(Rejection::Version { version, floor });
                }
                Ok(Self {
                    held: Some(Held {
                        value,
                        version: Some(version),
                    }),
                    last_known: version,
                    pending: 0,
                })
            }
        }
    }

    /// The state after a write of `value` (`None`: a delete) at `version`
    /// (`None`: unknown).
    fn write(&self, value: Option<ValueId>, version: Option<u64>) -> Result<Self, Rejection> {
        match version {
            Some(version) => {
                let floor = self.floor();
                if version <= floor {
                    return Err(Rejection::Version { version, floor });
                }
                Ok(Self {
                    held: value.map(|value| Held {
                        value,
                        version: Some(version),
                    }),
                    last_known: version,
                    pending: 0,
                })
            }
            None => Ok(Self {
                held: value.map(|value| Held {
                    value,
                    version: None,
                }),
                last_known: self.last_known,
                pending: self.pending.saturating_add(1),
            }),
        }
    }

    /// The lowest log index the writes so far may have taken up to: the
    /// next write's version must be above it.
    fn floor(&self) -> u64 {
        self.last_known.saturating_add(u64::from(self.pending))
    }

    /// Describes the state for an explanation, showing values with `show`.
    pub(super) fn describe<'a, S: fmt::Display>(
        &'a self,
        show: impl Fn(ValueId) -> S + 'a,
    ) -> impl fmt::Display + 'a {
        DescribeState { state: self, show }
    }
}

struct DescribeState<'a, F> {
    state: &'a KeyState,
    show: F,
}

impl<F: Fn(ValueId) -> S, S: fmt::Display> fmt::Display for DescribeState<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let KeyState {
            held,
            last_known,
            pending,
        } = *self.state;
        match held {
            None => f.write_str("the key is absent")?,
            Some(Held {
                value,
                version: Some(version),
            }) => write!(f, "the key holds {} at v{version}", (self.show)(value))?,
            Some(Held {
                value,
                version: None,
            }) => write!(
                f,
                "the key holds {} at the unknown version of an unfinished write",
                (self.show)(value)
            )?,
        }
        match pending {
            0 => write!(f, " (last write v{last_known})"),
            _ => write!(
                f,
                " (last known write v{last_known}, then {pending} unfinished writes)"
            ),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Observation => f.write_str("what it saw is not what the key holds"),
            Self::Version { version, floor } => write!(
                f,
                "its version v{version} is not above v{floor}, taken by earlier writes to the key"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(value: ValueId, version: u64) -> ModelOp {
        ModelOp::Put {
            value,
            version: Some(version),
        }
    }

    #[test]
    fn unknown_writes_leave_room_below_the_next_known_version() {
        let state = KeyState::ABSENT.step(put(1, 5)).unwrap();
        let unknown = ModelOp::Put {
            value: 2,
            version: None,
        };
        let state = state.step(unknown).unwrap().step(unknown).unwrap();
        // Two unknown writes need indices 6 and 7 at least.
        assert_eq!(
            state.step(put(3, 7)),
            Err(Rejection::Version {
                version: 7,
                floor: 7
            })
        );
        assert!(state.step(put(3, 8)).is_ok());
        // The newest unknown write can be seen at v7, not at v6.
        let seen_at = |version| ModelOp::Get {
            seen: Some((2, version)),
        };
        assert!(state.step(seen_at(6)).is_err());
        let pinned = state.step(seen_at(7)).unwrap();
        assert!(pinned.step(seen_at(7)).is_ok());
        assert!(pinned.step(put(3, 8)).is_ok());
    }

    #[test]
    fn an_unknown_cas_takes_effect_only_where_it_can() {
        let state = KeyState::ABSENT.step(put(1, 5)).unwrap();
        let cas = |expected| ModelOp::Cas {
            expected,
            value: 9,
            outcome: None,
        };
        assert_eq!(state.step(cas(4)), Ok(state));
        let after = state.step(cas(5)).unwrap();
        assert!(after.step(ModelOp::Get { seen: Some((9, 6)) }).is_ok());
    }

    #[test]
    fn a_failed_cas_that_saw_its_expected_version_is_rejected() {
        let state = KeyState::ABSENT.step(put(1, 5)).unwrap();
        let failed = ModelOp::Cas {
            expected: 5,
            value: 2,
            outcome: Some(Err(5)),
        };
        assert_eq!(state.step(failed), Err(Rejection::Observation));
    }
}
