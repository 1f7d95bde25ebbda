//! Shared subscriptions across cores (MQTT 5.0 section 4.8.2; accepted from 3.1.1 clients
//! too, as most brokers do).
//!
//! A share group (`$share/{ShareName}/{filter}`) has members on any core, because its
//! members are sessions and a session lives on the core that owns its client id. Two
//! tables make one delivery per group out of that:
//!
//! * `local`: this core's members, grouped, each with its subscription and whether its
//!   client is connected. The receiving core picks one member round-robin.
//! * `placements`: for every group on any core, how many members (and connected members)
//!   each core holds, replicated to every core by [`CoreMsg::ShareCount`]. The core that
//!   routes a message picks one core per matching group (weighted round robin, see
//!   [`GroupPlacement`]) and sends it there as [`CoreMsg::Shared`], or delivers it itself.
//!
//! When the chosen core cannot deliver (its members left, or went offline, after the pick
//! was made elsewhere) it prefers, in order: a connected local member; another core with
//! a connected member (the message is passed on once, flagged `redirected`); an offline
//! local member (the message queues in its session); another core with any member. A
//! message that finds none of these is dropped and counted (`undeliverable`).
//!
//! Across nodes (`nodes`): a core's first member of a group announces it as the node's
//! interest, its last withdraws it; the publishing node picks one node per group, and
//! [`Groups`] says which of this node's groups a message is for.
//!
//! Invariants: a message goes to at most one member of each matching group however many
//! cores (and nodes) hold members; members of different groups each get their copy; No Local does
//! not apply [MQTT-3.8.3-4] and retained messages are not sent on subscribing (MQTT 5.0
//! 3.3.1.3 sends them for new Non-shared Subscriptions only).

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use super::publish::{Groups, Recipient};
use super::{Broker, CoreMsg, Effects};
use crate::ownership::CoreId;
use crate::session::{Message, Subscription};
use crate::topic::{
    GroupPlacement, ParsedFilter, ShareName, SharedFilter, SharedSubscriptions, SubscriptionTree,
    TopicFilter, TopicName, SHARE_PREFIX,
};

/// One session's membership of a share group on its owner core.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub subscription: Subscription,
    /// Whether the session's client is connected: connected members are preferred.
    pub online: bool,
}

/// A group's row of the replicated placement table.
struct Placement {
    /// The group's filter, which the tree walk does not hand back.
    filter: TopicFilter,
    cores: GroupPlacement,
}

/// The shared subscriptions as one core sees them.
pub(crate) struct Shares {
    cores: usize,
    /// This core's members.
    pub local: SharedSubscriptions<ByteString, Member>,
    /// Every group on any core and its members per core.
    placements: SubscriptionTree<ShareName, Placement>,
    /// Messages for a group that no member could take.
    pub undeliverable: u64,
}

impl Shares {
    pub fn new(cores: usize) -> Shares {
        Shares {
            cores,
            local: SharedSubscriptions::new(),
            placements: SubscriptionTree::new(),
            undeliverable: 0,
        }
    }

    /// Records that `core` holds `members` members of `group`, `online` of them connected.
    pub fn set_count(&mut self, core: CoreId, group: &SharedFilter, members: u32, online: u32) {
        if let Some(row) = self.placements.get_mut(&group.filter, &group.group) {
            row.cores.set(core.0, members, online);
            if row.cores.is_empty() {
                let _ = self.placements.remove(&group.filter, &group.group);
            }
            return;
        }
        if members == 0 {
            return;
        }
        let mut cores = GroupPlacement::new(self.cores);
        cores.set(core.0, members, online);
        let row = Placement {
            filter: group.filter.clone(),
            cores,
        };
        let _ = self
            .placements
            .insert(&group.filter, group.group.clone(), row);
    }

    pub(super) fn counts(&self, core: CoreId, group: &SharedFilter) -> (u32, u32) {
        self.placements
            .get(&group.filter, &group.group)
            .map_or((0, 0), |row| row.cores.counts(core.0))
    }

    /// Whether any core of this node holds a member of `group`.
    pub fn has_group(&self, group: &SharedFilter) -> bool {
        self.placements.get(&group.filter, &group.group).is_some()
    }

