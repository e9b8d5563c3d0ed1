//! The online store contract, one behaviour per function. Each takes a store
//! and a project name and touches only that project's views, so a store may
//! be shared; [`online_store_suite!`](crate::online_store_suite) makes one
//! test per behaviour for a backend.

use std::sync::Arc;

use crate::online::{OnlineRows, OnlineStore, OnlineView, StoredRow, ViewRead};

/// The behaviours, in the order [`online_store_conformance`] runs them.
pub const BEHAVIOURS: &[&str] = &[
    "empty_store_returns_nothing",
    "round_trip",
    "never_regress",
    "multi_view_read",
    "project_isolation",
    "bulk_write",
    "delete_counts_existing_keys",
    "drop_view_removes_only_that_view",
    "compare_and_swap_is_atomic_per_key",
    "random_interleavings_never_regress",
];

/// A stored row with the requested values picked out of its record.
#[derive(Debug, PartialEq)]
struct Got {
    event_ts: i64,
    values: Vec<Option<Vec<u8>>>,
}

type Item<'a> = (&'a str, i64, Option<&'a [u8]>, Option<&'a [u8]>);

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Rows of features `a` and `b`.
fn rows(items: &[Item<'_>]) -> OnlineRows {
    let mut r = OnlineRows::new(names(&["a", "b"]));
    for (k, ts, a, b) in items {
        r.begin_row((*k).to_owned(), *ts);
        r.push_value(*a);
        r.push_value(*b);
    }
    r
}

fn read(view: &str, features: &[&str], keys: &[&str]) -> ViewRead {
    ViewRead::new(view, names(features), names(keys))
}

fn stats() -> OnlineView {
    OnlineView::new("stats", None)
}

async fn one(store: &dyn OnlineStore, project: &str, r: ViewRead) -> Vec<Option<Got>> {
    let rows = store.read(project, std::slice::from_ref(&r)).await.expect("read").remove(0);
    assert_eq!(rows.len(), r.keys.len(), "one result per requested key");
    rows.into_iter()
        .map(|row| {
            row.map(|row| Got { event_ts: row.event_ts, values: row.values(&r.features).expect("a valid record") })
        })
        .collect()
}

/// A key that needs escaping in some layouts.
const ODD: &str = "name=a%2Cb {x}:y";

/// Reads from a store (or view) that holds nothing find nothing.
pub async fn empty_store_returns_nothing(store: Arc<dyn OnlineStore>, project: &str) {
    let got = one(store.as_ref(), project, read("stats", &["a"], &["k=1", "k=2"])).await;
    assert_eq!(got, vec![None, None], "an empty store must return no rows");
    let got = store.read(project, &[]).await.expect("an empty read");
    assert!(got.is_empty(), "no reads, no results");
}

/// Values come back by name, nulls as `None`, odd keys intact, unknown keys not found.
pub async fn round_trip(store: Arc<dyn OnlineStore>, project: &str) {
    let w = store
        .write(
            project,
            &stats(),
            &rows(&[("k=1", 100, Some(b"\x03one"), None), (ODD, 50, Some(b"\x06"), Some(b"\x07b"))]),
        )
        .await
        .expect("write");
    assert_eq!(w.written, 2, "both rows are new");
    let got = one(store.as_ref(), project, read("stats", &["b", "a", "missing"], &["k=1", ODD, "k=9"])).await;
    let k1 = got[0].as_ref().expect("k=1 stored");
    assert_eq!(k1.event_ts, 100);
    assert_eq!(k1.values, vec![None, Some(b"\x03one".to_vec()), None], "values come back by name, nulls as None");
    let k2 = got[1].as_ref().expect("odd key stored");
    assert_eq!((k2.event_ts, k2.values.clone()), (50, vec![Some(b"\x07b".to_vec()), Some(b"\x06".to_vec()), None]));
    assert!(got[2].is_none(), "an unknown key is not found");
}

/// Older event times are skipped, equal ones overwrite, rows of one call
/// apply in order, and a newer row replaces the whole row.
pub async fn never_regress(store: Arc<dyn OnlineStore>, project: &str) {
    let w = store.write(project, &stats(), &rows(&[("k=1", 100, Some(b"\x03one"), None)])).await.expect("write");
    assert_eq!((w.written, w.skipped_older), (1, 0));
    let w = store.write(project, &stats(), &rows(&[("k=1", 99, Some(b"\x03old"), None)])).await.expect("write");
    assert_eq!((w.written, w.skipped_older), (0, 1), "an older event time must be skipped");
    let w = store
        .write(project, &stats(), &rows(&[("k=1", 100, Some(b"\x03same"), Some(b"\x03b")), ("k=1", 90, None, None)]))
        .await
        .expect("write");
    assert_eq!(
        (w.written, w.skipped_older),
        (1, 1),
        "an equal time overwrites; a later older row in the call is skipped"
    );
    let got = one(store.as_ref(), project, read("stats", &["a", "b"], &["k=1"])).await;
    assert_eq!(
        got[0].as_ref().map(|r| r.values.clone()),
        Some(vec![Some(b"\x03same".to_vec()), Some(b"\x03b".to_vec())])
    );
    let w = store.write(project, &stats(), &rows(&[("k=1", 200, None, Some(b"\x03new"))])).await.expect("write");
    assert_eq!(w.written, 1);
    let got = one(store.as_ref(), project, read("stats", &["a", "b"], &["k=1"])).await;
    let r = got[0].as_ref().expect("stored");
    assert_eq!(
        (r.event_ts, r.values.clone()),
        (200, vec![None, Some(b"\x03new".to_vec())]),
        "a newer row replaces the whole row"
    );
}

/// Several views in one read call, each with its keys in order, a view
/// with a ttl included.
pub async fn multi_view_read(store: Arc<dyn OnlineStore>, project: &str) {
    store.write(project, &stats(), &rows(&[("k=1", 200, Some(b"\x03s"), None)])).await.expect("write");
    let ttl_view = OnlineView::new("profile", Some(std::time::Duration::from_secs(3600)));
    let now = chrono::Utc::now().timestamp_micros();
    let mut p = OnlineRows::new(names(&["a"]));
    p.begin_row("k=1".into(), now);
    p.push_value(Some(b"\x05profile"));
    store.write(project, &ttl_view, &p).await.expect("write view with ttl");
    let got = store
        .read(project, &[read("profile", &["a"], &["k=1", "k=2"]), read("stats", &["a"], &["k=2", "k=1"])])
        .await
        .expect("multi-view read");
    assert_eq!(got.len(), 2, "one result per read");
    assert_eq!(got[0][0].as_ref().map(|r| r.event_ts), Some(now), "a fresh value in a view with a ttl is readable");
    assert!(got[0][1].is_none());
    assert!(got[1][0].is_none());
    assert_eq!(got[1][1].as_ref().map(|r| r.event_ts), Some(200), "keys keep their order within a read");
}

/// A write in one project is invisible in another.
pub async fn project_isolation(store: Arc<dyn OnlineStore>, project: &str) {
    let other = format!("{project}_other");
    store.write(project, &stats(), &rows(&[("k=1", 200, Some(b"\x03mine"), None)])).await.expect("write");
    let mut o = OnlineRows::new(names(&["a"]));
    o.begin_row("k=1".into(), 1);
    o.push_value(Some(b"\x05other"));
    store.write(&other, &stats(), &o).await.expect("write other project");
    o.begin_row("k=2".into(), 1);
    o.push_value(Some(b"\x05other"));
    store.write(&other, &stats(), &o).await.expect("write other project");
    let got = one(store.as_ref(), project, read("stats", &["a"], &["k=1", "k=2"])).await;
    assert_eq!(got[0].as_ref().map(|r| r.event_ts), Some(200), "another project's write must not be visible");
    assert!(got[1].is_none(), "another project's keys must not be visible");
    let got = one(store.as_ref(), &other, read("stats", &["a"], &["k=1"])).await;
    assert_eq!(got[0].as_ref().map(|r| r.event_ts), Some(1));
}

/// Thousands of rows in one call are all stored and read back.
pub async fn bulk_write(store: Arc<dyn OnlineStore>, project: &str) {
    let mut big = OnlineRows::new(names(&["a", "b"]));
    let keys: Vec<String> = (0..3000).map(|i| format!("k={}", 1000 + i)).collect();
    for (i, k) in keys.iter().enumerate() {
        big.begin_row(k.clone(), i as i64);
        big.push_value(Some(format!("\x06{i}").as_bytes()));
        big.push_value(None);
    }
    let w = store.write(project, &stats(), &big).await.expect("big write");
    assert_eq!(w.written, 3000);
    let got = one(store.as_ref(), project, ViewRead::new("stats", names(&["a"]), keys.clone())).await;
    for (i, r) in got.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|| panic!("key {} missing after a big write", keys[i]));
        assert_eq!(r.values[0].as_deref(), Some(format!("\x06{i}").as_bytes()));
    }
}

