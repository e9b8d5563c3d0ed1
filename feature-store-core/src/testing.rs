//! Behavioural suites that every backend must pass, run by each backend's tests.

use std::sync::Arc;

use bytes::Bytes;

use crate::online::OnlineStore;
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

/// Checks the contract of an [`OnlineStore`]: round trips, never-regress
/// writes, multi-view reads, project isolation, deletes and drops. Uses
/// views of `project` only, so stores may be shared between suites.
///
/// Panics with a description of the first broken rule.
pub async fn online_store_conformance(store: Arc<dyn OnlineStore>, project: &str) {
    use crate::online::{OnlineRows, OnlineView, ViewRead};
    let other = format!("{project}_other");
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let stats_view = OnlineView::new("stats", None);
    type Item<'a> = (&'a str, i64, Option<&'a [u8]>, Option<&'a [u8]>);
    let rows = |items: &[Item<'_>]| {
        let mut r = OnlineRows::new(names(&["a", "b"]));
        for (k, ts, a, b) in items {
            r.begin_row((*k).to_owned(), *ts);
            r.push_value(*a);
            r.push_value(*b);
        }
        r
    };
    let read = |view: &str, features: &[&str], keys: &[&str]| ViewRead::new(view, names(features), names(keys));
    /// A stored row with the requested values picked out of its record.
    #[derive(Debug, PartialEq)]
    struct Got {
        event_ts: i64,
        values: Vec<Option<Vec<u8>>>,
    }
    let one = |store: Arc<dyn OnlineStore>, project: String, r: ViewRead| async move {
        let rows = store.read(&project, std::slice::from_ref(&r)).await.expect("read").remove(0);
        assert_eq!(rows.len(), r.keys.len(), "one result per requested key");
        rows.into_iter()
            .map(|row| {
                row.map(|row| Got { event_ts: row.event_ts, values: row.values(&r.features).expect("a valid record") })
            })
            .collect::<Vec<_>>()
    };

    // Nothing stored yet.
    let got = one(Arc::clone(&store), project.into(), read("stats", &["a"], &["k=1", "k=2"])).await;
    assert_eq!(got, vec![None, None], "an empty store must return no rows");

    // Round trip, with a null value and a key needing escapes in some layouts.
    let odd = "name=a%2Cb {x}:y";
    let w = store
        .write(
            project,
            &stats_view,
            &rows(&[("k=1", 100, Some(b"\x03one"), None), (odd, 50, Some(b"\x06"), Some(b"\x07b"))]),
        )
        .await
        .expect("write");
    assert_eq!(w.written, 2, "both rows are new");
    let got =
        one(Arc::clone(&store), project.into(), read("stats", &["b", "a", "missing"], &["k=1", odd, "k=9"])).await;
    let k1 = got[0].as_ref().expect("k=1 stored");
    assert_eq!(k1.event_ts, 100);
    assert_eq!(k1.values, vec![None, Some(b"\x03one".to_vec()), None], "values come back by name, nulls as None");
    let k2 = got[1].as_ref().expect("odd key stored");
    assert_eq!((k2.event_ts, k2.values.clone()), (50, vec![Some(b"\x07b".to_vec()), Some(b"\x06".to_vec()), None]));
    assert!(got[2].is_none(), "an unknown key is not found");

    // Writes never regress; equal times overwrite; rows of one call apply in order.
    let w = store.write(project, &stats_view, &rows(&[("k=1", 99, Some(b"\x03old"), None)])).await.expect("write");
    assert_eq!((w.written, w.skipped_older), (0, 1), "an older event time must be skipped");
    let w = store
        .write(project, &stats_view, &rows(&[("k=1", 100, Some(b"\x03same"), Some(b"\x03b")), ("k=1", 90, None, None)]))
        .await
        .expect("write");
    assert_eq!((w.written, w.skipped_older), (1, 1));
    let got = one(Arc::clone(&store), project.into(), read("stats", &["a", "b"], &["k=1"])).await;
    assert_eq!(
        got[0].as_ref().map(|r| r.values.clone()),
        Some(vec![Some(b"\x03same".to_vec()), Some(b"\x03b".to_vec())])
    );
    let w = store.write(project, &stats_view, &rows(&[("k=1", 200, None, Some(b"\x03new"))])).await.expect("write");
    assert_eq!(w.written, 1);
    let got = one(Arc::clone(&store), project.into(), read("stats", &["a", "b"], &["k=1"])).await;
    let r = got[0].as_ref().expect("stored");
    assert_eq!(
        (r.event_ts, r.values.clone()),
        (200, vec![None, Some(b"\x03new".to_vec())]),
        "a newer row replaces the whole row"
    );

    // Several views in one call; projects are isolated.
    let ttl_view = OnlineView::new("profile", Some(std::time::Duration::from_secs(3600)));
    let now = chrono::Utc::now().timestamp_micros();
    let mut p = OnlineRows::new(names(&["a"]));
    p.begin_row("k=1".into(), now);
    p.push_value(Some(b"\x05profile"));
    store.write(project, &ttl_view, &p).await.expect("write view with ttl");
    let mut o = OnlineRows::new(names(&["a"]));
    o.begin_row("k=1".into(), 1);
    o.push_value(Some(b"\x05other"));
    store.write(&other, &stats_view, &o).await.expect("write other project");
    let got = store
        .read(project, &[read("profile", &["a"], &["k=1", "k=2"]), read("stats", &["a"], &["k=2", "k=1"])])
        .await
        .expect("multi-view read");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0][0].as_ref().map(|r| r.event_ts), Some(now), "a fresh value in a view with a ttl is readable");
    assert!(got[0][1].is_none());
    assert!(got[1][0].is_none());
    assert_eq!(got[1][1].as_ref().map(|r| r.event_ts), Some(200), "another project's write must not be visible");

    // Many rows in one call.
    let mut big = OnlineRows::new(names(&["a", "b"]));
    let keys: Vec<String> = (0..3000).map(|i| format!("k={}", 1000 + i)).collect();
    for (i, k) in keys.iter().enumerate() {
        big.begin_row(k.clone(), i as i64);
        big.push_value(Some(format!("\x06{i}").as_bytes()));
        big.push_value(None);
    }
    let w = store.write(project, &stats_view, &big).await.expect("big write");
    assert_eq!(w.written, 3000);
    let got = one(Arc::clone(&store), project.into(), ViewRead::new("stats", names(&["a"]), keys.clone())).await;
    for (i, r) in got.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|| panic!("key {} missing after a big write", keys[i]));
        assert_eq!(r.values[0].as_deref(), Some(format!("\x06{i}").as_bytes()));
    }

    // Deletes and drops.
    let n = store.delete(project, "stats", &names(&["k=1", "k=nope"])).await.expect("delete");
    assert_eq!(n, 1, "delete counts keys that existed");
    let got = one(Arc::clone(&store), project.into(), read("stats", &["a"], &["k=1", odd])).await;
    assert!(got[0].is_none() && got[1].is_some(), "only the deleted key is gone");
    store.drop_view(project, "stats").await.expect("drop");
    let got = one(Arc::clone(&store), project.into(), read("stats", &["a"], &[odd, "k=1000"])).await;
    assert_eq!(got, vec![None, None], "drop_view removes every key of the view");
    let got = one(Arc::clone(&store), project.into(), read("profile", &["a"], &["k=1"])).await;
    assert!(got[0].is_some(), "drop_view leaves other views alone");
    let got = one(Arc::clone(&store), other.clone(), read("stats", &["a"], &["k=1"])).await;
    assert!(got[0].is_some(), "drop_view leaves other projects alone");
    store.drop_view(project, "profile").await.expect("drop");
    store.drop_view(&other, "stats").await.expect("drop");
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_online_store_conforms() {
        super::online_store_conformance(std::sync::Arc::new(crate::online::MemoryOnlineStore::new()), "p").await;
    }
}
