//! Registry storage on every backend: the conformance suite, and concurrent
//! `apply` from writers with separate caches against one registry.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use feature_store::object_store::open_registry_store;
use feature_store::registry::ApplyMode;
use feature_store::testing::registry_store_conformance;
use feature_store::{Definitions, FeatureStore, RepoConfig};
use feature_store_tests::moto::MotoServer;

use crate::write_repo;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_registry_store("nested/registry.json", dir.path(), &BTreeMap::new()).unwrap();
    registry_store_conformance(store).await;
}

/// A registry holding a field this version does not know (a newer writer's)
/// is read as usual, and writing it is refused instead of dropping the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_writers_fields_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let defs = format!("{BASE}feature_views:\n  - {{name: v, entities: [driver], source: drivers}}\n");
    write_repo(dir.path(), &[("features.yaml", &defs)]);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let path = dir.path().join("data/registry.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let project = doc["projects"].as_object().unwrap().keys().next().unwrap().clone();
    let views = doc["projects"][&project]["feature_views"].as_object_mut().unwrap();
    let view = views.keys().next().unwrap().clone();
    // (A new key inside a definition is refused on read, since definitions
    // deny unknown keys; around them, a newer writer's key is kept this way.)
    views[&view]["lineage"] = serde_json::json!({"job": "nightly"});
    let edited = serde_json::to_vec_pretty(&doc).unwrap();
    std::fs::write(&path, &edited).unwrap();

    let store = feature_store::open(dir.path()).unwrap();
    if let Err(e) = store.get_feature_view(&view).await {
        panic!("reading works: {e}");
    }
    let mut defs = store.repo_definitions().unwrap();
    defs.feature_views.pop();
    let err = store.apply(&defs, ApplyMode::Sync).await.unwrap_err().to_string();
    let field = format!("projects.{project}.feature_views.{view}.lineage");
    assert!(err.contains(&field) && err.contains("writing would drop it"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), edited, "the registry is untouched");
}

/// A writer killed between creating its temp file and renaming it leaves the
/// temp file; the next write (holding the lock) sweeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_writers_temp_file_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_registry_store("registry.json", dir.path(), &BTreeMap::new()).unwrap();
    let stale = dir.path().join(".registry.json.4242.tmp");
    std::fs::write(&stale, vec![b'x'; 1 << 20]).unwrap();
    let other = dir.path().join(".other.json.4242.tmp");
    std::fs::write(&other, b"not ours").unwrap();
    store.write(bytes::Bytes::from_static(b"{}"), None).await.unwrap();
    assert!(!stale.exists(), "the stale temp file is swept");
    assert!(other.exists(), "only this registry's temp files are touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_url_store_conforms() {
    let store = open_registry_store("memory://conformance/registry.json", Path::new("/"), &BTreeMap::new()).unwrap();
    registry_store_conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    let moto = MotoServer::start();
    moto.create_bucket("conformance");
    let store = open_registry_store("s3://conformance/reg/registry.json", Path::new("/"), &moto.options()).unwrap();
    registry_store_conformance(store).await;
}

const BASE: &str = "entities:\n  - {name: driver, join_keys: [driver_id]}\nsources:\n  - {name: drivers, path: data/drivers.parquet, timestamp_field: event_timestamp}\n";

