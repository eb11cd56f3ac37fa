//! The ingest budget: bytes admitted and not yet applied by the stores, which bounds the
//! memory of everything in flight, and the [`Charge`] one request holds against it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;

/// Budget of bytes admitted and not yet applied by the stores; bounds memory.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    max: u64,
    /// Bytes asked for by requests waiting for room ([`Budget::take_within`]).
    waiting: AtomicU64,
    /// Woken whenever bytes are given back while someone waits.
    room: tokio::sync::Notify,
    /// Shows the bytes in use (`*_ingest_pending_bytes`), set on every change.
    gauge: Option<IntGauge>,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            max,
            waiting: AtomicU64::new(0),
            room: tokio::sync::Notify::new(),
            gauge: None,
        }
    }

    /// The same budget, its use shown on `gauge`.
    pub fn shown_on(mut self, gauge: IntGauge) -> Self {
        gauge.set(0);
        self.gauge = Some(gauge);
        self
    }

    /// A [`Charge`] of `n` bytes, waiting up to `wait` for room ([`Budget::take_within`]);
    /// `None` when there is none.
    pub async fn charge_within(self: &Arc<Self>, n: u64, wait: Duration) -> Option<Charge> {
        self.take_within(n, wait).await.then(|| Charge {
            budget: self.clone(),
            n,
        })
    }

    /// A [`Charge`] of `n` bytes taken even past the limit ([`Budget::take`]): memory that
    /// is held already.
    pub fn charge(self: &Arc<Self>, n: u64) -> Charge {
        self.take(n);
        Charge {
            budget: self.clone(),
            n,
        }
    }

    fn show(&self) {
        if let Some(g) = &self.gauge {
            g.set(i64::try_from(self.used()).unwrap_or(i64::MAX));
        }
    }

    /// Take `n` bytes, waiting up to `wait` for room when they do not fit now. Requests
    /// waiting at once may ask for a quarter of the budget between them (what they hold
    /// meanwhile is outside it); past that, or after `wait`, the answer is `false`.
    ///
    /// Waiting keeps the pipeline busy under overload: a refusal sends the client away
    /// for its retry hint (a second), while room frees as the indexers go on.
    pub async fn take_within(&self, n: u64, wait: Duration) -> bool {
        if self.try_take(n) {
            return true;
        }
        if wait.is_zero() {
            return false;
        }
        let cap = self.max / 4;
        // SeqCst here, in `try_take` and in `release`: a waiter counts itself and then
        // looks at `used`; a release changes `used` and then looks at `waiting`. One of
        // the two must see the other (at worst the wait runs out and tries once more).
        if self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                w.checked_add(n).filter(|&next| next <= cap)
            })
            .is_err()
        {
            return false;
        }
        struct Waiting<'a>(&'a AtomicU64, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting, n);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release in between is not missed.
            notified.as_mut().enable();
            if self.try_take(n) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.try_take(n);
            }
        }
    }

    /// Take `n` bytes if they fit, or if nothing is taken (so one request larger than
    /// the whole budget still goes through, alone).
    pub fn try_take(&self, n: u64) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                let next = u.checked_add(n)?;
                (next <= self.max || u == 0).then_some(next)
            })
            .is_ok();
        if taken {
            self.show();
        }
        taken
    }

    /// Take `n` bytes even past the limit (memory that is held already), so admission
    /// stops until they are given back.
    pub fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
        self.show();
    }

    /// Give back `n` bytes.
    pub fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
        self.show();
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Most bytes admitted at once.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Budget bytes held by a request from admission until its store has applied it, given
/// back when dropped: every early return, a request its client abandoned, a failed write
/// and an applied record release it the same way.
pub struct Charge {
    budget: Arc<Budget>,
    n: u64,
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.n
    }

    /// Hold `n` bytes instead: the memory a request really takes is known only once it
    /// is decoded. Growing takes past the limit (the memory is in use already), so that
    /// admission stops until it is given back.
    pub fn resize(&mut self, n: u64) {
        if n > self.n {
            self.budget.take(n - self.n);
        } else {
            self.budget.release(self.n - n);
        }
        self.n = n;
    }
}

impl Charge {
    /// Hold `n` bytes instead if the growth fits ([`Budget::try_take`]); whether it did.
    /// For memory about to be allocated, which must not pass the limit.
    pub fn try_grow(&mut self, n: u64) -> bool {
        if n <= self.n {
            return true;
        }
        if self.budget.try_take(n - self.n) {
            self.n = n;
            true
        } else {
            false
        }
    }
}

impl Charge {
    /// Hold what `other` holds as well, in this one charge.
    pub fn absorb(&mut self, mut other: Charge) {
        self.n += std::mem::take(&mut other.n);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.n > 0 {
            self.budget.release(self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn budget_takes_a_lone_oversize_request_and_charges_can_grow() {
        let gauge = IntGauge::new("pending", "pending").unwrap();
        let budget = Arc::new(Budget::new(100).shown_on(gauge.clone()));
        assert!(
            budget.try_take(150),
            "nothing waits: an oversize request goes alone"
        );
        assert!(!budget.try_take(1), "and then nothing else");
        budget.release(150);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(60), "60 + 60 is past the limit");
        let mut charge = budget.charge(30);
        assert_eq!(gauge.get(), 90);
        charge.resize(200);
        assert_eq!(budget.used(), 260, "growing takes past the limit");
        assert_eq!(gauge.get(), 260);
        charge.resize(10);
        assert_eq!(budget.used(), 70);
        drop(charge);
        assert_eq!(budget.used(), 60);
        assert_eq!(gauge.get(), 60);
    }

    #[tokio::test]
    async fn a_waiting_request_is_admitted_when_room_frees_and_refused_after_its_wait() {
        let budget = Arc::new(Budget::new(100));
        assert!(budget.try_take(90));
        // Room frees while it waits: admitted without waiting out the whole wait.
        let b = budget.clone();
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.release(90);
        });
        let t = std::time::Instant::now();
        assert!(budget.take_within(20, Duration::from_secs(10)).await);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        freer.await.unwrap();
        assert_eq!(budget.used(), 20);
        assert_eq!(budget.waiting.load(Ordering::Acquire), 0);
        // No room comes: refused once the wait is over.
        assert!(budget.try_take(80));
        let t = std::time::Instant::now();
        assert!(!budget.take_within(20, Duration::from_millis(100)).await);
        assert!(t.elapsed() >= Duration::from_millis(100));
        // Waiters may ask for a quarter of the budget (25) between them: while one of 20
        // waits, one of 10 is refused at once; so is any request with no wait.
        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.take_within(20, Duration::from_secs(10)).await });
        while budget.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let t = std::time::Instant::now();
        assert!(!budget.take_within(10, Duration::from_secs(10)).await);
        assert!(!budget.take_within(5, Duration::ZERO).await);
        assert!(t.elapsed() < Duration::from_secs(5));
        budget.release(100);
        assert!(waiter.await.unwrap(), "the waiter gets the room");
        assert_eq!(budget.used(), 20);
    }
}
