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

#[derive(Default)]
pub struct Egress {
    connections: Cell<usize>,
    backed_up: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
    /// How many times a reader waited (`$SYS` may show it later; tests read it).
    pauses: Cell<u64>,
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
