//! The current process's id without a system call each time: `getpid()` once, and once more in a child after
//! `fork()`. The Redis store checks it on every call, to leave what a forked process inherited alone.

use std::sync::atomic::{AtomicU32, Ordering};

/// This process's id once read; 0 before that, and in a child from the moment it is forked.
static PID: AtomicU32 = AtomicU32::new(0);

#[cfg(unix)]
mod fork {
    use std::ffi::c_int;
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;

    extern "C" {
        fn pthread_atfork(
            prepare: Option<unsafe extern "C" fn()>,
            parent: Option<unsafe extern "C" fn()>,
            child: Option<unsafe extern "C" fn()>,
        ) -> c_int;
    }

    /// Runs in the child, in the thread that forked, before anything else there: the next read is fresh.
    unsafe extern "C" fn forked() {
        super::PID.store(0, Ordering::Relaxed);
    }

    /// Whether the handler is in place: until it is, the id is read every time.
    pub(super) fn watched() -> bool {
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        // SAFETY: `forked` only stores to an atomic, which is async-signal-safe as a fork handler must be.
        *REGISTERED.get_or_init(|| unsafe { pthread_atfork(None, None, Some(forked)) } == 0)
    }
}

#[cfg(not(unix))]
mod fork {
    /// No fork here: the id never changes.
    pub(super) fn watched() -> bool {
        true
    }
}

/// The id of the current process, as `std::process::id()` gives it.
pub fn id() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    let pid = std::process::id();
    if fork::watched() {
        PID.store(pid, Ordering::Relaxed);
    }
    pid
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_is_the_process_id() {
        assert_eq!(super::id(), std::process::id());
        assert_eq!(super::id(), std::process::id(), "cached");
    }
}
