use std::time::Duration;

use feature_store_core::model::{DataSource, Entity, FeatureService, FeatureView, Field};
use feature_store_core::{Definitions, Error, ValueType};

const FULL: &str = r#"
entities:
  - name: driver
    join_keys: [driver_id]
    description: a driver
    owner: me@example.com
    tags: {team: ranking}
  - name: store
    join_keys:
      - {name: region, dtype: string}
      - store_id
sources:
  - name: driver_stats
    path: s3://bucket/drivers/*.parquet
    format: parquet
    timestamp_field: event_timestamp
    created_timestamp_field: created
    field_mapping: {"City Name": city}
    description: hourly
    owner: data@example.com
    tags: {tier: gold}
feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    source: driver_stats
    ttl: 1d12h
    online: false
    schema:
      - {name: conv_rate, dtype: float32, description: conversion, tags: {pii: "no"}}
      - {name: trips, dtype: int64}
      - {name: embedding, dtype: "list<float32>"}
    description: stats
    owner: ranking@example.com
    tags: {team: ranking}
  - name: global_stats
    source: driver_stats
feature_services:
  - name: ranking_v1
    features: [driver_hourly_stats:conv_rate, global_stats]
    description: model v1
    owner: ml@example.com
    tags: {model: ranker}
"#;

#[test]
fn every_field_parses() {
    let d = Definitions::from_yaml(FULL, "full.yaml").unwrap();
    let driver = &d.entities[0].value;
    assert_eq!(d.entities[0].file.as_deref(), Some("full.yaml"));
    assert_eq!(driver.join_key_names().collect::<Vec<_>>(), ["driver_id"]);
    assert_eq!((driver.description.as_str(), driver.owner.as_str()), ("a driver", "me@example.com"));
    assert_eq!(driver.tags["team"], "ranking");
    let store = &d.entities[1].value;
    assert_eq!(store.join_keys[0].dtype, Some(ValueType::String));
    assert_eq!(store.join_keys[1].dtype, None);

    let s = &d.sources[0].value;
    assert_eq!(s.path, "s3://bucket/drivers/*.parquet");
    assert!(s.is_glob());
    assert_eq!(s.created_timestamp_field.as_deref(), Some("created"));
    assert_eq!(s.mapped_name("City Name"), "city");
    assert_eq!(s.source_column("city"), "City Name");
    assert_eq!(
        (s.description.as_str(), s.owner.as_str(), s.tags["tier"].as_str()),
        ("hourly", "data@example.com", "gold")
    );

    let v = &d.feature_views[0].value;
    assert_eq!(v.ttl, Some(Duration::from_secs(36 * 3600)));
    assert!(!v.online);
    assert_eq!(v.schema[2].dtype, ValueType::List(Box::new(ValueType::Float32)));
    assert_eq!(v.schema[0].description, "conversion");
    assert_eq!(v.schema[0].tags["pii"], "no");
    let g = &d.feature_views[1].value;
    assert!(g.entities.is_empty() && g.schema.is_empty() && g.online && g.ttl.is_none());

    let svc = &d.feature_services[0].value;
    assert_eq!(svc.features, ["driver_hourly_stats:conv_rate", "global_stats"]);
    assert_eq!(svc.tags["model"], "ranker");
}

#[test]
fn yaml_round_trip() {
    let d = Definitions::from_yaml(FULL, "full.yaml").unwrap();
    let again = Definitions::from_yaml(&d.to_yaml(), "full.yaml").unwrap();
    assert_eq!(d, again);
}

#[test]
fn ttl_zero_means_unlimited_and_numbers_are_seconds() {
    let y = "feature_views:\n  - {name: a, source: s, ttl: 0}\n  - {name: b, source: s, ttl: 90}\n  - {name: c, source: s, ttl: \"0s\"}\n";
    let d = Definitions::from_yaml(y, "f.yaml").unwrap();
    assert_eq!(d.feature_views[0].value.ttl, None);
    assert_eq!(d.feature_views[1].value.ttl, Some(Duration::from_secs(90)));
    assert_eq!(d.feature_views[2].value.ttl, None);
}

#[test]
fn builders_match_yaml() {
    let built = Definitions::new()
        .entity(
            Entity::builder("driver")
                .join_key("driver_id")
                .description("a driver")
                .owner("me@example.com")
                .tag("team", "ranking")
                .build()
                .unwrap(),
        )
        .entity(
            Entity::builder("store").typed_join_key("region", ValueType::String).join_key("store_id").build().unwrap(),
        )
        .source(
            DataSource::builder("driver_stats", "s3://bucket/drivers/*.parquet", "event_timestamp")
                .created_timestamp_field("created")
                .map_field("City Name", "city")
                .description("hourly")
                .owner("data@example.com")
                .tag("tier", "gold")
                .build()
                .unwrap(),
        )
        .feature_view(
            FeatureView::builder("driver_hourly_stats", "driver_stats")
                .entity("driver")
                .ttl(Duration::from_secs(36 * 3600))
                .online(false)
                .field(Field::new("conv_rate", ValueType::Float32).with_description("conversion").with_tag("pii", "no"))
                .feature("trips", ValueType::Int64)
                .feature("embedding", "list<float32>".parse().unwrap())
                .description("stats")
                .owner("ranking@example.com")
                .tag("team", "ranking")
                .build()
                .unwrap(),
        )
        .feature_view(FeatureView::builder("global_stats", "driver_stats").build().unwrap())
        .feature_service(
            FeatureService::builder("ranking_v1")
                .feature("driver_hourly_stats:conv_rate")
                .feature("global_stats")
                .description("model v1")
                .owner("ml@example.com")
                .tag("model", "ranker")
                .build()
                .unwrap(),
        );
    let parsed = Definitions::from_yaml(FULL, "full.yaml").unwrap();
    let strip = |d: &Definitions| Definitions::from_yaml(&d.to_yaml(), "x").unwrap();
    assert_eq!(strip(&built), strip(&parsed));
}

#[test]
fn builders_report_all_problems() {
    let err = Entity::builder("bad name").join_key("k").join_key("k").build().unwrap_err();
    let Error::Invalid { problems } = err else { panic!("expected Invalid") };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].message.contains("bad name"));
    assert!(problems[1].message.contains("listed twice"));
    assert!(FeatureService::builder("s").build().unwrap_err().to_string().contains("at least one feature"));
    assert!(FeatureView::builder("a__b", "s").build().unwrap_err().to_string().contains("reserved"));
}

#[test]
fn parse_errors_name_file_and_object_and_are_all_reported() {
    let y = "entities:\n  - {name: driver, join_keys: [id], colour: red}\nfeature_views:\n  - {name: v, source: s, ttl: 3 parsecs}\n  - {source: s}\n";
    let Error::Invalid { problems } = Definitions::from_yaml(y, "defs/bad.yaml").unwrap_err() else { panic!() };
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems.iter().all(|p| p.file.as_deref() == Some("defs/bad.yaml")));
    assert_eq!(problems[0].object, "entity \"driver\"");
    assert!(problems[0].message.contains("unknown field `colour`"));
    assert_eq!(problems[1].object, "feature view \"v\"");
    assert!(problems[1].message.contains("invalid duration"));
    assert_eq!(problems[2].object, "feature_views[1]");
    assert!(problems[2].message.contains("missing field `name`"));
}
