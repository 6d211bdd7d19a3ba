//! What a message does once it arrives: routing at routers (local
//! subscribers, one hop to interested routers, queue groups, no-responders),
//! interest propagation between routers, gossip of router addresses, and
//! delivery to user subscriptions.

use super::{Engine, Level, Origin, Peer, PeerKey, SELF};
use crate::transport::Addr;
use bytes::Bytes;
use meshwire_proto::wire::{CloseCode, Lane, Message as Wire, NodeId, Role, Subject};
use std::time::Instant;

impl Engine {
    pub(crate) fn on_link_up(&mut self, now: Instant, idx: u64, peer_fresh: bool) {
        let Some(p) = self.peers.get(&idx) else {
            return;
        };
        let (role, key) = (p.role, p.key.clone());
        match (self.role, role) {
            (Role::Client, _) => {
                self.client_link_up(idx, peer_fresh);
                if peer_fresh {
                    // The router has no record of our subscriptions: state them.
                    let subs: Vec<(u64, Subject, Option<Subject>)> = self
                        .user_subs
                        .iter()
                        .map(|(&sid, s)| (sid, s.pattern.clone(), s.group.clone()))
                        .collect();
                    for (sid, pattern, group) in subs {
                        self.send_to(
                            now,
                            idx,
                            Level::Reliable(Lane::Ordered),
                            Wire::Subscribe {
                                sid,
                                pattern,
                                group,
                            },
                        );
                    }
                }
            }
            (Role::Router, Role::Router) => {
                if peer_fresh {
                    // It knows nothing of ours, and what we knew of its
                    // interest belonged to its previous session.
                    self.remote.remove_all(&idx);
                    let ours: Vec<(Subject, Option<Subject>)> =
                        self.interest.keys().cloned().collect();
                    for (pattern, group) in ours {
                        self.send_to(
                            now,
                            idx,
                            Level::Reliable(Lane::Ordered),
                            Wire::Interest {
                                pattern,
                                group,
                                add: true,
                            },
                        );
                    }
                }
                self.gossip(now);
            }
            (Role::Router, Role::Client) => {
                if peer_fresh && matches!(key, PeerKey::Node(_)) {
                    // A new incarnation of the client: its old subscriptions
                    // died with the old one. (Named sessions keep theirs.)
                    self.drop_client_subs(now, idx);
                }
                // First thing on every link: what the client may do.
                self.apply_rules(now, idx);
                let routers = self.router_list();
                self.send_to(
                    now,
                    idx,
                    Level::Reliable(Lane::Ordered),
                    Wire::Peers { routers },
                );
            }
        }
    }