    /// Groups known anywhere.
    #[cfg(test)]
    pub fn group_count(&self) -> usize {
        self.placements.len()
    }
}

/// The shared filter a session's subscription key stands for, if it is one.
pub(super) fn shared_filter(raw: &ByteString) -> Option<SharedFilter> {
    if !raw.starts_with(SHARE_PREFIX) {
        return None;
    }
    match ParsedFilter::parse(raw.clone()) {
        Ok(ParsedFilter::Shared(shared)) => Some(shared),
        _ => None,
    }
}

impl Broker {
    /// Adds (or replaces) `client_id`'s membership of `group`. Returns whether it is new.
    pub(super) fn add_shared(
        &mut self,
        client_id: &ByteString,
        group: &SharedFilter,
        subscription: Subscription,
        effects: &mut Effects,
    ) -> bool {
        let online = self.sessions.get(client_id).is_some_and(|slot| slot.online);
        let member = Member {
            subscription,
            online,
        };
        let replaced = self
            .shares
            .local
            .insert(group, client_id.clone(), member)
            .replaced;
        let (members, connected) = self.shares.counts(self.id, group);
        let (members, connected) = match &replaced {
            None => (members + 1, connected + u32::from(online)),
            Some(old) => (
                members,
                (connected + u32::from(online)).saturating_sub(u32::from(old.online)),
            ),
        };
        if replaced.is_none() && members == 1 {
            // This core's first member: the node has the group (the bridge announces it
            // once per node, `crate::nats`), so other nodes' publishes may pick it.
            effects
                .node_interest
                .push((ByteString::from(group.to_string()), true));
        }
        self.share_count_changed(group, members, connected, effects);
        replaced.is_none()
    }

    /// Ends `client_id`'s membership of `group`, if it had one.
    pub(super) fn remove_shared(
        &mut self,
        client_id: &ByteString,
        group: &SharedFilter,
        effects: &mut Effects,
    ) {
        let Some(old) = self.shares.local.remove(group, client_id).removed else {
            return;
        };
        let (members, connected) = self.shares.counts(self.id, group);
        let (members, connected) = (
            members.saturating_sub(1),
            connected.saturating_sub(u32::from(old.online)),
        );
        if members == 0 {
            effects
                .node_interest
                .push((ByteString::from(group.to_string()), false));
        }
        self.share_count_changed(group, members, connected, effects);
    }

    /// The client of a session connected (`online`) or went away: its share groups now
    /// prefer, or pass over, it. Idempotent.
    pub(super) fn share_presence(
        &mut self,
        client_id: &ByteString,
        online: bool,
        effects: &mut Effects,
    ) {
        let Some(slot) = self.sessions.get(client_id) else {
            return;
        };
        let groups: Vec<SharedFilter> = slot
            .session
            .subscriptions
            .keys()
            .filter_map(shared_filter)
            .collect();
        for group in groups {
            let Some(member) = self.shares.local.get_mut(&group, client_id) else {
                continue;
            };
            if member.online == online {
                continue;
            }
            member.online = online;
            let (members, connected) = self.shares.counts(self.id, &group);
            let connected = if online {
                connected + 1
            } else {
                connected.saturating_sub(1)
            };
            self.share_count_changed(&group, members, connected, effects);
        }
    }

    fn share_count_changed(
        &mut self,
        group: &SharedFilter,
        members: u32,
        online: u32,
        effects: &mut Effects,
    ) {
        self.shares.set_count(self.id, group, members, online);
        self.broadcast(effects, |from| CoreMsg::ShareCount {
            from,
            group: group.clone(),
            members,
            online,
        });
    }