/// Eight writers, each its own `FeatureStore` (own cache), each merging a
/// different feature view into one registry at the same time.
async fn concurrent_writers(registry: &str, options: BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path(), &[("base.yaml", BASE)]);
    let open = || {
        let mut config = RepoConfig::new("demo", registry);
        config.repo_path = dir.path().to_path_buf();
        config.registry = config.registry.clone().with_cache_ttl(std::time::Duration::from_secs(60));
        config.registry.storage_options = Some(options.clone());
        feature_store::from_config(config).unwrap()
    };
    let first = open();
    first.apply(&Definitions::from_yaml(BASE, "base.yaml").unwrap(), ApplyMode::Sync).await.unwrap();
    let writers = 8;
    let stores: Vec<FeatureStore> = (0..writers).map(|_| open()).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(writers));
    let mut tasks = Vec::new();
    for (i, store) in stores.into_iter().enumerate() {
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            store.document().await.unwrap(); // warm a cache that will be stale
            let yaml = format!(
                "feature_views:\n  - {{name: view_{i}, entities: [driver], source: drivers, schema: [{{name: conv_rate, dtype: float32}}]}}\n"
            );
            let defs = Definitions::from_yaml(&yaml, "v.yaml").unwrap();
            barrier.wait().await;
            store.apply(&defs, ApplyMode::Merge).await.unwrap()
        }));
    }
    let mut retried = 0;
    for t in tasks {
        let out = t.await.unwrap();
        assert!(out.written);
        retried += usize::from(out.attempts > 1);
    }
    let doc = open().registry().refresh().await.unwrap();
    let project = doc.project("demo");
    for i in 0..writers {
        project.feature_view(&format!("view_{i}")).unwrap();
    }
    assert_eq!(project.registry().entities.len(), 1);
    assert_eq!(doc.version, 1 + writers as u64, "every write counts one version");
    eprintln!("{registry}: {retried} of {writers} writers retried after a conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_apply_local_file() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_writers(&dir.path().join("registry.json").display().to_string(), BTreeMap::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_apply_memory() {
    concurrent_writers("memory://concurrency/registry.json", BTreeMap::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_apply_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("registry");
    concurrent_writers("s3://registry/feature_store/registry.json", moto.options()).await;
}

/// The registry merge under random interleavings (seeded): six writers,
/// each a separate `FeatureStore` on one registry, run random sequences of
/// merge-applies (new views, changed descriptions of their own views) and
/// watermark advances on a shared view (`update`, keeping the greater),
/// with random pauses. Whatever the interleaving: every view a writer
/// applied is there with its last description, the shared watermark is the
/// greatest ever written (it never regresses), every successful write
/// counts exactly one version, and the document reads back as written.
async fn merge_under_random_interleavings(registry: &str, options: BTreeMap<String, String>, seeds: u64) {
    use chrono::{DateTime, TimeZone, Utc};
    let mut conflicts = 0;
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        write_repo(dir.path(), &[("base.yaml", BASE)]);
        let registry = registry.replace("{seed}", &seed.to_string());
        let open = || {
            let mut config = RepoConfig::new("demo", &registry);
            config.repo_path = dir.path().to_path_buf();
            config.registry = config.registry.clone().with_cache_ttl(std::time::Duration::from_secs(60));
            config.registry.storage_options = Some(options.clone());
            feature_store::from_config(config).unwrap()
        };
        let base = format!(
            "{BASE}feature_views:\n  - {{name: shared, entities: [driver], source: drivers, schema: [{{name: conv_rate, dtype: float32}}]}}\n"
        );
        let first = open();
        first.apply(&Definitions::from_yaml(&base, "base.yaml").unwrap(), ApplyMode::Sync).await.unwrap();
        let writers = 6usize;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = open();
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (w as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            tasks.push(tokio::spawn(async move {
                // (view -> last description) this writer applied; watermarks written; writes.
                let mut views: BTreeMap<String, String> = BTreeMap::new();
                let mut marks: Vec<DateTime<Utc>> = Vec::new();
                let mut writes = 0u64;
                let mut retried = 0u64;
                for op in 0..6u64 {
                    tokio::time::sleep(std::time::Duration::from_micros(next(3000))).await;
                    match next(3) {
                        0 | 1 => {
                            let name = if views.is_empty() || next(2) == 0 {
                                format!("view_{w}_{op}")
                            } else {
                                views.keys().nth(next(views.len() as u64) as usize).unwrap().clone()
                            };
                            let description = format!("d{w}x{op}x{}", next(1000));
                            let yaml = format!(
                                "feature_views:\n  - {{name: {name}, entities: [driver], source: drivers, description: {description}, schema: [{{name: conv_rate, dtype: float32}}]}}\n"
                            );
                            let out = store
                                .apply(&Definitions::from_yaml(&yaml, "v.yaml").unwrap(), ApplyMode::Merge)
                                .await
                                .unwrap();
                            assert!(out.written, "a changed definition was not written");
                            writes += 1;
                            retried += u64::from(out.attempts > 1);
                            views.insert(name, description);
                        }
                        _ => {
                            let mark = Utc.timestamp_opt(1_700_000_000 + next(100_000) as i64, 0).unwrap();
                            let mut wrote = false;
                            store
                                .registry()
                                .update(|doc| {
                                    let state =
                                        doc.projects.get_mut("demo").unwrap().view_state.entry("shared".into()).or_default();
                                    wrote = state.watermark.is_none_or(|m| m < mark);
                                    if wrote {
                                        state.watermark = Some(mark);
                                    }
                                    Ok(wrote)
                                })
                                .await
                                .unwrap();
                            writes += u64::from(wrote);
                            marks.push(mark);
                        }
                    }
                }
                (views, marks, writes, retried)
            }));
        }
        let (mut views, mut marks, mut writes) = (BTreeMap::new(), Vec::new(), 1u64);
        for t in tasks {
            let (v, m, n, r) = t.await.unwrap();
            views.extend(v);
            marks.extend(m);
            writes += n;
            conflicts += r;
        }
        let doc = open().registry().refresh().await.unwrap();
        let project = doc.project("demo");
        for (name, description) in &views {
            let view = project.feature_view(name).unwrap_or_else(|e| panic!("seed {seed}: view {name} lost: {e}"));
            assert_eq!(&view.description, description, "seed {seed}: view {name} lost its last description");
        }
        assert_eq!(project.registry().feature_views.len(), views.len() + 1, "seed {seed}: views appeared or vanished");
        let mark = project.registry().view_state.get("shared").and_then(|s| s.watermark);
        assert_eq!(mark, marks.iter().copied().max(), "seed {seed}: the watermark regressed or a write was lost");
        assert_eq!(doc.version, writes, "seed {seed}: every successful write counts one version");
        let back = feature_store::registry::RegistryDocument::from_json(&doc.to_json(), "round trip").unwrap();
        assert_eq!(back.to_json(), doc.to_json(), "seed {seed}: the document does not read back as written");
    }
    eprintln!("{registry}: {conflicts} applies retried after a conflict in {seeds} seeds");
    assert!(conflicts > 0, "no writer ever met another: the interleavings tested nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_merge_under_random_interleavings_memory() {
    merge_under_random_interleavings("memory://interleavings-{seed}/registry.json", BTreeMap::new(), 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_merge_under_random_interleavings_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("{seed}/registry.json").display().to_string();
    merge_under_random_interleavings(&path, BTreeMap::new(), 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_merge_under_random_interleavings_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("interleavings");
    merge_under_random_interleavings("s3://interleavings/{seed}/registry.json", moto.options(), 3).await;
}
