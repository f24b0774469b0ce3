//! Small values every part of the router holds: who this router is, the notifier of view
//! changes, and a cheap random source.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Mode;

/// Who this router is; fixed for its lifetime.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) id: String,
    pub(crate) site: String,
    pub(crate) mode: Mode,
    /// Boot time in nanoseconds; tells peers we restarted.
    pub(crate) instance: u64,
    pub(crate) started: Instant,
}

impl Identity {
    pub(crate) fn new(id: String, site: String, mode: Mode) -> Identity {
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Identity {
            id,
            site,
            mode,
            instance,
            started: Instant::now(),
        }
    }
}

/// Tells watchers of the admin API that some view changed: a generation counter.
#[derive(Debug, Clone)]
pub(crate) struct Changes(Arc<watch::Sender<u64>>);

impl Default for Changes {
    fn default() -> Self {
        Changes(Arc::new(watch::channel(0).0))
    }
}

impl Changes {
    pub(crate) fn notify(&self) {
        self.0.send_modify(|g| *g += 1);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    pub(crate) fn generation(&self) -> u64 {
        *self.0.borrow()
    }
}

/// A cheap xorshift generator for link ids, flow ids and jitter (not for secrets).
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(AtomicU64::new(seed | 1))
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn u32(&self) -> u32 {
        (self.u64() >> 32) as u32
    }

    pub(crate) fn u64(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self
                .0
                .compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return y,
                Err(cur) => x = cur,
            }
        }
    }
}
