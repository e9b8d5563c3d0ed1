//! Behavioural suites that every backend must pass, run by each backend's tests.

use std::sync::Arc;

use bytes::Bytes;

use crate::registry::{RegistryStore, WriteOutcome};

/// Checks the compare-and-swap contract of a [`RegistryStore`] that starts empty.
///
/// Panics with a description of the first broken rule.
pub async fn registry_store_conformance(store: Arc<dyn RegistryStore>) {
    assert!(store.read().await.expect("read empty").is_none(), "a new store must be empty");
    let v1 = match store.write(Bytes::from_static(b"{\"n\":1}"), None).await.expect("first write") {
        WriteOutcome::Written(v) => v,
        WriteOutcome::Conflict => panic!("first write to an empty store conflicted"),
    };
    assert_eq!(
        store.write(Bytes::from_static(b"{\"n\":9}"), None).await.expect("create again"),
        WriteOutcome::Conflict,
        "create-if-absent must fail once a document exists"
    );
    let (bytes, token) = store.read().await.expect("read").expect("document exists");
    assert_eq!(&bytes[..], b"{\"n\":1}");
    assert_eq!(token, v1, "read must return the version the write produced");
    let v2 = match store.write(Bytes::from_static(b"{\"n\":2}"), Some(&v1)).await.expect("update") {
        WriteOutcome::Written(v) => v,
        WriteOutcome::Conflict => panic!("update with the current version conflicted"),
    };
    assert_ne!(v1, v2, "a write must produce a new version");
    assert_eq!(
        store.write(Bytes::from_static(b"{\"n\":3}"), Some(&v1)).await.expect("stale update"),
        WriteOutcome::Conflict,
        "update with a stale version must conflict"
    );
    assert_eq!(&store.read().await.expect("read").expect("exists").0[..], b"{\"n\":2}", "stale write must not land");

    // Concurrent increments: every successful write counts, none is lost.
    let writers = 8;
    let per_writer = 5;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < per_writer {
                let (bytes, token) = store.read().await.expect("read").expect("exists");
                let n: u64 =
                    serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")["n"].as_u64().expect("n");
                let next = Bytes::from(format!("{{\"n\":{}}}", n + 1));
                if let WriteOutcome::Written(_) = store.write(next, Some(&token)).await.expect("write") {
                    done += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let (bytes, _) = store.read().await.expect("read").expect("exists");
    let n = serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")["n"].as_u64().expect("n");
    assert_eq!(n, 2 + writers * per_writer, "concurrent compare-and-swap lost updates");
}
