//! Drain bookkeeping: how many visitor requests are being forwarded, and whether the relay
//! has stopped taking new ones.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};
use tokio::sync::Notify;

/// Counts requests in flight and refuses new ones once draining started.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

/// Held while one request is forwarded.
pub struct InFlight {
    count: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl Drain {
    /// Registers a request, or `None` when the relay is draining.
    pub fn enter(&self) -> Option<InFlight> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(InFlight {
            count: self.in_flight.clone(),
            changed: self.changed.clone(),
        })
    }

    /// Stops admitting requests.
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether draining started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_requests_in_flight_and_draining_refuses_new_ones() {
        let drain = Arc::new(Drain::default());
        let a = drain.enter().unwrap();
        drain.start();
        assert!(drain.enter().is_none());
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
    }
}
