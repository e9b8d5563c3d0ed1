//! Text tables and JSON for list commands.

use feature_store::duration::format_duration;
use feature_store::model::{DataSource, Entity, FeatureService, FeatureView, OnDemandFeatureView, RequestSource};
use feature_store::registry::Record;
use serde::Serialize;

pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A freshness in milliseconds for people: `42 ms` below ten seconds,
/// `12h35m52s` above (old events replayed), and a minus sign for events
/// whose time is ahead of this machine's clock.
pub(crate) fn freshness(ms: f64) -> String {
    let sign = if ms < 0.0 { "-" } else { "" };
    let abs = ms.abs();
    if abs < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{sign}{}", feature_store::duration::format_duration(std::time::Duration::from_secs(abs as u64 / 1000)))
    }
}

#[cfg(test)]
mod freshness_tests {
    #[test]
    fn freshness_reads_as_a_duration_when_long() {
        assert_eq!(super::freshness(42.4), "42 ms");
        assert_eq!(super::freshness(-900.0), "-900 ms");
        assert_eq!(super::freshness(45_352_288.0), "12h35m52s");
        assert_eq!(super::freshness(-525_115.0), "-8m45s");
    }
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn when(r: &chrono::DateTime<chrono::Utc>) -> String {
    r.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

pub(crate) fn entities(items: &[Record<Entity>], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(items);
    }
    table(
        &["NAME", "JOIN KEYS", "DESCRIPTION", "UPDATED"],
        items
            .iter()
            .map(|r| {
                let keys = r.spec.join_keys.iter().map(|k| match &k.dtype {
                    Some(t) => format!("{}:{t}", k.name),
                    None => k.name.clone(),
                });
                vec![
                    r.spec.name.clone(),
                    keys.collect::<Vec<_>>().join(","),
                    r.spec.description.clone(),
                    when(&r.updated_at),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub(crate) fn sources(items: &[Record<DataSource>], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(items);
    }
    table(
        &["NAME", "PATH", "TIMESTAMP", "CREATED", "UPDATED"],
        items
            .iter()
            .map(|r| {
                vec![
                    r.spec.name.clone(),
                    r.spec.path.clone(),
                    r.spec.timestamp_field.clone(),
                    r.spec.created_timestamp_field.clone().unwrap_or_default(),
                    when(&r.updated_at),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub(crate) fn views(items: &[Record<FeatureView>], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(items);
    }
    table(
        &["NAME", "ENTITIES", "SOURCE", "FEATURES", "TTL", "ONLINE", "UPDATED"],
        items
            .iter()
            .map(|r| {
                let v = &r.spec;
                vec![
                    v.name.clone(),
                    v.entities.join(","),
                    v.source.clone(),
                    v.schema.iter().map(|f| format!("{}:{}", f.name, f.dtype)).collect::<Vec<_>>().join(","),
                    v.ttl.map(format_duration).unwrap_or_else(|| "unlimited".into()),
                    v.online.to_string(),
                    when(&r.updated_at),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub(crate) fn services(items: &[Record<FeatureService>], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(items);
    }
    table(
        &["NAME", "FEATURES", "UPDATED"],
        items.iter().map(|r| vec![r.spec.name.clone(), r.spec.features.join(","), when(&r.updated_at)]).collect(),
    );
    Ok(())
}

pub(crate) fn request_sources(items: &[Record<RequestSource>], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(items);
    }
    table(
        &["NAME", "FIELDS", "UPDATED"],
        items
            .iter()
            .map(|r| {
                let fields: Vec<String> = r.spec.schema.iter().map(|f| format!("{}:{}", f.name, f.dtype)).collect();
                vec![r.spec.name.clone(), fields.join(","), when(&r.updated_at)]
            })
            .collect(),
    );
    Ok(())
}

pub(crate) fn on_demand_views(items: &[Record<OnDemandFeatureView>], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(items);
    }
    table(
        &["NAME", "SOURCES", "FEATURES", "UPDATED"],
        items
            .iter()
            .map(|r| {
                let features: Vec<String> = r.spec.features.iter().map(|f| format!("{}:{}", f.name, f.dtype)).collect();
                vec![r.spec.name.clone(), r.spec.sources.join(","), features.join(","), when(&r.updated_at)]
            })
            .collect(),
    );
    Ok(())
}
