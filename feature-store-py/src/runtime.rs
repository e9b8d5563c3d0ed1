//! The one tokio runtime every call blocks on, recreated in a forked child.
//!
//! A child made by `fork()` (multiprocessing, PyTorch data loaders) inherits
//! the parent's runtime object but none of its worker threads; blocking on it
//! would hang. So the runtime is remembered with the process id that built
//! it, and a child builds its own. The parent's copy is leaked in the child:
//! dropping it would wait for threads that do not exist there.
//!
//! The child also inherits every lock as it was at the fork. tokio's and
//! DataFusion's locks park through `parking_lot`'s one process-wide table
//! of wait queues, each behind a spin-then-futex lock taken for a few
//! instructions; a runtime thread caught in that window (typically the
//! one that has just finished the call the parent made before forking, or
//! an idle blocking thread timing out) leaves its queue locked for good in
//! the child, whose own threads then hang on it. [`before_fork`], which the
//! Python package runs before every fork, waits until no runtime thread is
//! running.

use std::time::{Duration, Instant};

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::{Builder, Runtime};

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The runtime's threads' name (at most 15 bytes: Linux keeps no more).
const THREAD_NAME: &str = "feature-store";

/// The runtime of this process.
pub(crate) fn runtime() -> Arc<Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, rt)) = slot.as_ref()
        && *owner == pid
    {
        return Arc::clone(rt);
    }
    if let Some(inherited) = slot.take() {
        std::mem::forget(inherited);
    }
    let rt = Arc::new(
        Builder::new_multi_thread()
            .enable_all()
            .thread_name(THREAD_NAME)
            .build()
            .expect("the tokio runtime could not start (out of threads or file descriptors?)"),
    );
    *slot = Some((pid, Arc::clone(&rt)));
    rt
}

/// Runs `future` to completion on the process runtime; call with the GIL released.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// Waits, at most `limit`, until no thread of this process's runtime is
/// running (all are blocked in the kernel), so none holds a lock a forked
/// child would inherit held. Returns whether they were all still.
pub(crate) fn before_fork(limit: Duration) -> bool {
    let ours = matches!(
        RUNTIME.lock().unwrap_or_else(PoisonError::into_inner).as_ref(),
        Some((owner, _)) if *owner == std::process::id()
    );
    if !ours {
        return true;
    }
    let deadline = Instant::now() + limit;
    loop {
        match runtime_threads_running() {
            // Not Linux, or /proc unreadable: nothing to wait for that can be seen.
            None => return true,
            Some(0) => return true,
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// How many of the runtime's threads (named "feature-store") are running or
/// runnable, from `/proc/self/task`; `None` where that cannot be read.
fn runtime_threads_running() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut running = 0;
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        if comm.trim_end() != THREAD_NAME {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        // The state follows the name's closing parenthesis: R runs or waits for a core.
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('R')) {
            running += 1;
        }
    }
    Some(running)
}
