//! Cache requests that filters hand to the host (`background.cache`), run on host threads so
//! that the client's request never waits for them: nbdkit's readahead filter sends its cache
//! requests from a background thread for the same reason (filters/readahead/bgthread.c).
//!
//! They are hints. A request waits in one queue for the whole process; one for a connection
//! that has closed by then is dropped, one for a range already waiting on the same connection
//! is not queued, and when too many wait the oldest goes. Each runs through the layer's gate
//! like any other call.

use super::below::BelowConnection;
use crate::api::Flags;
use crate::log::{self, Log};
use crate::shutdown::Shutdown;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};

/// Requests that may wait at once: a prefetch that waited behind this many is stale.
const MAX_WAITING: usize = 64;
/// Threads running them: two cache calls overlap (one may wait on the network).
const WORKERS: usize = 2;

struct Request {
    below: Weak<dyn BelowConnection>,
    count: u64,
    offset: u64,
    /// The filter that asked, for the log.
    layer: Arc<str>,
    log: Log,
    shutdown: Shutdown,
}

#[derive(Default)]
struct Queue {
    waiting: Mutex<VecDeque<Request>>,
    ready: Condvar,
}

/// Started on the first request, so after the server has daemonized.
static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();

/// Queue NBD_CMD_CACHE of [offset, offset + count) on `below`, asked for by `layer`.
pub(crate) fn cache(
    below: &Arc<dyn BelowConnection>,
    count: u64,
    offset: u64,
    layer: &Arc<str>,
    log: &Log,
    shutdown: &Shutdown,
) {
    let queue = QUEUE.get_or_init(start);
    let below = Arc::downgrade(below);
    let mut waiting = queue.lock();
    let end = offset.saturating_add(count);
    let covered = waiting
        .iter()
        .any(|r| Weak::ptr_eq(&r.below, &below) && r.offset <= offset && end <= r.offset.saturating_add(r.count));
    if covered {
        return;
    }
    if waiting.len() >= MAX_WAITING {
        waiting.pop_front();
    }
    waiting.push_back(Request {
        below,
        count,
        offset,
        layer: layer.clone(),
        log: log.clone(),
        shutdown: shutdown.clone(),
    });
    queue.ready.notify_one();
}

fn start() -> Arc<Queue> {
    let queue = Arc::new(Queue::default());
    for n in 0..WORKERS {
        let worker = queue.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("background-{n}"))
            .spawn(move || worker.run());
        // With no worker at all requests only wait until they are pushed out: hints lost.
        if spawned.is_err() {
            break;
        }
    }
    queue
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Request>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        loop {
            let request = {
                let mut waiting = self.lock();
                loop {
                    match waiting.pop_front() {
                        Some(request) => break request,
                        None => waiting = self.ready.wait(waiting).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            // A server shutting down runs no more prefetches: its layers are being cleaned up.
            if request.shutdown.requested() {
                continue;
            }
            let Some(below) = request.below.upgrade() else {
                continue;
            };
            if let Err(e) = below.cache(request.count, request.offset, Flags::NONE) {
                log::debug!(
                    request.log,
                    "{}: background cache of {} bytes at {}: {e}",
                    request.layer,
                    request.count,
                    request.offset
                );
            }
        }
    }
}
