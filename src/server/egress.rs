//! Egress before ingress: whether this core's writers are behind, so that its readers
//! read less and TCP flow control pushes back on publishers.
//!
//! Without it, publishers that offer more QoS 0 than the subscribers take make the core
//! read, route and drop: measured with `berth-loadgen throughput --pattern pairs --pairs 100
//! --qos 0` on 2 cores, 520k msgs/s read and 45k/s delivered flat out, against 297k/s
//! delivered of 298k/s offered at a set rate (receive livelock).
//!
//! The signal: how many of the core's outboxes hold more than half their limit of QoS 0
//! bytes ("backed up"), out of all its connections. The core is **behind** while at least
//! two are backed up and they are at least a quarter of its connections. A few slow
//! subscribers among many do not make it behind: their outboxes fill and they lose QoS 0
//! as before (counted as drops), while everyone else goes on at full speed. When most
//! subscribers cannot keep up, the readers of this core (connections, and the loop that
//! takes other cores' routing work) wait before their next read until the core is no
//! longer behind, or at most [`MAX_PAUSE`], so that a core whose clients all stopped
//! reading still serves one read per connection per pause.
//!
//! The second signal, **shedding**: the share of this core's QoS 0 deliveries its outboxes
//! refuse. Counting backed-up outboxes misses the overload that a load shared with its
//! clients makes: subscribers that are starved of CPU by turns. Measured with 100 QoS 0
//! pairs flat out on 2 cores, at most 5-10 of a core's 100 outboxes were backed up at any
//! time, never a quarter, so readers never waited, and 4.5M of 7.3M deliveries were
//! dropped (all counted as slow subscribers). So the core also tallies, in rounds of
//! [`ROUND`] QoS 0 deliveries, how many were refused by an outbox that has been full for
//! less than [`STALE_FULL`]; when at least one in [`SHEDDING_SHARE`] was, the core is
//! behind until one of those outboxes drains below half its limit, or [`SHED_PAUSE`]
//! passes. An outbox full for longer is a subscriber slower than its peers, not overload:
//! its refusals do not count, so one dead subscriber never slows the core's readers for
//! longer than one pause.
//!
//! Invariants: the counts are exact (every outbox adds itself on creation and takes its
//! state away when dropped); waiting never takes longer than [`MAX_PAUSE`], so it cannot
//! deadlock with anything.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The longest a reader waits for the writers before it reads once more anyway.
pub const MAX_PAUSE: Duration = Duration::from_millis(100);
/// The longest a reader waits while the core is behind only because it is shedding.
pub const SHED_PAUSE: Duration = Duration::from_millis(10);
/// QoS 0 deliveries per round of the shedding tally.
pub const ROUND: u32 = 256;
/// One refused delivery in this many, in a round, makes the core shed.
pub const SHEDDING_SHARE: u32 = 8;
/// An outbox full for longer than this is a slow subscriber: its refusals are not overload.
pub const STALE_FULL: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Egress {
    connections: Cell<usize>,
    backed_up: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
    /// How many times a reader waited (`$SYS` may show it later; tests read it).
    pauses: Cell<u64>,
    /// QoS 0 deliveries in this round of the tally, and how many of them were refused by
    /// an outbox full for less than [`STALE_FULL`].
    offered: Cell<u32>,
    refused: Cell<u32>,
    /// The last round's verdict, until one of the outboxes that refused drains.
    shedding: Cell<bool>,
}

impl Egress {
    pub fn new() -> Rc<Egress> {
        Rc::new(Egress::default())
    }

    pub fn behind(&self) -> bool {
        self.shedding.get() || self.most_backed_up()
    }

    fn most_backed_up(&self) -> bool {
        let backed_up = self.backed_up.get();
        backed_up >= 2 && backed_up * 4 >= self.connections.get()
    }

    /// Returns at once unless the core is behind; then when it no longer is, or after
    /// [`MAX_PAUSE`] ([`SHED_PAUSE`] when only shedding).
    pub async fn caught_up(self: &Rc<Self>) {
        if !self.behind() {
            return;
        }
        self.pauses.set(self.pauses.get() + 1);
        let pause = if self.most_backed_up() {
            MAX_PAUSE
        } else {
            SHED_PAUSE
        };
        let caught_up = CaughtUp(self.clone());
        futures_lite::future::or(caught_up, glommio::timer::sleep(pause)).await;
        // A pause that ran out ends the verdict too: the next round decides afresh.
        self.shedding.set(false);
    }