/// `delete` removes the given keys only and counts those that existed.
pub async fn delete_counts_existing_keys(store: Arc<dyn OnlineStore>, project: &str) {
    store
        .write(project, &stats(), &rows(&[("k=1", 1, Some(b"\x03a"), None), (ODD, 1, Some(b"\x03b"), None)]))
        .await
        .expect("write");
    let n = store.delete(project, "stats", &names(&["k=1", "k=nope"])).await.expect("delete");
    assert_eq!(n, 1, "delete counts keys that existed");
    let got = one(store.as_ref(), project, read("stats", &["a"], &["k=1", ODD])).await;
    assert!(got[0].is_none() && got[1].is_some(), "only the deleted key is gone");
    let n = store.delete(project, "stats", &names(&["k=1"])).await.expect("delete again");
    assert_eq!(n, 0, "deleting a missing key counts nothing");
}

/// `drop_view` removes every key of the view and nothing of other views or projects.
pub async fn drop_view_removes_only_that_view(store: Arc<dyn OnlineStore>, project: &str) {
    let other = format!("{project}_other");
    let mut big = OnlineRows::new(names(&["a", "b"]));
    for i in 0..500 {
        big.begin_row(format!("k={i}"), 1);
        big.push_value(Some(b"\x03x"));
        big.push_value(None);
    }
    store.write(project, &stats(), &big).await.expect("write");
    store
        .write(project, &OnlineView::new("profile", None), &rows(&[("k=1", 1, Some(b"\x03p"), None)]))
        .await
        .expect("write");
    store.write(&other, &stats(), &rows(&[("k=1", 1, Some(b"\x03o"), None)])).await.expect("write");
    store.drop_view(project, "stats").await.expect("drop");
    let got = one(store.as_ref(), project, read("stats", &["a"], &["k=0", "k=1", "k=499"])).await;
    assert_eq!(got, vec![None, None, None], "drop_view removes every key of the view");
    let got = one(store.as_ref(), project, read("profile", &["a"], &["k=1"])).await;
    assert!(got[0].is_some(), "drop_view leaves other views alone");
    let got = one(store.as_ref(), &other, read("stats", &["a"], &["k=1"])).await;
    assert!(got[0].is_some(), "drop_view leaves other projects alone");
    store.drop_view(project, "stats").await.expect("dropping a dropped view succeeds");
    store.drop_view(project, "never_written").await.expect("dropping an unknown view succeeds");
}