    /// Picks, for every share group whose filter matches and that `groups` takes, the core
    /// that delivers to it, and delivers or sends the message accordingly.
    /// Returns whether any share group matched (or was picked on another node).
    pub(super) fn route_shared(
        &mut self,
        topic: &TopicName,
        message: &Arc<Message>,
        groups: Groups<'_>,
        now: Instant,
        effects: &mut Effects,
    ) -> bool {
        let (away, named) = match groups {
            Groups::Except(away) => (!away.is_empty(), 0),
            Groups::Only(named) => (false, named.len()),
        };
        if self.shares.placements.is_empty() {
            // Groups another node picked this one for, whose members all left since.
            self.shares.undeliverable += named as u64;
            return away;
        }
        let mut picks: Vec<(CoreId, SharedFilter)> = Vec::new();
        self.shares.placements.matches_mut(topic, |group, row| {
            let shared = SharedFilter {
                group: group.clone(),
                filter: row.filter.clone(),
            };
            if !groups.takes(&shared) {
                return;
            }
            if let Some(core) = row.cores.pick(None) {
                picks.push((CoreId(core), shared));
            }
        });
        self.shares.undeliverable += named.saturating_sub(picks.len()) as u64;
        picks.sort_by_key(|(core, _)| *core);
        let matched = away || !picks.is_empty();
        let mut picks = picks.into_iter().peekable();
        while let Some((core, group)) = picks.next() {
            if core == self.id {
                self.deliver_shared(message, &group, false, now, effects);
                continue;
            }
            let mut groups = vec![group];
            while let Some((_, group)) = picks.next_if(|(next, _)| *next == core) {
                groups.push(group);
            }
            effects.to_cores.push((
                core,
                CoreMsg::Shared {
                    message: message.clone(),
                    groups,
                    redirected: false,
                },
            ));
        }
        matched
    }

    /// Delivers `message` to one member of `group` on this core, or passes it on (see the
    /// module documentation for the order of preference).
    pub(super) fn deliver_shared(
        &mut self,
        message: &Arc<Message>,
        group: &SharedFilter,
        redirected: bool,
        now: Instant,
        effects: &mut Effects,
    ) {
        let here = self.id.0;
        let local = self.shares.local.group_mut(group);
        let connected = local.and_then(|members| {
            members
                .next_member_where(|_, member| member.online)
                .map(|(client, member)| (client.clone(), member.subscription.clone()))
        });
        if let Some((client, subscription)) = connected {
            return self.deliver_to_member(message, &client, &subscription, now, effects);
        }
        let row = self.shares.placements.get_mut(&group.filter, &group.group);
        let elsewhere = match row {
            Some(row) if !redirected && row.cores.online_elsewhere(here) => {
                row.cores.pick(Some(here))
            }
            _ => None,
        };
        if let Some(core) = elsewhere {
            return self.redirect_shared(message, group, core, effects);
        }
        let offline = self.shares.local.group_mut(group).and_then(|members| {
            members
                .next_member()
                .map(|(client, member)| (client.clone(), member.subscription.clone()))
        });
        if let Some((client, subscription)) = offline {
            return self.deliver_to_member(message, &client, &subscription, now, effects);
        }
        let anywhere = match self.shares.placements.get_mut(&group.filter, &group.group) {
            Some(row) if !redirected => row.cores.pick(Some(here)),
            _ => None,
        };
        match anywhere {
            Some(core) => self.redirect_shared(message, group, core, effects),
            None => self.shares.undeliverable += 1,
        }
    }

    fn redirect_shared(
        &mut self,
        message: &Arc<Message>,
        group: &SharedFilter,
        core: usize,
        effects: &mut Effects,
    ) {
        effects.to_cores.push((
            CoreId(core),
            CoreMsg::Shared {
                message: message.clone(),
                groups: vec![group.clone()],
                redirected: true,
            },
        ));
    }

    fn deliver_to_member(
        &mut self,
        message: &Arc<Message>,
        client: &ByteString,
        subscription: &Subscription,
        now: Instant,
        effects: &mut Effects,
    ) {
        if !self.sessions.contains_key(client) {
            // A member without a session cannot be: sessions leave their groups as they end.
            self.shares.undeliverable += 1;
            return;
        }
        let recipient = Recipient {
            client_id: client.clone(),
            qos: message.qos.min(subscription.options.qos),
            retain: subscription.options.retain_as_published && message.retain,
            subscription_identifiers: subscription.identifier.into_iter().collect(),
        };
        self.deliver_to(message, vec![recipient], None, now, effects);
    }
}
