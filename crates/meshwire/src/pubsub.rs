//! What users hold: received messages and subscriptions.

use crate::engine::Control;
use bytes::Bytes;
use meshwire_proto::wire::{Operation, Subject};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A message received on a subscription (or as a reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) subject: Subject,
    pub(crate) reply_to: Option<Subject>,
    pub(crate) payload: Bytes,
}

impl Message {
    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// The payload (shared with other subscribers, not copied).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Consumes the message, returning the payload.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// Where a reply should go, for requests (see [`crate::Node::respond`]).
    pub fn reply_to(&self) -> Option<&str> {
        self.reply_to.as_ref().map(|s| s.as_str())
    }
}

/// Deliveries queued for a subscription beyond which the node stops
/// granting credit upstream (backpressure reaches the publishers).
pub(crate) const SUB_HIGH_WATER: usize = 8 * 1024;
const SUB_LOW_WATER: usize = SUB_HIGH_WATER / 4;

/// Shared between the engine (producer) and the [`Subscription`].
#[derive(Debug, Default)]
pub(crate) struct SubShared {
    pub(crate) queued: AtomicUsize,
    /// The engine froze credit because of this subscription.
    pub(crate) throttled: AtomicBool,
    /// Set when the router refused or revoked the subscription (its
    /// permissions): which operation, and the subject or service named.
    pub(crate) denied: OnceLock<(Operation, String)>,
}

/// A stream of messages matching a subject pattern. Dropping it ends the
/// subscription.
///
/// Implements [`futures_core::Stream`]; [`Subscription::recv`] is the same
/// without importing a trait.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) sid: u64,
    pub(crate) pattern: Subject,
    pub(crate) rx: mpsc::UnboundedReceiver<Message>,
    pub(crate) shared: Arc<SubShared>,
    pub(crate) ctl: mpsc::UnboundedSender<Control>,
}

impl Subscription {
    /// The next message, or `None` once the subscription ended: the node
    /// shut down, or the router's permissions refused or revoked it
    /// ([`Subscription::error`] tells which).
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Why the node ended this subscription, if it did: the router's
    /// permissions refused it, or a reload of them revoked it
    /// ([`Error::PermissionDenied`](crate::Error::PermissionDenied)).
    /// `None` while it is open or after a shutdown.
    pub fn error(&self) -> Option<crate::Error> {
        self.shared
            .denied
            .get()
            .map(|(op, subject)| crate::Error::PermissionDenied {
                op: *op,
                subject: subject.clone(),
                denied_by: None,
            })
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let r = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &r {
            let before = self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            if before <= SUB_LOW_WATER && self.shared.throttled.swap(false, Ordering::AcqRel) {
                // Caught up: let the engine grant credit again.
                let _ = self.ctl.send(Control::Thaw);
            }
        }
        r
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.ctl.send(Control::Unsubscribe { sid: self.sid });
    }
}

/// The engine's side of a user subscription.
#[derive(Debug)]
pub(crate) struct SubSink {
    pub(crate) tx: mpsc::UnboundedSender<Message>,
    pub(crate) shared: Arc<SubShared>,
}

impl SubSink {
    /// Queues `msg`; returns true when the subscriber is now behind.
    pub(crate) fn push(&self, msg: Message) -> bool {
        // Count before sending: the consumer may receive (and decrement)
        // before this thread runs another instruction.
        let q = self.shared.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if self.tx.send(msg).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if q >= SUB_HIGH_WATER {
            self.shared.throttled.store(true, Ordering::Release);
            return true;
        }
        false
    }
}