    /// One QoS 0 delivery offered to an outbox: `refused` when it was refused by an
    /// outbox full for less than [`STALE_FULL`].
    pub(super) fn offered(&self, refused: bool) {
        let offered = self.offered.get() + 1;
        let refused = self.refused.get() + u32::from(refused);
        if offered < ROUND {
            self.offered.set(offered);
            self.refused.set(refused);
            return;
        }
        self.offered.set(0);
        self.refused.set(0);
        let shedding = refused * SHEDDING_SHARE >= offered;
        self.shedding.set(shedding);
        if !shedding {
            self.wake_if_caught_up();
        }
    }

    /// An outbox that refused deliveries drained below half its limit.
    pub(super) fn drained(&self) {
        self.shedding.set(false);
        self.wake_if_caught_up();
    }

    fn wake_if_caught_up(&self) {
        if !self.behind() {
            for waker in self.waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }

    #[cfg(test)]
    pub fn pauses(&self) -> u64 {
        self.pauses.get()
    }

    pub(super) fn opened(&self) {
        self.connections.set(self.connections.get() + 1);
    }

    pub(super) fn closed(&self, backed_up: bool) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
        if backed_up {
            self.relieved();
        }
    }

    pub(super) fn backed_up(&self) {
        self.backed_up.set(self.backed_up.get() + 1);
    }

    /// One outbox is no longer backed up: wakes the readers if that ends "behind".
    pub(super) fn relieved(&self) {
        self.backed_up.set(self.backed_up.get().saturating_sub(1));
        self.wake_if_caught_up();
    }
}

struct CaughtUp(Rc<Egress>);

impl Future for CaughtUp {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.0.behind() {
            return Poll::Ready(());
        }
        self.0.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_takes_two_backed_up_outboxes_and_a_quarter_of_the_connections() {
        let egress = Egress::new();
        for _ in 0..8 {
            egress.opened();
        }
        egress.backed_up();
        assert!(!egress.behind(), "one slow subscriber is not overload");
        egress.backed_up();
        assert!(egress.behind(), "2 of 8");
        for _ in 0..4 {
            egress.opened();
        }
        assert!(!egress.behind(), "2 of 12");
        egress.backed_up();
        assert!(egress.behind(), "3 of 12");
        egress.relieved();
        assert!(!egress.behind());
        egress.closed(false);
        egress.closed(false);
        egress.closed(false);
        egress.closed(false);
        assert!(egress.behind(), "2 of 8 again");
        egress.closed(true);
        assert!(!egress.behind(), "a closed outbox takes its state with it");
    }

    #[test]
    fn a_round_with_one_refusal_in_eight_sheds_until_a_refusing_outbox_drains() {
        let egress = Egress::new();
        for _ in 0..100 {
            egress.opened();
        }
        for i in 0..ROUND {
            egress.offered(i % 16 == 0);
        }
        assert!(
            !egress.behind(),
            "one in 16 refused: a few slow subscribers"
        );
        for i in 0..ROUND {
            egress.offered(i % 8 == 0);
        }
        assert!(egress.behind(), "one in 8 refused: shedding");
        egress.offered(true);
        assert!(egress.behind(), "the verdict holds within the next round");
        egress.drained();
        assert!(!egress.behind(), "an outbox that refused has room again");
        for _ in 0..ROUND {
            egress.offered(true);
        }
        assert!(egress.behind());
        for _ in 0..ROUND {
            egress.offered(false);
        }
        assert!(!egress.behind(), "a round without refusals ends it");
    }

    #[test]
    fn a_waiting_reader_goes_on_once_the_writers_catch_up_or_after_the_pause() {
        glommio::LocalExecutor::default().run(async {
            let egress = Egress::new();
            for _ in 0..4 {
                egress.opened();
            }
            egress.backed_up();
            egress.backed_up();
            let started = std::time::Instant::now();
            egress.caught_up().await;
            assert!(started.elapsed() >= MAX_PAUSE, "waited the whole pause");
            let waiting = glommio::spawn_local({
                let egress = egress.clone();
                async move { egress.caught_up().await }
            });
            glommio::yield_if_needed().await;
            let started = std::time::Instant::now();
            egress.relieved();
            waiting.await;
            assert!(started.elapsed() < MAX_PAUSE, "woken when relieved");
            assert_eq!(egress.pauses(), 2);
        });
    }
}
