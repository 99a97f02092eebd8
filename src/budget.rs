//! The global in-flight budget: how many request body bytes sortd holds at
//! once. A request reserves its body (from `Content-Length` at once, or
//! chunk by chunk as a chunked body arrives) before reading it, and keeps the
//! reservation until its answer is made. When the budget is spent, a request
//! waits for up to `SORTD_BUSY_WAIT_SECS`, then gets `503` with `Retry-After`:
//! a burst of large bodies is served a few at a time instead of adding up
//! past the unit's `MemoryMax` and getting sortd killed. Small bodies (up to
//! [`SMALL_BODY_BYTES`]) need no budget, so big sorts never make them wait.
//!
//! Once no body is in flight after a large one, [`Budget::trim_when_idle`]
//! gives the freed memory back to the system (see [`crate::memory`]), and
//! again each second while idle for [`TRIM_ROUNDS`] seconds: the read
//! buffers of kept-alive connections are freed only when those connections
//! close, up to the idle timeout later.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Permits are KiB: tokio counts permits in `u32`.
const UNIT: u64 = 1024;

/// Bodies up to this size are served without a reservation: what they hold
/// is small next to the budget, and they must stay fast while big ones run.
pub const SMALL_BODY_BYTES: u64 = 64 * 1024;

/// A reservation at least this large marks memory worth giving back.
const LARGE: u64 = 1024 * 1024;

/// How many idle periods after a large request still give memory back:
/// longer than a connection stays open idle (`SORTD_IDLE_SECS`'s default).
pub const TRIM_ROUNDS: u32 = 15;

/// The budget stayed spent until the reservation's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent;

/// The bytes all requests in flight may hold together.
#[derive(Debug)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    units: usize,
    wait: Duration,
    /// Set to TRIM_ROUNDS when a large reservation ends; each trim takes one.
    trims_due: Arc<AtomicU32>,
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    deadline: Instant,
    bytes: u64,
    trims_due: Arc<AtomicU32>,
}

impl Budget {
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let units = usize::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            semaphore: Arc::new(Semaphore::new(units)),
            units,
            wait,
            trims_due: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Whether no request holds any of the budget.
    pub fn idle(&self) -> bool {
        self.semaphore.available_permits() == self.units
    }

    /// Every `period` while no request holds the budget, for `TRIM_ROUNDS`
    /// periods after a large request ended, returns the allocator's free
    /// memory to the system, counting each time in `trims`. Runs until
    /// dropped.
    pub async fn trim_when_idle(self: Arc<Self>, period: Duration, trims: Counter) {
        let mut ticks = tokio::time::interval(period);
        // Rounds a period apart even after the runtime was held up: missed
        // ticks fired at once would use the rounds up before the idle
        // connections close and free what they held.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let due = |left: u32| left.checked_sub(1);
            if self.idle()
                && self
                    .trims_due
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, due)
                    .is_ok()
            {
                let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
                trims.inc();
                log::debug!("no request in flight after a large one: free memory given back");
            }
        }
    }

    /// An empty reservation whose waits all end `wait` from now.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            semaphore: Arc::clone(&self.semaphore),
            permit: None,
            deadline: Instant::now() + self.wait,
            bytes: 0,
            trims_due: Arc::clone(&self.trims_due),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes >= LARGE {
            self.trims_due.store(TRIM_ROUNDS, Ordering::Relaxed);
        }
    }
}