/// `compare_and_swap` replaces a row only while the stored row is the
/// expected one (absence included), per key and regardless of event times,
/// and concurrent read-modify-swap loops lose no update.
pub async fn compare_and_swap_is_atomic_per_key(store: Arc<dyn OnlineStore>, project: &str) {
    let view = stats();
    let cas = |rows: OnlineRows, expected: Vec<Option<StoredRow>>| {
        let store = Arc::clone(&store);
        async move { store.compare_and_swap(project, &stats(), &rows, &expected).await.expect("compare_and_swap") }
    };
    let get = |key: &'static str| {
        let store = Arc::clone(&store);
        async move { store.read(project, &[read("stats", &["a"], &[key])]).await.expect("read").remove(0).remove(0) }
    };
    let first = rows(&[("k=1", 5, Some(b"\x03a"), None)]);
    assert_eq!(cas(first.clone(), vec![None]).await, vec![true], "a swap expecting no row creates the key");
    assert_eq!(cas(first, vec![None]).await, vec![false], "a swap expecting no row fails once the key exists");
    let now = get("k=1").await.expect("swapped in");
    assert_eq!(now.values(&names(&["a"])).expect("record"), vec![Some(b"\x03a".to_vec())]);
    let other_value = StoredRow::new(now.event_ts, {
        let mut r = Vec::new();
        rows(&[("k=1", 5, Some(b"\x03z"), None)]).encode_record(0, &mut r);
        r
    });
    let other_time = StoredRow::new(now.event_ts + 1, now.record.clone());
    let stale = rows(&[("k=1", 9, Some(b"\x03s"), None)]);
    assert_eq!(
        cas(stale.clone(), vec![Some(other_value)]).await,
        vec![false],
        "another record is not the expected row"
    );
    assert_eq!(cas(stale, vec![Some(other_time)]).await, vec![false], "another event time is not the expected row");
    // An older event time replaces a row when the row is the expected one;
    // a key expected to exist that does not is left absent.
    let both = rows(&[("k=1", 3, Some(b"\x03b"), None), ("k=2", 1, Some(b"\x03c"), None)]);
    assert_eq!(cas(both, vec![Some(now.clone()), Some(now)]).await, vec![true, false], "each key on its own");
    let got = one(store.as_ref(), project, read("stats", &["a"], &["k=1", "k=2"])).await;
    assert_eq!(got, vec![Some(Got { event_ts: 3, values: vec![Some(b"\x03b".to_vec())] }), None]);
    let twice = rows(&[("k=3", 1, None, None), ("k=3", 2, None, None)]);
    assert!(
        store.compare_and_swap(project, &view, &twice, &[None, None]).await.is_err(),
        "one key twice in one call is refused"
    );
    assert!(
        store.compare_and_swap(project, &view, &rows(&[("k=3", 1, None, None)]), &[]).await.is_err(),
        "a missing expected row is refused"
    );

    // Tasks incrementing two shared counters: every increment lands once.
    const TASKS: usize = 4;
    const ROUNDS: usize = 25;
    let counters = ["n=a", "n=b"];
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, project) = (Arc::clone(&store), project.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let mut pending: Vec<&str> = counters.to_vec();
                while !pending.is_empty() {
                    let r = read("stats", &["a"], &pending);
                    let found = store.read(&project, &[r]).await.expect("read").remove(0);
                    let mut next = OnlineRows::new(names(&["a", "b"]));
                    for (key, row) in pending.iter().zip(&found) {
                        let n: u64 = match row {
                            None => 0,
                            Some(row) => {
                                let v = row.values(&names(&["a"])).expect("record").remove(0).expect("a value");
                                std::str::from_utf8(&v).expect("digits").parse().expect("a count")
                            }
                        };
                        next.begin_row((*key).to_owned(), 1);
                        next.push_value(Some((n + 1).to_string().as_bytes()));
                        next.push_value(None);
                    }
                    let done = store.compare_and_swap(&project, &stats(), &next, &found).await.expect("swap");
                    pending = pending.iter().zip(&done).filter(|(_, ok)| !**ok).map(|(k, _)| *k).collect();
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let got = one(store.as_ref(), project, read("stats", &["a"], &counters)).await;
    for (key, row) in counters.iter().zip(got) {
        let v = row.expect("a counter").values.remove(0).expect("a value");
        assert_eq!(
            std::str::from_utf8(&v).expect("digits"),
            (TASKS * ROUNDS).to_string(),
            "counter {key}: concurrent swaps lost updates"
        );
    }
}

/// Every behaviour in turn on one store, each under its own project derived
/// from `project`, so the store may already hold other data; the suite's
/// views are dropped at the end.
///
/// Panics with a description of the first broken rule.
pub async fn online_store_conformance(store: Arc<dyn OnlineStore>, project: &str) {
    let projects: Vec<String> =
        ["empty", "round_trip", "never_regress", "multi_view", "isolation", "bulk", "delete", "drop", "swap", "race"]
            .iter()
            .map(|b| format!("{project}_{b}"))
            .collect();
    empty_store_returns_nothing(Arc::clone(&store), &projects[0]).await;
    round_trip(Arc::clone(&store), &projects[1]).await;
    never_regress(Arc::clone(&store), &projects[2]).await;
    multi_view_read(Arc::clone(&store), &projects[3]).await;
    project_isolation(Arc::clone(&store), &projects[4]).await;
    bulk_write(Arc::clone(&store), &projects[5]).await;
    delete_counts_existing_keys(Arc::clone(&store), &projects[6]).await;
    drop_view_removes_only_that_view(Arc::clone(&store), &projects[7]).await;
    compare_and_swap_is_atomic_per_key(Arc::clone(&store), &projects[8]).await;
    random_interleavings_never_regress(Arc::clone(&store), &projects[9]).await;
    // Leave the store as it was found.
    for p in &projects {
        for project in [p.clone(), format!("{p}_other")] {
            for view in ["stats", "profile"] {
                store.drop_view(&project, view).await.expect("drop the suite's views");
            }
        }
    }
}

/// Property: four writers race seeded random writes (keys, event times with
/// ties, batches of any size) at the store. Every key ends at its greatest
/// event time, holding one whole row written with that time (both features
/// from the same write), whatever the interleaving.
pub async fn random_interleavings_never_regress(store: Arc<dyn OnlineStore>, project: &str) {
    const KEYS: u64 = 24;
    const WRITERS: u64 = 4;
    const WRITES: u64 = 60;
    for round in 0..3u64 {
        let view = OnlineView::new(format!("race{round}"), None);
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ (round + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        // (key, event time, value) per writer, in its batches.
        type Batches = Vec<Vec<(u64, i64, Vec<u8>)>>;
        let mut plans: Vec<Batches> = Vec::new();
        for w in 0..WRITERS {
            let mut batches = vec![Vec::new()];
            for i in 0..WRITES {
                let value = format!("w{w}i{i}").into_bytes();
                batches.last_mut().expect("one batch").push((next(KEYS), next(20) as i64, value));
                if next(5) == 0 {
                    batches.push(Vec::new());
                }
            }
            plans.push(batches);
        }
        let tasks: Vec<_> = plans
            .iter()
            .cloned()
            .map(|batches| {
                let (store, project, view) = (Arc::clone(&store), project.to_owned(), view.clone());
                tokio::spawn(async move {
                    for batch in batches.into_iter().filter(|b| !b.is_empty()) {
                        let mut r = OnlineRows::new(names(&["a", "b"]));
                        for (k, ts, v) in &batch {
                            r.begin_row(format!("k={k}"), *ts);
                            r.push_value(Some(v));
                            r.push_value(Some(v));
                        }
                        store.write(&project, &view, &r).await.expect("write");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("a writer panicked");
        }
        let keys: Vec<String> = (0..KEYS).map(|k| format!("k={k}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = one(store.as_ref(), project, read(&view.name, &["a", "b"], &keys)).await;
        for k in 0..KEYS {
            let writes: Vec<&(u64, i64, Vec<u8>)> = plans.iter().flatten().flatten().filter(|w| w.0 == k).collect();
            let Some(max) = writes.iter().map(|w| w.1).max() else {
                assert!(got[k as usize].is_none(), "key {k} was never written but is stored");
                continue;
            };
            let row = got[k as usize].as_ref().unwrap_or_else(|| panic!("key {k} was written but is not stored"));
            assert_eq!(row.event_ts, max, "key {k} regressed (round {round})");
            let a = row.values[0].clone().expect("a stored");
            assert_eq!(row.values[1].as_ref(), Some(&a), "key {k}: the row mixes two writes");
            assert!(
                writes.iter().any(|w| w.1 == max && w.2 == a),
                "key {k}: the stored value was not written at the key's greatest event time"
            );
        }
        store.drop_view(project, &view.name).await.expect("drop");
    }
}

/// One `#[tokio::test]` per online-store behaviour for a backend.
///
/// `$make` is an async expression giving `(Arc<dyn OnlineStore>, guard)`;
/// the guard (a temp dir, a server) lives until the test ends. The calling
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
///
/// See `feature-store-sqlite` (a temp file per test) and the workspace
/// tests' `suites.rs` (a Redis server per test) for uses.
#[macro_export]
macro_rules! online_store_suite {
    ($make:expr) => {
        $crate::online_store_suite!(@each $make;
            empty_store_returns_nothing, round_trip, never_regress, multi_view_read, project_isolation,
            bulk_write, delete_counts_existing_keys, drop_view_removes_only_that_view,
            compare_and_swap_is_atomic_per_key, random_interleavings_never_regress);
    };
    (@each $make:expr; $($behaviour:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() {
                let (store, _guard): (::std::sync::Arc<dyn $crate::online::OnlineStore>, _) = $make.await;
                // Each behaviour its own project, so two tests that reached one
                // server by accident would still not see each other's keys.
                $crate::testing::online::$behaviour(store, stringify!($behaviour)).await;
            }
        )+
    };
}
