//! The tokio runtime that Redis calls run on: one per process.
//!
//! A process forked after it used Redis (gunicorn's `--preload`, Celery's prefork pool, `multiprocessing`
//! with the fork start method) inherits the parent's runtime without its worker threads: whatever ran on
//! it would wait forever, timeouts included, since no thread drives its timers. The first call in the
//! child builds a runtime of its own instead. The inherited one is left untouched, never dropped: dropping
//! it would wait for threads that do not exist here.

use std::sync::atomic::{AtomicPtr, Ordering};

use tokio::runtime::{Builder, Runtime};

/// A runtime and the process that built it.
struct Owned {
    pid: u32,
    runtime: Runtime,
}

/// The latest runtime built: a pointer from `Box::into_raw`, never freed once published.
static CURRENT: AtomicPtr<Owned> = AtomicPtr::new(std::ptr::null_mut());

/// This process's runtime, built on first use (in each process).
///
/// # Panics
/// If the operating system refuses the runtime its threads or its event queue.
pub(crate) fn runtime() -> &'static Runtime {
    let pid = crate::process::id();
    loop {
        let current = CURRENT.load(Ordering::Acquire);
        // SAFETY: a non-null pointer in CURRENT came from Box::into_raw below and is never freed.
        if let Some(owned) = unsafe { current.as_ref() } {
            if owned.pid == pid {
                return &owned.runtime;
            }
        }
        let runtime = Builder::new_multi_thread()
            .enable_all()
            .thread_name("ferrolimit-redis")
            .build()
            .expect("ferrolimit: cannot start the tokio runtime for Redis");
        let fresh = Box::into_raw(Box::new(Owned { pid, runtime }));
        match CURRENT.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // The one replaced, if any, is the parent's: leaked on purpose (see the module's comment).
            // SAFETY: `fresh` is published now and, like every published one, never freed.
            Ok(_) => return unsafe { &(*fresh).runtime },
            Err(_) => {
                // Another thread of this process published one first: use that one.
                // SAFETY: `fresh` was never published, so nothing else refers to it.
                unsafe { Box::from_raw(fresh) }.runtime.shutdown_background();
            }
        }
    }
}