    pub(crate) fn on_message(&mut self, now: Instant, idx: u64, lane: Option<Lane>, msg: Wire) {
        let level = match lane {
            Some(l) => Level::Reliable(l),
            None => Level::BestEffort,
        };
        let role = self.peers.get(&idx).map(|p| p.role);
        match (self.role, role, msg) {
            (
                Role::Router,
                Some(Role::Client),
                Wire::Publish {
                    subject,
                    reply_to,
                    payload,
                },
            ) => {
                if let Err(why) = self.check_publish(&subject, reply_to.as_ref(), payload.len()) {
                    return self.protocol_error(idx, &why);
                }
                if let Some(d) = self.refused(idx, |r| r.check_publish(&subject)) {
                    return self.deny(now, idx, d, subject, None, reply_to);
                }
                self.route(now, Origin::Client(idx), level, subject, reply_to, payload);
            }
            (
                Role::Router,
                Some(Role::Client),
                Wire::Subscribe {
                    sid,
                    pattern,
                    group,
                },
            ) => {
                if let Err(e) = Subject::pattern(pattern.as_str()) {
                    return self.protocol_error(idx, &format!("bad subscription: {e}"));
                }
                if let Some(d) = self.refused(idx, |r| r.check_subscribe(&pattern)) {
                    // A restated subscription the rules no longer allow
                    // goes too.
                    self.client_unsubscribe(now, idx, sid);
                    return self.deny(now, idx, d, pattern, Some(sid), None);
                }
                self.client_subscribe(now, idx, sid, pattern, group);
            }
            (Role::Router, Some(Role::Client), Wire::Unsubscribe { sid }) => {
                self.client_unsubscribe(now, idx, sid);
            }
            (
                Role::Router,
                Some(Role::Router),
                Wire::Forward {
                    subject,
                    reply_to,
                    payload,
                    plain,
                    groups,
                },
            ) => self.deliver_forwarded(now, level, subject, reply_to, payload, plain, &groups),
            (
                Role::Router,
                Some(Role::Router),
                Wire::Interest {
                    pattern,
                    group,
                    add,
                },
            ) => {
                if add {
                    self.remote.insert(&pattern, group.as_ref(), idx);
                } else {
                    self.remote.remove(&pattern, group.as_ref(), &idx);
                }
            }
            (Role::Router, Some(Role::Router), Wire::Peers { routers }) => {
                self.learn_routers(routers)
            }
            (
                Role::Client,
                _,
                Wire::Deliver {
                    sid,
                    subject,
                    reply_to,
                    payload,
                },
            ) => self.deliver_user(sid, subject, reply_to, payload),
            (Role::Client, _, Wire::NoResponders { reply_to }) => self.on_no_responders(&reply_to),
            (Role::Client, _, Wire::Grants { rules }) => self.on_grants(rules),
            (
                Role::Client,
                _,
                Wire::Denied {
                    op,
                    subject,
                    sid,
                    reply_to,
                },
            ) => self.on_denied(op, subject, sid, reply_to),
            (Role::Client, _, Wire::Peers { routers }) => {
                let addrs: Vec<String> =
                    routers.iter().map(|(_, a)| a.as_str().to_owned()).collect();
                self.upstream_addrs.send_modify(|list| {
                    for a in addrs {
                        if !list.contains(&a) {
                            list.push(a);
                        }
                    }
                });
            }
            (_, _, other) => {
                let what = match other {
                    Wire::Publish { .. } => "Publish",
                    Wire::Forward { .. } => "Forward",
                    Wire::Deliver { .. } => "Deliver",
                    Wire::Subscribe { .. } => "Subscribe",
                    Wire::Unsubscribe { .. } => "Unsubscribe",
                    Wire::Interest { .. } => "Interest",
                    Wire::Peers { .. } => "Peers",
                    Wire::NoResponders { .. } => "NoResponders",
                    Wire::Grants { .. } => "Grants",
                    Wire::Denied { .. } => "Denied",
                };
                self.protocol_error(idx, &format!("{what} is not valid from this peer"));
            }
        }
    }

    /// What a router accepts from a client: literal subjects and payloads
    /// within the limit (a larger one could not be delivered onward).
    fn check_publish(
        &self,
        subject: &Subject,
        reply_to: Option<&Subject>,
        len: usize,
    ) -> Result<(), String> {
        if len > self.cfg.max_payload {
            return Err(format!(
                "payload of {len} bytes exceeds the limit of {}",
                self.cfg.max_payload
            ));
        }
        for s in std::iter::once(subject).chain(reply_to) {
            if let Err(e) = meshwire_proto::wire::check_literal(s.as_str()) {
                return Err(format!("bad subject: {e}"));
            }
        }
        Ok(())
    }

    fn protocol_error(&mut self, idx: u64, why: &str) {
        metrics::counter!("meshwire_protocol_errors_total").increment(1);
        if let Some(p) = self.peers.get_mut(&idx) {
            tracing::warn!(peer = %p.node, why, "protocol error; closing link");
            p.session.close(CloseCode::ProtocolError, why);
        }
        self.touch(idx);
    }

    /// Which member of a queue group takes a message: round robin over
    /// `local` (this node and its clients) then `routers`, skipping members
    /// whose link is down while any other is up. A message for a member
    /// that is away waits for it (its session is kept for reconnection), so
    /// picking one while others could answer stalled requests for the whole
    /// retention window after a router died. With every member away, the
    /// round-robin pick waits for its return.
    fn pick_member(&self, local: &[(u64, u64)], routers: &[u64]) -> usize {
        let total = local.len() + routers.len();
        let start = self.rr % total;
        let up = |i: usize| {
            let idx = if i < local.len() {
                local[i].0
            } else {
                routers[i - local.len()]
            };
            idx == SELF || self.peers.get(&idx).is_some_and(|p| p.session.is_up())
        };
        (0..total)
            .map(|k| (start + k) % total)
            .find(|&i| up(i))
            .unwrap_or(start)
    }

