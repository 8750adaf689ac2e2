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
    /// The wall-clock time now, in µs since the Unix epoch: what the sidecars' timestamps
    /// (a first failure) are compared with.
    fn unix_us(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
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
    /// The wall-clock time a fake clock starts at, in µs since the Unix epoch
    /// (2026-01-01T00:00:00Z), so that a test can write sidecar timestamps against it.
    pub const UNIX_START_US: u64 = 1_767_225_600_000_000;

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

    /// [`FakeClock::UNIX_START_US`] plus the time advanced.
    fn unix_us(&self) -> u64 {
        FakeClock::UNIX_START_US + self.elapsed().as_micros() as u64
    }
}
