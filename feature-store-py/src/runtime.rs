//! The one tokio runtime every call blocks on, recreated in a forked child.
//!
//! A child made by `fork()` (multiprocessing, PyTorch data loaders) inherits
//! the parent's runtime object but none of its worker threads; blocking on it
//! would hang. So the runtime is remembered with the process id that built
//! it, and a child builds its own. The parent's copy is leaked in the child:
//! dropping it would wait for threads that do not exist there.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::{Builder, Runtime};

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

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
            .thread_name("feature-store")
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
