//! Time, injectable: the controller never reads the system clock or sleeps by itself, so a
//! whole canary of five-minute intervals runs on a [`FakeClock`] in microseconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the controller needs of time.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Waits for `duration` (a fake clock just moves forward).
    fn sleep(&self, duration: Duration);
}

/// The real clock: `Instant::now` and `std::thread::sleep`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A clock that moves only when slept on or [advanced](FakeClock::advance). Clones share the
/// same time, so a test can hand one clone to the controller and read another.
#[derive(Clone, Debug)]
pub struct FakeClock {
    start: Instant,
    elapsed: Arc<Mutex<Duration>>,
}

impl FakeClock {
    /// A fake clock at an arbitrary fixed start.
    pub fn new() -> Self {
        FakeClock {
            start: Instant::now(),
            elapsed: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    /// Time passed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instant this clock started at.
    pub fn start(&self) -> Instant {
        self.start
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}
