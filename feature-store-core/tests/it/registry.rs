use std::sync::Arc;

use feature_store_core::Definitions;
use feature_store_core::Error;
use feature_store_core::registry::{ApplyMode, ChangeAction, MemoryRegistryStore, ObjectKind, RegistryDocument};
use feature_store_core::testing::registry_store_conformance;

use crate::memory_store;

const REPO: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id]}
  - {name: customer, join_keys: [customer_id, region]}
sources:
  - {name: drivers, path: drivers, timestamp_field: event_timestamp, created_timestamp_field: created, field_mapping: {"City Name": city}}
  - {name: customers, path: customers, timestamp_field: ts}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: drivers
    ttl: 2h
    schema:
      - {name: conv_rate, dtype: float32}
      - {name: trips, dtype: int64}
  - {name: customer_ltv, entities: [customer], source: customers}
feature_services:
  - {name: svc, features: [driver_stats, "customer_ltv:ltv"]}
"#;

fn repo() -> Definitions {
    Definitions::from_yaml(REPO, "repo.yaml").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_registry_store_conforms() {
    registry_store_conformance(Arc::new(MemoryRegistryStore::new())).await;
}

#[tokio::test]
async fn apply_infers_schema_and_key_types_and_versions() {
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    let out = store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    assert!(out.written);
    assert_eq!(out.version, 1);
    assert_eq!(out.plan.with_action(ChangeAction::Added).count(), 7);

    let doc = store.registry().refresh().await.unwrap();
    let p = doc.project("proj");
    let ltv = p.feature_view("customer_ltv").unwrap();
    assert_eq!(ltv.feature_names().collect::<Vec<_>>(), ["ltv"], "inferred: keys and timestamps excluded");
    let customer = p.entity("customer").unwrap();
    assert_eq!(customer.join_keys[0].dtype.as_ref().unwrap().to_string(), "string");
    let driver = p.entity("driver").unwrap();
    assert_eq!(driver.join_keys[0].dtype.as_ref().unwrap().to_string(), "int64");

    // Applying the same repo again writes nothing.
    let again = store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    assert!(!again.written && again.plan.is_empty());
    assert_eq!(again.version, 1);

    // The stored document parses as the current format.
    let bytes = doc.to_json();
    assert_eq!(RegistryDocument::from_json(&bytes, "x").unwrap(), *doc);
}

#[tokio::test]
async fn sync_removes_and_merge_keeps() {
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    let created = store.document().await.unwrap().project("proj").registry().feature_views["driver_stats"].created_at;

    // Merge: change one view, keep everything else.
    let mut partial = Definitions::new();
    let mut v = repo().feature_views[0].clone();
    v.value.ttl = Some(std::time::Duration::from_secs(3 * 3600));
    partial.feature_views.push(v);
    let out = store.apply(&partial, ApplyMode::Merge).await.unwrap();
    assert_eq!(out.plan.changes.len(), 1);
    assert_eq!(out.plan.changes[0].details, ["ttl: \"2h\" -> \"3h\""]);
    assert!(out.plan.changes[0].breaking.is_empty());
    let doc = store.registry().refresh().await.unwrap();
    let rec = &doc.project("proj").registry().feature_views["driver_stats"];
    assert_eq!(rec.created_at, created, "created time survives a change");
    assert!(rec.updated_at > created);
    assert_eq!(doc.project("proj").registry().entities.len(), 2);

    // Sync with fewer objects removes the rest and lists them.
    let mut smaller = repo();
    smaller.feature_services.clear();
    smaller.feature_views.retain(|v| v.value.name == "driver_stats");
    let out = store.apply(&smaller, ApplyMode::Sync).await.unwrap();
    let removed: Vec<_> = out.plan.with_action(ChangeAction::Removed).map(|c| (c.kind, c.name.as_str())).collect();
    assert_eq!(removed, [(ObjectKind::FeatureView, "customer_ltv"), (ObjectKind::FeatureService, "svc")]);
    assert!(out.plan.has_breaking());
    assert_eq!(out.version, 3);
}

#[tokio::test]
async fn plan_flags_breaking_changes_and_writes_nothing() {
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    let mut changed = repo();
    let v = &mut changed.feature_views[0].value;
    v.schema.retain(|f| f.name != "trips");
    v.schema[0].dtype = "float64".parse().unwrap();
    let plan = store.plan(&changed, ApplyMode::Sync).await.unwrap();
    let c = &plan.changes[0];
    assert_eq!((c.kind, c.action), (ObjectKind::FeatureView, ChangeAction::Changed));
    assert!(c.breaking.iter().any(|b| b.contains("\"trips\" removed")), "{c:?}");
    assert!(c.breaking.iter().any(|b| b.contains("float32 to float64")), "{c:?}");
    let text = plan.to_string();
    assert!(text.contains("~ feature view driver_stats") && text.contains("BREAKING"), "{text}");
    assert_eq!(store.registry().refresh().await.unwrap().version, 1, "plan must not write");
}

#[tokio::test]
async fn invalid_apply_writes_nothing() {
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    let mut bad = repo();
    bad.feature_views[0].value.entities = vec!["nobody".into()];
    let err = store.apply(&bad, ApplyMode::Sync).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert!(err.to_string().contains("unknown entity \"nobody\""), "{err}");
    let doc = store.registry().refresh().await.unwrap();
    assert_eq!(doc.version, 1);
    assert_eq!(doc.project("proj").feature_view("driver_stats").unwrap().entities, ["driver"]);
}

#[tokio::test]
async fn view_state_survives_changes_and_goes_with_the_view() {
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    let wm = chrono::Utc::now();
    store
        .registry()
        .update(|doc| {
            let p = doc.projects.get_mut("proj").unwrap();
            p.view_state.entry("driver_stats".into()).or_default().watermark = Some(wm);
            Ok(true)
        })
        .await
        .unwrap();
    let mut changed = repo();
    changed.feature_views[0].value.description = "new".into();
    store.apply(&changed, ApplyMode::Sync).await.unwrap();
    let doc = store.registry().refresh().await.unwrap();
    assert_eq!(doc.project("proj").registry().view_state["driver_stats"].watermark, Some(wm));
    changed.feature_views.remove(0);
    changed.feature_services.clear();
    store.apply(&changed, ApplyMode::Sync).await.unwrap();
    let doc = store.registry().refresh().await.unwrap();
    assert!(!doc.project("proj").registry().view_state.contains_key("driver_stats"));
    assert_eq!(doc.version, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merges_lose_nothing() {
    let shared = Arc::new(MemoryRegistryStore::new());
    memory_store(Arc::clone(&shared)).apply(&repo(), ApplyMode::Sync).await.unwrap();
    let writers = 8;
    let mut tasks = Vec::new();
    for i in 0..writers {
        // Separate FeatureStore, so separate caches.
        let store = memory_store(Arc::clone(&shared));
        tasks.push(tokio::spawn(async move {
            let mut v = repo().feature_views[0].clone();
            v.value.name = format!("view_{i}");
            let defs = Definitions { feature_views: vec![v], ..Default::default() };
            store.apply(&defs, ApplyMode::Merge).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().written);
    }
    let doc = memory_store(shared).registry().refresh().await.unwrap();
    for i in 0..writers {
        doc.project("proj").feature_view(&format!("view_{i}")).unwrap();
    }
    assert_eq!(doc.version, 1 + writers as u64);
}

#[tokio::test]
async fn resolve_and_lookup_errors_are_helpful() {
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    let err = store.get_feature_view("driver_stats").await.unwrap_err();
    assert!(err.to_string().contains("run `feature-store apply`"), "{err}");
    store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    let err =
        store.registry().refresh().await.unwrap().project("proj").feature_view("driver_stat").map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("did you mean \"driver_stats\""), "{err}");

    let doc = store.registry().refresh().await.unwrap();
    let p = doc.project("proj");
    let sels = p.service_selections("svc").unwrap();
    let resolved = p.resolve(&sels).unwrap();
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved[0].features, ["conv_rate", "trips"]);
    assert_eq!(resolved[1].features, ["ltv"]);
    let err = p.resolve(&["driver_stats:conv_rat".parse().unwrap()]).unwrap_err();
    assert!(err.to_string().contains("did you mean \"driver_stats:conv_rate\"?"), "{err}");
    // A bare feature name is a view reference; the error says whose feature it is.
    let bare = feature_store_core::Features::refs(["conv_rate"]);
    let err = store.resolve_views(&bare, false).await.unwrap_err().to_string();
    assert!(
        err.contains("\"conv_rate\" is a feature of view \"driver_stats\": write \"driver_stats:conv_rate\""),
        "{err}"
    );
    let err = store.resolve_views(&feature_store_core::Features::refs(["nonsense"]), false).await.unwrap_err();
    assert!(err.to_string().contains("a reference is \"view:feature\""), "{err}");
    let err = store.resolve_views(&feature_store_core::Features::refs(["driver_stats:conv_rat"]), false).await;
    assert!(!err.unwrap_err().to_string().contains("a reference is"), "a view:feature reference needs no lesson");
}

#[tokio::test]
async fn yaml_to_registry_to_yaml_round_trip() {
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    let doc = store.registry().refresh().await.unwrap();
    let exported = doc.project("proj").to_definitions().to_yaml();
    // The export is a valid repo that applies as "no changes".
    let reparsed = Definitions::from_yaml(&exported, "export.yaml").unwrap();
    let out = store.apply(&reparsed, ApplyMode::Sync).await.unwrap();
    assert!(out.plan.is_empty() && !out.written, "{}", out.plan);
    // And it says what the input said, plus what apply resolved.
    assert!(exported.contains("name: ltv\n    dtype: float64"), "{exported}");
    assert!(exported.contains("name: driver_id\n    dtype: int64"), "{exported}");
    let original = repo();
    for v in &original.feature_views {
        let back = reparsed.feature_views.iter().find(|d| d.value.name == v.value.name).unwrap();
        assert_eq!(back.value.ttl, v.value.ttl);
        assert_eq!(back.value.entities, v.value.entities);
    }
    assert_eq!(reparsed.sources.iter().map(|d| d.value.clone()).collect::<Vec<_>>().len(), 2);
    assert_eq!(reparsed.sources.iter().find(|d| d.value.name == "drivers").unwrap().value, original.sources[0].value);
}

/// The memory reference store has no statistics or dataset storage: calls
/// that need them say which call and which capability, and change nothing.
#[tokio::test]
async fn missing_capabilities_name_the_call_and_change_nothing() {
    use feature_store_core::{EntityInput, Features, HistoricalOptions};
    let store = memory_store(Arc::new(MemoryRegistryStore::new()));
    store.apply(&repo(), ApplyMode::Sync).await.unwrap();
    let before = store.registry().refresh().await.unwrap().version;

    let err = store.profile("driver_stats", None, chrono::Utc::now(), true).await.unwrap_err().to_string();
    assert!(err.contains("profiling feature view \"driver_stats\"") && err.contains("window statistics"), "{err}");

    let entities = EntityInput::Path("entities.parquet".into());
    let features = Features::refs(["driver_stats:trips"]);
    let err = store
        .save_dataset("s1", entities, &features, &HistoricalOptions::default(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("saving dataset \"s1\"") && err.contains("cannot store saved datasets"), "{err}");
    let err = store.delete_dataset("s1").await.unwrap_err().to_string();
    assert!(err.contains("deleting dataset \"s1\""), "{err}");
    assert_eq!(store.registry().refresh().await.unwrap().version, before, "nothing was written");
}