impl Reservation {
    /// Makes the reservation cover `bytes` in all (nothing while that is a
    /// small body), waiting for the budget until the deadline; [`Spent`]
    /// past it.
    pub async fn cover(&mut self, bytes: u64) -> Result<(), Spent> {
        if bytes <= SMALL_BODY_BYTES {
            return Ok(());
        }
        let held = self.bytes.div_ceil(UNIT);
        let wanted = bytes.div_ceil(UNIT);
        if wanted <= held {
            return Ok(());
        }
        let more = u32::try_from(wanted - held).map_err(|_| Spent)?;
        let acquire = Arc::clone(&self.semaphore).acquire_many_owned(more);
        let permit = match tokio::time::timeout_at(self.deadline, acquire).await {
            Ok(Ok(permit)) => permit,
            // Timed out, or the semaphore was closed (it never is).
            _ => return Err(Spent),
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.bytes = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 1024 * UNIT;

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_the_budget_then_is_told_busy() {
        let budget = Budget::new(10 * BIG, Duration::from_secs(2));
        let mut first = budget.reservation();
        first.cover(8 * BIG).await.unwrap();
        let mut second = budget.reservation();
        assert!(matches!(second.cover(4 * BIG).await, Err(Spent)));
        // Small bodies need no budget.
        budget.reservation().cover(SMALL_BODY_BYTES).await.unwrap();
        // Once the first is done, the budget is there again.
        drop(first);
        assert!(budget.idle());
        let mut third = budget.reservation();
        third.cover(10 * BIG).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_up_to_64_kib_needs_no_budget_even_when_it_is_spent() {
        let budget = Budget::new(10 * BIG, Duration::from_secs(2));
        let mut all = budget.reservation();
        all.cover(10 * BIG).await.unwrap();
        budget.reservation().cover(64 * 1024).await.unwrap();
        let past = budget.reservation().cover(64 * 1024 + 1).await;
        assert!(matches!(past, Err(Spent)));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_body_of_a_mib_or_more_calls_for_trims() {
        let budget = Budget::new(10 * BIG, Duration::from_secs(2));
        let mut below = budget.reservation();
        below.cover(1024 * 1024 - 1).await.unwrap();
        drop(below);
        assert_eq!(budget.trims_due.load(Ordering::Relaxed), 0);
        let mut large = budget.reservation();
        large.cover(1024 * 1024).await.unwrap();
        drop(large);
        assert_eq!(budget.trims_due.load(Ordering::Relaxed), TRIM_ROUNDS);
    }

    /// A budget whose idle trims run on their own task every `period`, in
    /// real time; the trims counted. The test aborts the task.
    fn trimming_every(period: Duration) -> (Arc<Budget>, Counter, tokio::task::JoinHandle<()>) {
        let budget = Arc::new(Budget::new(10 * BIG, Duration::from_secs(2)));
        let trims = Counter::default();
        let trimming = tokio::spawn(Arc::clone(&budget).trim_when_idle(period, trims.clone()));
        (budget, trims, trimming)
    }

    /// In real time, with a short period: the trims run on their own task.
    #[tokio::test]
    async fn memory_is_given_back_only_while_idle_for_the_rounds_after_a_large_body() {
        let period = Duration::from_millis(5);
        let (budget, trims, trimming) = trimming_every(period);
        let mut large = budget.reservation();
        large.cover(2 * BIG).await.unwrap();
        // A request in flight: no trim, though one is due.
        let mut in_flight = budget.reservation();
        in_flight.cover(BIG).await.unwrap();
        drop(large);
        tokio::time::sleep(period * 20).await;
        assert_eq!(trims.get(), 0);
        // Idle: the rounds run, then no more.
        drop(in_flight);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while trims.get() < u64::from(TRIM_ROUNDS) && std::time::Instant::now() < deadline {
            tokio::time::sleep(period).await;
        }
        tokio::time::sleep(period * 20).await;
        assert_eq!(trims.get(), u64::from(TRIM_ROUNDS));
        trimming.abort();
    }

    /// A runtime held up (a busy machine) does not use the rounds up at once
    /// when it runs again: they stay a period apart, to outlast the idle
    /// connections.
    #[tokio::test]
    async fn the_rounds_stay_a_period_apart_after_the_runtime_was_held_up() {
        let period = Duration::from_millis(100);
        let (budget, trims, trimming) = trimming_every(period);
        tokio::task::yield_now().await;
        let mut large = budget.reservation();
        large.cover(2 * BIG).await.unwrap();
        drop(large);
        // The test's runtime has one thread: the trimming task waits too.
        std::thread::sleep(period * 20);
        tokio::time::sleep(period).await;
        assert!(
            trims.get() < u64::from(TRIM_ROUNDS),
            "{} rounds at once",
            trims.get()
        );
        trimming.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_goes_on_when_budget_is_given_back_in_time() {
        let budget = Budget::new(10 * BIG, Duration::from_secs(2));
        let mut first = budget.reservation();
        first.cover(10 * BIG).await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(first);
        });
        let mut second = budget.reservation();
        second.cover(10 * BIG).await.unwrap();
        release.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_grows_chunk_by_chunk() {
        let budget = Budget::new(4 * BIG, Duration::from_secs(1));
        let mut growing = budget.reservation();
        for bytes in [100, SMALL_BODY_BYTES + 1, 3 * BIG, 4 * BIG] {
            growing.cover(bytes).await.unwrap();
        }
        let past = growing.cover(4 * BIG + 1).await;
        assert!(matches!(past, Err(Spent)));
    }
}