    /// Routes a publication entering at this router.
    pub(crate) fn route(
        &mut self,
        now: Instant,
        origin: Origin,
        level: Level,
        subject: Subject,
        reply_to: Option<Subject>,
        payload: Bytes,
    ) {
        let mut lm = std::mem::take(&mut self.m_local);
        let mut rm = std::mem::take(&mut self.m_remote);
        self.local_subs.matches(&subject, &mut lm);
        self.remote.matches(&subject, &mut rm);
        let matched = !lm.is_empty() || !rm.is_empty();
        for &(p, sid) in &lm.plain {
            self.deliver(now, p, sid, level, &subject, &reply_to, &payload);
        }
        // One Forward per interested router, naming the groups it serves.
        // The list is kept between calls (its capacity, not its contents);
        // a group list is allocated only when a group is forwarded.
        let mut fwd = std::mem::take(&mut self.fwd);
        fwd.extend(rm.plain.iter().map(|&r| (r, true, Vec::new())));
        // Queue groups: one member per group, chosen round robin over the
        // local members and the routers that have members, so work spreads
        // over the whole mesh.
        let (mut li, mut ri) = (0, 0);
        while li < lm.groups.len() || ri < rm.groups.len() {
            let lg = lm
                .groups
                .get(li)
                .filter(|l| rm.groups.get(ri).is_none_or(|r| l.0 <= r.0));
            let rg = rm
                .groups
                .get(ri)
                .filter(|r| lm.groups.get(li).is_none_or(|l| r.0 <= l.0));
            let local: &[(u64, u64)] = lg.map(|g| g.1.as_slice()).unwrap_or(&[]);
            let routers: &[u64] = rg.map(|g| g.1.as_slice()).unwrap_or(&[]);
            let Some(group) = lg.map(|g| &g.0).or(rg.map(|g| &g.0)) else {
                break;
            };
            self.rr = self.rr.wrapping_add(1);
            let pick = self.pick_member(local, routers);
            if pick < local.len() {
                let (p, sid) = local[pick];
                self.deliver(now, p, sid, level, &subject, &reply_to, &payload);
            } else {
                let r = routers[pick - local.len()];
                match fwd.iter_mut().find(|f| f.0 == r) {
                    Some(f) => f.2.push(group.clone()),
                    None => fwd.push((r, false, vec![group.clone()])),
                }
            }
            li += usize::from(lg.is_some());
            ri += usize::from(rg.is_some());
        }
        for (r, plain, groups) in fwd.drain(..) {
            metrics::counter!("meshwire_messages_forwarded_total").increment(1);
            self.send_to(
                now,
                r,
                level,
                Wire::Forward {
                    subject: subject.clone(),
                    reply_to: reply_to.clone(),
                    payload: payload.clone(),
                    plain,
                    groups,
                },
            );
        }
        self.fwd = fwd;
        self.m_local = lm;
        self.m_remote = rm;
        if !matched {
            metrics::counter!("meshwire_messages_unmatched_total").increment(1);
            if let Some(reply_to) = reply_to {
                match origin {
                    Origin::Local => self.on_no_responders(&reply_to),
                    Origin::Client(idx) => self.send_to(
                        now,
                        idx,
                        Level::Reliable(Lane::Ordered),
                        Wire::NoResponders { reply_to },
                    ),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the parts of one message
    fn deliver_forwarded(
        &mut self,
        now: Instant,
        level: Level,
        subject: Subject,
        reply_to: Option<Subject>,
        payload: Bytes,
        plain: bool,
        groups: &[Subject],
    ) {
        let mut lm = std::mem::take(&mut self.m_local);
        self.local_subs.matches(&subject, &mut lm);
        if plain {
            for &(p, sid) in &lm.plain {
                self.deliver(now, p, sid, level, &subject, &reply_to, &payload);
            }
        }
        for g in groups {
            if let Some((_, members)) = lm.groups.iter().find(|(name, _)| name == g) {
                self.rr = self.rr.wrapping_add(1);
                let (p, sid) = members[self.rr % members.len()];
                self.deliver(now, p, sid, level, &subject, &reply_to, &payload);
            } else {
                metrics::counter!("meshwire_messages_unmatched_total").increment(1);
            }
        }
        self.m_local = lm;
    }

    #[allow(clippy::too_many_arguments)] // the parts of one message
    fn deliver(
        &mut self,
        now: Instant,
        p: u64,
        sid: u64,
        level: Level,
        subject: &Subject,
        reply_to: &Option<Subject>,
        payload: &Bytes,
    ) {
        if p == SELF {
            self.deliver_user(sid, subject.clone(), reply_to.clone(), payload.clone());
        } else {
            self.send_to(
                now,
                p,
                level,
                Wire::Deliver {
                    sid,
                    subject: subject.clone(),
                    reply_to: reply_to.clone(),
                    payload: payload.clone(),
                },
            );
        }
    }

    fn client_subscribe(
        &mut self,
        now: Instant,
        idx: u64,
        sid: u64,
        pattern: Subject,
        group: Option<Subject>,
    ) {
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        if let Some(old) = p.subs.get(&sid) {
            if old.0 == pattern && old.1 == group {
                return; // a retransmitted or restated subscription
            }
            self.client_unsubscribe(now, idx, sid);
        }
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        p.subs.insert(sid, (pattern.clone(), group.clone()));
        if self.local_subs.insert(&pattern, group.as_ref(), (idx, sid)) {
            self.interest_add(now, &pattern, group.as_ref());
        }
    }

    pub(crate) fn client_unsubscribe(&mut self, now: Instant, idx: u64, sid: u64) {
        let Some((pattern, group)) = self.peers.get_mut(&idx).and_then(|p| p.subs.remove(&sid))
        else {
            return;
        };
        if self
            .local_subs
            .remove(&pattern, group.as_ref(), &(idx, sid))
        {
            self.interest_remove(now, &pattern, group.as_ref());
        }
    }

    fn drop_client_subs(&mut self, now: Instant, idx: u64) {
        let sids: Vec<u64> = self
            .peers
            .get(&idx)
            .map(|p| p.subs.keys().copied().collect())
            .unwrap_or_default();
        for sid in sids {
            self.client_unsubscribe(now, idx, sid);
        }
    }

    /// Forgets what a dropped peer contributed to routing.
    pub(crate) fn drop_peer_routes(&mut self, idx: u64, p: &Peer) {
        let now = Instant::now();
        match p.role {
            Role::Router => {
                self.remote.remove_all(&idx);
                self.gossip(now);
            }
            Role::Client => {
                for (&sid, (pattern, group)) in &p.subs {
                    if self.local_subs.remove(pattern, group.as_ref(), &(idx, sid)) {
                        self.interest_remove(now, pattern, group.as_ref());
                    }
                }
            }
        }
    }

    pub(crate) fn interest_add(
        &mut self,
        now: Instant,
        pattern: &Subject,
        group: Option<&Subject>,
    ) {
        let n = self
            .interest
            .entry((pattern.clone(), group.cloned()))
            .or_insert(0);
        *n += 1;
        if *n == 1 {
            self.broadcast_interest(now, pattern, group, true);
        }
    }

    pub(crate) fn interest_remove(
        &mut self,
        now: Instant,
        pattern: &Subject,
        group: Option<&Subject>,
    ) {
        let key = (pattern.clone(), group.cloned());
        let Some(n) = self.interest.get_mut(&key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.interest.remove(&key);
            self.broadcast_interest(now, pattern, group, false);
        }
    }

    fn broadcast_interest(
        &mut self,
        now: Instant,
        pattern: &Subject,
        group: Option<&Subject>,
        add: bool,
    ) {
        let routers: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.role == Role::Router)
            .map(|(&i, _)| i)
            .collect();
        for r in routers {
            self.send_to(
                now,
                r,
                Level::Reliable(Lane::Ordered),
                Wire::Interest {
                    pattern: pattern.clone(),
                    group: group.cloned(),
                    add,
                },
            );
        }
    }

    /// This router and every router it has a live link to.
    fn router_list(&self) -> Vec<(NodeId, Subject)> {
        let mut list: Vec<(NodeId, Subject)> = self
            .advertise
            .iter()
            .map(|a| (self.id, a.clone()))
            .collect();
        for p in self.peers.values() {
            if p.role == Role::Router && p.session.is_up() {
                if let Some(l) = &p.listen {
                    list.push((p.node, l.clone()));
                }
            }
        }
        list
    }

    /// Tells every peer which routers this one knows, so routers complete
    /// the full mesh and clients learn where to fail over.
    pub(crate) fn gossip(&mut self, now: Instant) {
        let routers = self.router_list();
        let idxs: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session.is_up())
            .map(|(&i, _)| i)
            .collect();
        for i in idxs {
            self.send_to(
                now,
                i,
                Level::Reliable(Lane::Ordered),
                Wire::Peers {
                    routers: routers.clone(),
                },
            );
        }
    }

    fn learn_routers(&mut self, routers: Vec<(NodeId, Subject)>) {
        for (id, addr) in routers {
            if id == self.id {
                continue;
            }
            self.known_routers.insert(id, addr.clone());
            let linked = self
                .peer_by_key
                .get(&PeerKey::Node(id))
                .and_then(|i| self.peers.get(i))
                .is_some_and(|p| p.session.is_up());
            // The smaller id dials, so a pair that learns of each other at
            // the same time makes one link, not two.
            if !linked && self.id < id {
                match Addr::parse(addr.as_str()) {
                    Ok(a) => self.start_dialer(a, false),
                    Err(e) => {
                        tracing::warn!(peer = %id, error = %e, "peer advertised a bad address")
                    }
                }
            }
        }
    }
}
