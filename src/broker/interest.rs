//! The interest table: one core's replica of which other cores have subscribers for which
//! plain filters, kept from their `CoreMsg::Interest` announcements.
//!
//! Invariants: it holds what each core announced last for each filter (a core announces a
//! filter when its first local subscription to it is added and when its last one goes, and
//! each channel is FIFO, so the replicas converge); a lookup names each matching core once,
//! in ascending order, however many of its filters match, so a message crosses to each
//! core at most once.

use bytestring::ByteString;

use crate::ownership::CoreId;
use crate::topic::{SubscriptionTree, TopicFilter, TopicName};

#[derive(Default)]
pub(super) struct Interest {
    filters: SubscriptionTree<CoreId, ()>,
}

impl Interest {
    /// Core `from` gained (`present`) or lost interest in `filter`. A filter that does not
    /// parse is ignored: no core announces one.
    pub fn announced(&mut self, from: CoreId, filter: ByteString, present: bool) {
        let Ok(filter) = TopicFilter::new(filter) else {
            return;
        };
        if present {
            let _ = self.filters.insert(&filter, from, ());
        } else {
            let _ = self.filters.remove(&filter, &from);
        }
    }

    /// Calls `each` once for every core interested in `topic`, in ascending order.
    pub fn cores(&self, topic: &TopicName, mut each: impl FnMut(CoreId)) {
        // The common case (up to 64 cores) needs no allocation.
        let mut cores = [false; 64];
        let mut extra_cores = Vec::new();
        self.filters
            .matches(topic, |core, _| match cores.get_mut(core.0) {
                Some(seen) => *seen = true,
                None => extra_cores.push(*core),
            });
        extra_cores.sort_unstable();
        extra_cores.dedup();
        for core in cores
            .iter()
            .enumerate()
            .filter(|(_, &seen)| seen)
            .map(|(i, _)| CoreId(i))
            .chain(extra_cores)
        {
            each(core);
        }
    }
}
