//! Re-authentication deadlines of idle connections.
//!
//! Envoy gives a dynamic module's network filter no timer. The data hooks check the deadline
//! of every connection that moves bytes; a connection that sits idle past it would only
//! re-authenticate at its next request. So one module-owned thread waits for the earliest
//! deadline and, when it passes, commits an event to that connection's scheduler: Envoy then
//! calls `on_network_filter_scheduled` on the connection's own worker thread, where the
//! filter injects the re-authentication as a data hook would.
//!
//! The scheduler belongs to the connection and is deleted with it. The thread only touches
//! it under the slot's lock, and the connection empties the slot (under the same lock)
//! before deleting it, so a deadline never reaches a deleted scheduler. Envoy itself drops
//! an event whose connection has gone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

/// The event id the filter's `scheduled` hook receives for a due deadline.
pub const DEADLINE_EVENT: u64 = 1;

/// Envoy's scheduler of one connection (`scheduler_new`), as the thread may use it.
pub struct SchedulerPtr(pub *mut c_void);

// SAFETY: Envoy's network filter scheduler is made to be committed to from any thread (it
// posts to the connection's dispatcher); the pointer is only used under `Slot`'s lock.
unsafe impl Send for SchedulerPtr {}

/// One connection's place in the timer: its scheduler while the connection lives.
pub struct Slot {
    scheduler: Mutex<Option<SchedulerPtr>>,
}

impl Slot {
    pub fn new(scheduler: SchedulerPtr) -> Arc<Self> {
        Arc::new(Self {
            scheduler: Mutex::new(Some(scheduler)),
        })
    }

    /// The connection is going: takes its scheduler out (for the caller to delete), after
    /// which the thread cannot reach it.
    pub fn take(&self) -> Option<SchedulerPtr> {
        self.scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn fire(&self, commit: unsafe extern "C" fn(*mut c_void, u64)) {
        let guard = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(scheduler) = guard.as_ref() {
            // SAFETY: the scheduler is alive while it is in the slot (see the module's
            // documentation); commit only posts an event to its dispatcher.
            unsafe { commit(scheduler.0, DEADLINE_EVENT) };
        }
    }
}

struct Entry {
    at_ms: u64,
    seq: u64,
    slot: Weak<Slot>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    deadlines: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct Timer {
    queue: Mutex<Queue>,
    wake: Condvar,
    commit: unsafe extern "C" fn(*mut c_void, u64),
    now_ms: fn() -> Option<u64>,
}

static TIMER: OnceLock<Option<Arc<Timer>>> = OnceLock::new();

/// Longest sleep between looks at the queue: bounds the damage of a clock that jumps.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Asks for `slot`'s connection to be woken at `at_ms` (the clock `now_ms` reads). Starts
/// the thread on first use; returns false if it cannot run (the data hooks still check
/// deadlines, so an idle connection re-authenticates at its next request).
pub fn arm(
    slot: &Arc<Slot>,
    at_ms: u64,
    commit: unsafe extern "C" fn(*mut c_void, u64),
    now_ms: fn() -> Option<u64>,
) -> bool {
    let Some(timer) = TIMER.get_or_init(|| start(commit, now_ms)) else {
        return false;
    };
    let mut queue = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
    queue.seq = queue.seq.wrapping_add(1);
    let seq = queue.seq;
    let earliest = queue.deadlines.peek().is_none_or(|e| at_ms < e.0.at_ms);
    queue.deadlines.push(Reverse(Entry {
        at_ms,
        seq,
        slot: Arc::downgrade(slot),
    }));
    drop(queue);
    if earliest {
        timer.wake.notify_one();
    }
    true
}

fn start(
    commit: unsafe extern "C" fn(*mut c_void, u64),
    now_ms: fn() -> Option<u64>,
) -> Option<Arc<Timer>> {
    let timer = Arc::new(Timer {
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
        commit,
        now_ms,
    });
    let for_thread = Arc::clone(&timer);
    match std::thread::Builder::new()
        .name("kafka-identity-timer".into())
        .spawn(move || run(&for_thread))
    {
        Ok(_) => Some(timer),
        Err(e) => {
            log::error!(
                "kafka-identity: cannot start the re-authentication timer thread ({e}): idle \
                 connections re-authenticate at their next request"
            );
            None
        }
    }
}

fn run(timer: &Timer) {
    let mut queue = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = (timer.now_ms)().unwrap_or(0);
        let mut due = Vec::new();
        while let Some(Reverse(next)) = queue.deadlines.peek() {
            if next.at_ms > now {
                break;
            }
            if let Some(Reverse(entry)) = queue.deadlines.pop() {
                due.push(entry.slot);
            }
        }
        let sleep = queue
            .deadlines
            .peek()
            .map_or(MAX_SLEEP, |e| {
                Duration::from_millis(e.0.at_ms.saturating_sub(now))
            })
            .min(MAX_SLEEP);
        if !due.is_empty() {
            // Commit without the queue's lock: connections arm the timer from their hooks.
            drop(queue);
            for slot in due.iter().filter_map(Weak::upgrade) {
                slot.fire(timer.commit);
            }
            queue = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        queue = match timer.wake.wait_timeout(queue, sleep) {
            Ok((guard, _)) => guard,
            Err(e) => e.into_inner().0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static FIRED: AtomicU64 = AtomicU64::new(0);
    static CLOCK: AtomicU64 = AtomicU64::new(1_000);

    // No assertion here: a panic cannot unwind out of an `extern "C"` function.
    unsafe extern "C" fn count(_scheduler: *mut c_void, event: u64) {
        if event == DEADLINE_EVENT {
            FIRED.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn clock() -> Option<u64> {
        Some(CLOCK.load(Ordering::SeqCst))
    }

    fn wait_for(fired: u64) -> bool {
        for _ in 0..200 {
            if FIRED.load(Ordering::SeqCst) >= fired {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    // One test: the timer thread and its clock are process-wide.
    #[test]
    fn a_due_deadline_is_committed_once_and_a_taken_slot_never() {
        let live = Slot::new(SchedulerPtr(std::ptr::null_mut()));
        let gone = Slot::new(SchedulerPtr(std::ptr::null_mut()));
        assert!(arm(&live, 1_500, count, clock));
        assert!(arm(&gone, 1_500, count, clock));
        assert!(
            gone.take().is_some(),
            "the connection takes its scheduler back"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(FIRED.load(Ordering::SeqCst), 0, "not due yet");
        CLOCK.store(2_000, Ordering::SeqCst);
        // A new, earlier deadline wakes the thread, which then finds both due.
        let early = Slot::new(SchedulerPtr(std::ptr::null_mut()));
        assert!(arm(&early, 1_900, count, clock));
        assert!(wait_for(2), "live and early fire");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            FIRED.load(Ordering::SeqCst),
            2,
            "the taken slot never fires"
        );
        // A dropped connection's entry is skipped too.
        let dropped = Slot::new(SchedulerPtr(std::ptr::null_mut()));
        assert!(arm(&dropped, 2_100, count, clock));
        drop(dropped);
        CLOCK.store(3_000, Ordering::SeqCst);
        let last = Slot::new(SchedulerPtr(std::ptr::null_mut()));
        assert!(arm(&last, 2_000, count, clock));
        assert!(wait_for(3));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(FIRED.load(Ordering::SeqCst), 3);
    }
}
