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
//! The second signal, per read: **shedding**. Counting backed-up outboxes misses the
//! overload that a load sharing the CPUs with its clients makes: subscribers starved of
//! CPU by turns. Measured with 100 QoS 0 pairs flat out on 2 cores, at most 5-10 of a
//! core's 100 outboxes were backed up at any time, never a quarter, so readers never
//! waited, and 4.5M of 7.3M deliveries were dropped (all counted as slow subscribers).
//! So each reader also looks at what its own read's worth of packets did ([`Mark`]): when
//! at least one in [`SHEDDING_SHARE`] of the QoS 0 deliveries made since its mark was
//! refused by an outbox that has been full for less than [`STALE_FULL`], the reader waits
//! until one of the full outboxes drains below half its limit, or [`SHED_PAUSE`]. Only
//! the readers that feed full outboxes wait: a publisher to a thousand subscribers of
//! which one is stalled never does, and an outbox full for longer than [`STALE_FULL`] is a
//! subscriber slower than its peers, whose refusals do not count, so a dead subscriber
//! slows its publishers for [`STALE_FULL`] at most.
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
/// The longest a reader whose read fed full outboxes waits for one of them to drain.
pub const SHED_PAUSE: Duration = Duration::from_millis(10);
/// One refused delivery in this many, among a read's deliveries, makes its reader wait.
pub const SHEDDING_SHARE: u64 = 8;
/// An outbox full for longer than this is a slow subscriber: its refusals are not overload.
pub const STALE_FULL: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Egress {
    connections: Cell<usize>,
    backed_up: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
    /// How many times a reader waited (`$SYS` may show it later; tests read it).
    pauses: Cell<u64>,
    /// QoS 0 deliveries offered to this core's outboxes, and how many of them were refused
    /// by an outbox full for less than [`STALE_FULL`].
    offered: Cell<u64>,
    refused: Cell<u64>,
    /// How many times an outbox that refused drained below half its limit, and the
    /// readers waiting for the next time.
    drained: Cell<u64>,
    shedders: RefCell<Vec<Waker>>,
}

/// Where the delivery tally stood before a read's worth of packets.
#[derive(Clone, Copy)]
pub struct Mark {
    offered: u64,
    refused: u64,
}

impl Egress {
    pub fn new() -> Rc<Egress> {
        Rc::new(Egress::default())
    }

    pub fn behind(&self) -> bool {
        let backed_up = self.backed_up.get();
        backed_up >= 2 && backed_up * 4 >= self.connections.get()
    }

    /// Returns at once unless the core is behind; then when it no longer is, or after
    /// [`MAX_PAUSE`].
    pub async fn caught_up(self: &Rc<Self>) {
        if !self.behind() {
            return;
        }
        self.pauses.set(self.pauses.get() + 1);
        let caught_up = CaughtUp(self.clone());
        futures_lite::future::or(caught_up, glommio::timer::sleep(MAX_PAUSE)).await;
    }

    pub fn mark(&self) -> Mark {
        Mark {
            offered: self.offered.get(),
            refused: self.refused.get(),
        }
    }

    /// Whether the deliveries since `mark` were refused often enough that their reader
    /// should wait ([`Egress::drained_once`]) before it reads more.
    pub fn sheds(&self, mark: Mark) -> bool {
        let refused = self.refused.get() - mark.refused;
        refused > 0 && refused * SHEDDING_SHARE >= self.offered.get() - mark.offered
    }

    /// Returns when an outbox that refused drains below half its limit, or after
    /// [`SHED_PAUSE`].
    pub async fn drained_once(self: &Rc<Self>) {
        self.pauses.set(self.pauses.get() + 1);
        let drained = Drained(self.clone(), self.drained.get());
        futures_lite::future::or(drained, glommio::timer::sleep(SHED_PAUSE)).await;
    }

    /// One QoS 0 delivery offered to an outbox: `refused` when it was refused by an
    /// outbox full for less than [`STALE_FULL`].
    pub(super) fn offered(&self, refused: bool) {
        self.offered.set(self.offered.get() + 1);
        if refused {
            self.refused.set(self.refused.get() + 1);
        }
    }

    /// An outbox that refused deliveries drained below half its limit.
    pub(super) fn drained(&self) {
        self.drained.set(self.drained.get() + 1);
        for waker in self.shedders.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    #[cfg(test)]
    pub fn pauses(&self) -> u64 {
        self.pauses.get()
    }

    #[cfg(test)]
    pub fn drains(&self) -> u64 {
        self.drained.get()
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
        if !self.behind() {
            for waker in self.waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        }
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

/// Ready once the egress's drain count passes the one it was made with.
struct Drained(Rc<Egress>, u64);

impl Future for Drained {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.drained.get() != self.1 {
            return Poll::Ready(());
        }
        self.0.shedders.borrow_mut().push(cx.waker().clone());
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
    fn a_read_sheds_when_one_in_eight_of_its_deliveries_was_refused() {
        let egress = Egress::new();
        let mark = egress.mark();
        for i in 0..160 {
            egress.offered(i % 16 == 0);
        }
        assert!(
            !egress.sheds(mark),
            "one in 16 refused: a few slow subscribers"
        );
        let mark = egress.mark();
        assert!(!egress.sheds(mark), "no deliveries, nothing refused");
        for i in 0..160 {
            egress.offered(i % 8 == 0);
        }
        assert!(egress.sheds(mark), "one in 8 refused");
        let mark = egress.mark();
        egress.offered(false);
        assert!(!egress.sheds(mark), "only what came after the mark counts");
    }

    #[test]
    fn a_shedding_reader_goes_on_when_a_full_outbox_drains_or_after_the_pause() {
        glommio::LocalExecutor::default().run(async {
            let egress = Egress::new();
            let started = std::time::Instant::now();
            egress.drained_once().await;
            assert!(started.elapsed() >= SHED_PAUSE, "waited the whole pause");
            let waiting = glommio::spawn_local({
                let egress = egress.clone();
                async move { egress.drained_once().await }
            });
            glommio::yield_if_needed().await;
            let started = std::time::Instant::now();
            egress.drained();
            waiting.await;
            assert!(started.elapsed() < SHED_PAUSE, "woken when drained");
        });
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
