//! Whole-repo validation: every problem is collected, then reported at once.

use std::collections::{BTreeMap, HashMap};

use arrow_schema::DataType;
use futures::future::join_all;
use tokio::sync::Mutex;

use crate::model::{DataSource, FeatureSelection, Field};
use crate::offline::{OfflineStore, SourceSchema};
use crate::on_demand::{ExpressionEngine, OnDemandInputs};
use crate::repo::{Defined, Definitions};
use crate::value_type::describe_arrow;
use crate::{Error, Problem, Result, ValueType};

/// Source schemas fetched once per apply, reused across conflict retries.
#[derive(Default)]
pub(crate) struct SchemaCache {
    schemas: Mutex<HashMap<(String, String), Result<SourceSchema, String>>>,
}

impl SchemaCache {
    async fn fetch(
        &self,
        store: &dyn OfflineStore,
        sources: &[&DataSource],
    ) -> HashMap<String, Result<SourceSchema, String>> {
        let key = |s: &DataSource| (s.name.clone(), s.path.clone());
        let missing: Vec<&DataSource> = {
            let cache = self.schemas.lock().await;
            sources.iter().copied().filter(|s| !cache.contains_key(&key(s))).collect()
        };
        let fetched = join_all(missing.iter().map(|s| store.source_schema(s))).await;
        let mut cache = self.schemas.lock().await;
        for (s, r) in missing.iter().zip(fetched) {
            cache.insert(key(s), r.map_err(|e| e.to_string()));
        }
        sources.iter().map(|s| (s.name.clone(), cache[&key(s)].clone())).collect()
    }
}

struct Ctx {
    problems: Vec<Problem>,
}

impl Ctx {
    fn add(&mut self, file: &Option<String>, object: String, message: impl Into<String>) {
        self.problems.push(Problem::new(file.as_deref(), object, message));
    }
}

fn label(kind: &str, name: &str) -> String {
    format!("{kind} \"{name}\"")
}

/// Reports objects of one kind defined more than once.
fn duplicates<T>(ctx: &mut Ctx, kind: &str, items: &[Defined<T>], name: impl Fn(&T) -> &str) {
    let mut seen: BTreeMap<&str, &Option<String>> = BTreeMap::new();
    for d in items {
        let n = name(&d.value);
        if let Some(first) = seen.insert(n, &d.file) {
            let first = first.as_deref().unwrap_or("code");
            ctx.add(&d.file, label(kind, n), format!("defined twice (first in {first}); rename or remove one"));
        }
    }
}

/// Join-key types seen per (entity, key): the type and where it was seen.
type KeyTypes = BTreeMap<(String, String), Vec<(ValueType, String)>>;

/// Each source's columns after `field_mapping`, with its schema.
type SourceColumns<'a> = HashMap<&'a str, (BTreeMap<String, DataType>, &'a SourceSchema)>;

/// What [`OfflineStore::file_problems`] finds in the files of every data
/// source, for the plan's warnings. A source that cannot be listed at all is
/// already an error of validation.
pub(crate) async fn file_warnings(defs: &Definitions, store: &dyn OfflineStore) -> Vec<String> {
    // Per source, the feature types its views (and those of its stream sources) declare.
    let declared: Vec<Vec<crate::offline::DeclaredColumn>> = defs
        .sources
        .iter()
        .map(|d| {
            let s = &d.value;
            let reads = |name: &str| {
                name == s.name
                    || defs.stream_sources.iter().any(|t| t.value.name == name && t.value.batch_source == s.name)
            };
            defs.feature_views
                .iter()
                .map(|v| &v.value)
                .filter(|v| reads(&v.source) && !v.is_aggregation())
                .flat_map(|v| {
                    v.schema.iter().map(|f| {
                        crate::offline::DeclaredColumn::new(&v.name, &f.name, s.source_column(&f.name), f.dtype.clone())
                    })
                })
                .collect()
        })
        .collect();
    let found =
        join_all(defs.sources.iter().zip(&declared).map(|(d, declared)| store.file_problems(&d.value, declared))).await;
    defs.sources
        .iter()
        .zip(found)
        .flat_map(|(d, problems)| {
            let s = &d.value;
            problems
                .unwrap_or_default()
                .into_iter()
                .map(move |p| format!("data source \"{}\" ({}): {p}", s.name, s.path))
        })
        .collect()
}

/// Validates `defs` as a complete project and returns them resolved: empty
/// schemas inferred from sources, join-key types filled in.
pub(crate) async fn validate(
    defs: &Definitions,
    store: &dyn OfflineStore,
    cache: &SchemaCache,
    engine: Option<&dyn ExpressionEngine>,
) -> Result<Definitions> {
    let mut ctx = Ctx { problems: Vec::new() };
    let mut out = defs.clone();
    check_objects(&mut ctx, defs);

    let entities: HashMap<&str, &Defined<crate::model::Entity>> =
        defs.entities.iter().map(|d| (d.value.name.as_str(), d)).collect();
    let mut sources: HashMap<&str, &DataSource> =
        defs.sources.iter().map(|d| (d.value.name.as_str(), &d.value)).collect();
    // A view over a stream source reads its batch source.
    for d in &defs.stream_sources {
        let s = &d.value;
        match sources.get(s.batch_source.as_str()) {
            Some(batch) if !sources.contains_key(s.name.as_str()) => {
                let batch: &DataSource = batch;
                sources.insert(s.name.as_str(), batch);
            }
            Some(_) => {}
            None => {
                let streams = defs.stream_sources.iter().any(|o| o.value.name == s.batch_source);
                let hint = if streams {
                    "; it is a stream source: name the Parquet data source holding the events".to_owned()
                } else {
                    known("data sources", defs.sources.iter().map(|d| d.value.name.as_str()).collect::<Vec<_>>().iter())
                };
                ctx.add(
                    &d.file,
                    label("stream source", &s.name),
                    format!("unknown batch_source \"{}\"{hint}", s.batch_source),
                );
            }
        }
    }

    // Read every source's schema concurrently.
    let unique: Vec<&DataSource> = {
        let mut seen = std::collections::BTreeSet::new();
        defs.sources.iter().map(|d| &d.value).filter(|s| seen.insert(s.name.as_str())).collect()
    };
    let schemas = cache.fetch(store, &unique).await;
    let columns = check_sources(&mut ctx, defs, &schemas);

    let mut key_types = KeyTypes::new();
    for (vi, d) in defs.feature_views.iter().enumerate() {
        if let Some(schema) = check_view(&mut ctx, d, &entities, &sources, &columns, &mut key_types) {
            out.feature_views[vi].value.schema = schema;
        }
    }
    resolve_key_types(&mut ctx, defs, &key_types, &mut out);
    check_on_demand(&mut ctx, &mut out, engine);
    check_services(&mut ctx, defs, &out);

    if ctx.problems.is_empty() { Ok(out) } else { Err(Error::Invalid { problems: ctx.problems }) }
}

/// Each object's own checks, and names defined twice.
fn check_objects(ctx: &mut Ctx, defs: &Definitions) {
    for d in &defs.entities {
        for m in d.value.check() {
            ctx.add(&d.file, label("entity", &d.value.name), m);
        }
    }
    for d in &defs.sources {
        for m in d.value.check() {
            ctx.add(&d.file, label("data source", &d.value.name), m);
        }
    }
    for d in &defs.stream_sources {
        for m in d.value.check() {
            ctx.add(&d.file, label("stream source", &d.value.name), m);
        }
        if defs.sources.iter().any(|s| s.value.name == d.value.name) {
            ctx.add(
                &d.file,
                label("stream source", &d.value.name),
                "a data source has the same name; feature views name their source without a kind, so the names must differ",
            );
        }
    }
    for d in &defs.feature_views {
        for m in d.value.check() {
            ctx.add(&d.file, label("feature view", &d.value.name), m);
        }
    }
    for d in &defs.feature_services {
        for m in d.value.check() {
            ctx.add(&d.file, label("feature service", &d.value.name), m);
        }
    }
    duplicates(ctx, "entity", &defs.entities, |e| &e.name);
    duplicates(ctx, "data source", &defs.sources, |e| &e.name);
    duplicates(ctx, "stream source", &defs.stream_sources, |e| &e.name);
    duplicates(ctx, "feature view", &defs.feature_views, |e| &e.name);
    duplicates(ctx, "feature service", &defs.feature_services, |e| &e.name);
    for d in &defs.request_sources {
        for m in d.value.check() {
            ctx.add(&d.file, label("request source", &d.value.name), m);
        }
    }
    for d in &defs.on_demand_feature_views {
        for m in d.value.check() {
            ctx.add(&d.file, label("on-demand feature view", &d.value.name), m);
        }
    }
    duplicates(ctx, "request source", &defs.request_sources, |e| &e.name);
    duplicates(ctx, "on-demand feature view", &defs.on_demand_feature_views, |e| &e.name);
    // References name views and sources without their kind, so names are unique across kinds.
    for d in &defs.on_demand_feature_views {
        if defs.feature_views.iter().any(|v| v.value.name == d.value.name) {
            ctx.add(
                &d.file,
                label("on-demand feature view", &d.value.name),
                "a feature view has the same name; feature references (view:feature) need view names to be unique",
            );
        }
    }
    for d in &defs.request_sources {
        let n = &d.value.name;
        if defs.sources.iter().any(|s| &s.value.name == n) || defs.feature_views.iter().any(|v| &v.value.name == n) {
            ctx.add(
                &d.file,
                label("request source", n),
                "a data source or feature view has the same name; on-demand views name their sources without a kind, \
                 so the names must differ",
            );
        }
    }
}

/// On-demand views: their sources exist, and every expression compiles
/// against the inputs' resolved types; records the functions they call.
fn check_on_demand(ctx: &mut Ctx, out: &mut Definitions, engine: Option<&dyn ExpressionEngine>) {
    let views: HashMap<String, crate::model::FeatureView> =
        out.feature_views.iter().map(|d| (d.value.name.clone(), d.value.clone())).collect();
    let requests: HashMap<String, crate::model::RequestSource> =
        out.request_sources.iter().map(|d| (d.value.name.clone(), d.value.clone())).collect();
    let on_demand: Vec<String> = out.on_demand_feature_views.iter().map(|d| d.value.name.clone()).collect();
    for d in out.on_demand_feature_views.iter_mut() {
        let obj = label("on-demand feature view", &d.value.name);
        let mut sources_ok = true;
        for s in &d.value.sources {
            if views.contains_key(s) {
                if views[s].schema.is_empty() {
                    sources_ok = false;
                }
                continue;
            }
            if requests.contains_key(s) {
                continue;
            }
            sources_ok = false;
            let message = if on_demand.contains(s) {
                format!(
                    "source \"{s}\" is an on-demand feature view; on-demand views read feature views and request sources only"
                )
            } else {
                let all: Vec<&str> = views.keys().chain(requests.keys()).map(String::as_str).collect();
                let close: Vec<String> =
                    all.iter().filter(|n| super::similar(n, s)).map(|n| format!("\"{n}\"")).collect();
                let hint = if close.is_empty() {
                    known("feature views or request sources", all.iter())
                } else {
                    format!("; did you mean {}?", close.join(" or "))
                };
                format!("unknown source \"{s}\" (sources are feature views and request sources){hint}")
            };
            ctx.add(&d.file, obj.clone(), message);
        }
        if !sources_ok {
            continue;
        }
        let Some(engine) = engine else {
            ctx.add(
                &d.file,
                obj,
                "on-demand feature views need the expression engine, which this build lacks; build feature-store \
                 with the cargo feature \"on-demand\"",
            );
            continue;
        };
        let inputs = OnDemandInputs::of(&d.value, |n| views.get(n).cloned(), |n| requests.get(n).cloned());
        match engine.compile(&d.value, &inputs) {
            Ok(compiled) => d.value.udfs = compiled.udfs,
            Err(messages) => {
                for m in messages {
                    ctx.add(&d.file, obj.clone(), m);
                }
            }
        }
    }
}

/// Source-level checks against the data: the source is readable, its
/// timestamp and mapped columns exist with the right types. Returns each
/// readable source's columns after `field_mapping`.
fn check_sources<'a>(
    ctx: &mut Ctx,
    defs: &'a Definitions,
    schemas: &'a HashMap<String, std::result::Result<SourceSchema, String>>,
) -> SourceColumns<'a> {
    let mut columns: SourceColumns<'a> = HashMap::new();
    for d in &defs.sources {
        let s = &d.value;
        let obj = label("data source", &s.name);
        let schema = match &schemas[&s.name] {
            Ok(schema) => schema,
            Err(e) => {
                // A new stream's batch source has no events yet, but its types come from a file.
                let hint = match defs.stream_sources.iter().find(|t| t.value.batch_source == s.name) {
                    Some(t) if e.contains("no file or folder with data files") => format!(
                        "; it is the batch source of stream source \"{}\", whose events' column types are read from its files: put one Parquet file there with those columns (no rows needed; ingestion's offline log adds the rest)",
                        t.value.name
                    ),
                    _ => String::new(),
                };
                ctx.add(&d.file, obj, format!("cannot read \"{}\": {e}{hint}", s.path));
                continue;
            }
        };
        let raw: BTreeMap<&str, &DataType> =
            schema.schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
        if let Some(p) = &s.timestamp_partition
            && !schema.partition_columns.contains(&p.column)
        {
            ctx.add(
                &d.file,
                obj.clone(),
                if schema.partition_columns.is_empty() {
                    format!(
                        "timestamp_partition.column \"{}\": \"{}\" has no hive partition folders (column=value/)",
                        p.column, s.path
                    )
                } else {
                    format!(
                        "timestamp_partition.column \"{}\" is not a partition column of \"{}\"; its partition columns are: {}",
                        p.column,
                        s.path,
                        schema.partition_columns.join(", ")
                    )
                },
            );
        }
        let available = || raw.keys().copied().collect::<Vec<_>>().join(", ");
        for (what, col) in std::iter::once(("timestamp_field", Some(&s.timestamp_field)))
            .chain(std::iter::once(("created_timestamp_field", s.created_timestamp_field.as_ref())))
        {
            let Some(col) = col else { continue };
            match raw.get(col.as_str()) {
                None => ctx.add(
                    &d.file,
                    obj.clone(),
                    format!(
                        "{what} \"{col}\" is not a column of {}; its columns are: {}",
                        schema.location,
                        available()
                    ),
                ),
                Some(dt) if !matches!(dt, DataType::Timestamp(_, _)) => ctx.add(
                    &d.file,
                    obj.clone(),
                    format!(
                        "{what} \"{col}\" is {} in {}, not a timestamp; write it as a Parquet timestamp column",
                        describe_arrow(dt),
                        schema.location
                    ),
                ),
                Some(_) => {}
            }
        }
        for from in s.field_mapping.keys() {
            if !raw.contains_key(from.as_str()) {
                ctx.add(
                    &d.file,
                    obj.clone(),
                    format!(
                        "field_mapping source column \"{from}\" is not in {}; its columns are: {}",
                        schema.location,
                        available()
                    ),
                );
            }
        }
        let mapped = raw.iter().map(|(c, t)| (s.mapped_name(c).to_owned(), (*t).clone())).collect();
        columns.insert(s.name.as_str(), (mapped, schema));
    }
    columns
}

/// One view against its entities and source: join keys present (their types
/// recorded in `key_types`), declared features present with accepted types,
/// or the schema inferred. Returns the view's resolved schema; `None` when
/// its source is unknown or unreadable (already reported).
fn check_view(
    ctx: &mut Ctx,
    d: &Defined<crate::model::FeatureView>,
    entities: &HashMap<&str, &Defined<crate::model::Entity>>,
    sources: &HashMap<&str, &DataSource>,
    columns: &SourceColumns<'_>,
    key_types: &mut KeyTypes,
) -> Option<Vec<Field>> {
    let v = &d.value;
    let obj = label("feature view", &v.name);
    let mut ok_entities = true;
    for e in &v.entities {
        if !entities.contains_key(e.as_str()) {
            ok_entities = false;
            ctx.add(&d.file, obj.clone(), format!("unknown entity \"{e}\"{}", known("entities", entities.keys())));
        }
    }
    let Some(source) = sources.get(v.source.as_str()) else {
        ctx.add(&d.file, obj, format!("unknown source \"{}\"{}", v.source, known("sources", sources.keys())));
        return None;
    };
    let (cols, schema) = columns.get(source.name.as_str())?;
    let join_keys: Vec<String> = if ok_entities {
        v.entities.iter().flat_map(|e| entities[e.as_str()].value.join_key_names().map(str::to_owned)).collect()
    } else {
        Vec::new()
    };
    let mut reserved: Vec<&str> = vec![source.mapped_name(&source.timestamp_field)];
    if let Some(c) = &source.created_timestamp_field {
        reserved.push(source.mapped_name(c));
    }
    for e in v.entities.iter().filter(|_| ok_entities) {
        for key in &entities[e.as_str()].value.join_keys {
            match cols.get(&key.name) {
                None => ctx.add(
                    &d.file,
                    obj.clone(),
                    format!(
                        "join key \"{}\" of entity \"{e}\" is not a column of source \"{}\" ({}); add the column or map it with field_mapping",
                        key.name, source.name, schema.location
                    ),
                ),
                Some(dt) => match ValueType::from_arrow(dt) {
                    Some(t) => key_types
                        .entry((e.clone(), key.name.clone()))
                        .or_default()
                        .push((t, format!("source \"{}\" (view \"{}\")", source.name, v.name))),
                    None => ctx.add(
                        &d.file,
                        obj.clone(),
                        format!("join key \"{}\" has unsupported type {dt} in {}", key.name, schema.location),
                    ),
                },
            }
        }
    }
    let view = ViewColumns { d, obj: &obj, source, cols, schema, join_keys: &join_keys, reserved: &reserved };
    Some(if v.is_aggregation() {
        aggregate_schema(ctx, &view)
    } else if v.schema.is_empty() {
        infer_schema(ctx, &view)
    } else {
        check_declared_schema(ctx, &view)
    })
}

/// An aggregation view's schema: one feature per aggregation, typed by its
/// function and column. A declared schema must be exactly that one (as a
/// view read back from the registry carries it).
fn aggregate_schema(ctx: &mut Ctx, view: &ViewColumns<'_>) -> Vec<Field> {
    let ViewColumns { d, source, cols, schema, join_keys, .. } = *view;
    let (v, obj) = (&d.value, view.obj.to_owned());
    let mut derived = Vec::new();
    for a in &v.aggregations {
        let name = a.output_name();
        let what = format!("aggregation \"{name}\"");
        if join_keys.contains(&name) {
            ctx.add(
                &d.file,
                obj.clone(),
                format!("{what}: its name is a join key of the view; name it otherwise (name: ...)"),
            );
        }
        let input = match &a.column {
            None => None,
            Some(c) => match cols.get(c) {
                None => {
                    let available: Vec<&str> =
                        schema.schema.fields().iter().map(|f| source.mapped_name(f.name())).collect();
                    ctx.add(
                        &d.file,
                        obj.clone(),
                        format!(
                            "{what}: column \"{c}\" is not a column of {} (source \"{}\"){}; its columns are: {}",
                            schema.location,
                            source.name,
                            available
                                .iter()
                                .find(|x| crate::error::similar(c, x))
                                .map(|s| format!(" (did you mean \"{s}\"?)"))
                                .unwrap_or_default(),
                            available.join(", ")
                        ),
                    );
                    continue;
                }
                Some(dt) => match ValueType::from_arrow(dt) {
                    Some(t) => Some(t),
                    None => {
                        ctx.add(
                            &d.file,
                            obj.clone(),
                            format!(
                                "{what}: column \"{c}\" has unsupported type {} in {}",
                                describe_arrow(dt),
                                schema.location
                            ),
                        );
                        continue;
                    }
                },
            },
        };
        match a.output_type(input.as_ref()) {
            Ok(t) => derived.push(Field::new(name, t).with_description(describe(a))),
            Err(why) => ctx.add(&d.file, obj.clone(), format!("{what}: {why}")),
        }
    }
    if !v.schema.is_empty() {
        for f in &v.schema {
            match derived.iter().find(|x| x.name == f.name) {
                Some(x) if x.dtype != f.dtype => ctx.add(
                    &d.file,
                    obj.clone(),
                    format!(
                        "feature \"{}\" is declared {} but its aggregation gives {}; remove the schema, an aggregation view's types follow from its aggregations",
                        f.name, f.dtype, x.dtype
                    ),
                ),
                _ => {}
            }
        }
    }
    derived
}

/// A derived feature's description: what it computes.
fn describe(a: &crate::model::Aggregation) -> String {
    let window = crate::duration::format_duration(a.window);
    match (&a.column, a.n) {
        (None, _) => format!("count of events in the last {window}"),
        (Some(c), Some(n)) => format!("{} (n = {n}) of {c} over the last {window}", a.function),
        (Some(c), None) => format!("{} of {c} over the last {window}", a.function),
    }
}

/// What a view's schema is checked against: its source's columns and the
/// names that are keys or timestamps, not features.
struct ViewColumns<'a> {
    d: &'a Defined<crate::model::FeatureView>,
    obj: &'a str,
    source: &'a DataSource,
    cols: &'a BTreeMap<String, DataType>,
    schema: &'a SourceSchema,
    join_keys: &'a [String],
    reserved: &'a [&'a str],
}

impl ViewColumns<'_> {
    fn is_reserved(&self, n: &str) -> bool {
        self.join_keys.iter().any(|k| k == n) || self.reserved.contains(&n)
    }
}

/// A view without a declared schema: every source column that is not a
/// key, a timestamp or a partition column, in the file's order.
fn infer_schema(ctx: &mut Ctx, view: &ViewColumns<'_>) -> Vec<Field> {
    let ViewColumns { d, source, cols, schema, .. } = *view;
    let (v, obj) = (&d.value, view.obj.to_owned());
    let is_reserved = |n: &str| view.is_reserved(n);
    let mut inferred = Vec::new();
    for (name, dt) in cols.iter() {
        if is_reserved(name) || schema.partition_columns.iter().any(|p| source.mapped_name(p) == name) {
            continue;
        }
        if let Err(why) = crate::model::check_name(name) {
            ctx.add(
                &d.file,
                obj.clone(),
                format!(
                    "cannot infer the schema: column \"{name}\" of {} is not a feature name ({why}); \
                     rename it with the source's field_mapping or declare the schema without it",
                    schema.location
                ),
            );
            continue;
        }
        match ValueType::from_arrow(dt) {
            Some(t) => inferred.push(Field::new(name.clone(), t)),
            None => ctx.add(
                &d.file,
                obj.clone(),
                format!(
                    "cannot infer the schema: column \"{name}\" has unsupported type {dt} in {}; declare the schema to leave it out",
                    schema.location
                ),
            ),
        }
    }
    // Keep the file's column order rather than alphabetical.
    let order: Vec<&str> = schema.schema.fields().iter().map(|f| source.mapped_name(f.name())).collect();
    inferred.sort_by_key(|f| order.iter().position(|c| *c == f.name));
    if inferred.is_empty() {
        ctx.add(
            &d.file,
            obj.clone(),
            format!("source \"{}\" has no feature columns besides keys and timestamps", source.name),
        );
    }
    for m in v.validation.check(&inferred) {
        ctx.add(&d.file, obj.clone(), m);
    }
    inferred
}

/// A declared schema: every feature a column of the source with an
/// accepted type; schema fields naming join keys declare the keys.
fn check_declared_schema(ctx: &mut Ctx, view: &ViewColumns<'_>) -> Vec<Field> {
    let ViewColumns { d, source, cols, schema, join_keys, .. } = *view;
    let (v, obj) = (&d.value, view.obj.to_owned());
    let is_reserved = |n: &str| view.is_reserved(n);
    for f in &v.schema {
        if join_keys.contains(&f.name) {
            // Feast-style: a schema field naming a join key declares the key, it is not a feature.
            if let Some(dt) = cols.get(&f.name)
                && !f.dtype.accepts_arrow(dt)
            {
                ctx.add(
                    &d.file,
                    obj.clone(),
                    format!(
                        "join key \"{}\" is {} in {} but the schema declares {}",
                        f.name,
                        describe_arrow(dt),
                        schema.location,
                        f.dtype
                    ),
                );
            }
            continue;
        }
        if is_reserved(&f.name) {
            ctx.add(
                &d.file,
                obj.clone(),
                format!("feature \"{}\" is the source's timestamp column; remove it from the schema", f.name),
            );
            continue;
        }
        let column = source.source_column(&f.name);
        match cols.get(&f.name) {
            None => ctx.add(
                &d.file,
                obj.clone(),
                format!(
                    "feature \"{}\" is not a column of {} (source \"{}\"); available: {}",
                    f.name,
                    schema.location,
                    source.name,
                    schema
                        .schema
                        .fields()
                        .iter()
                        .map(|f| source.mapped_name(f.name()))
                        .filter(|c| !is_reserved(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(dt) if !f.dtype.accepts_arrow(dt) => ctx.add(
                &d.file,
                obj.clone(),
                format!(
                    "column \"{column}\" is {} in {} but the view declares {}; change the declared dtype or the data",
                    describe_arrow(dt),
                    schema.location,
                    f.dtype
                ),
            ),
            Some(_) => {}
        }
    }
    let features: Vec<Field> = v.schema.iter().filter(|f| !join_keys.contains(&f.name)).cloned().collect();
    if features.is_empty() {
        ctx.add(&d.file, obj.clone(), "the schema declares no features besides join keys".to_owned());
    }
    features
}

/// Join-key types must agree across sources (integers widen) and with
/// declarations; undeclared key types are filled in from the data.
fn resolve_key_types(ctx: &mut Ctx, defs: &Definitions, key_types: &KeyTypes, out: &mut Definitions) {
    for (ei, d) in defs.entities.iter().enumerate() {
        let e = &d.value;
        for (ki, key) in e.join_keys.iter().enumerate() {
            let seen = key_types.get(&(e.name.clone(), key.name.clone())).cloned().unwrap_or_default();
            let mut resolved: Option<ValueType> = None;
            for (t, _) in &seen {
                resolved = Some(match resolved {
                    None => t.clone(),
                    Some(r) if r.accepts(t) => r,
                    Some(r) if t.accepts(&r) => t.clone(),
                    Some(r) => r, // reported below
                });
            }
            let disagree = seen.iter().any(|(t, _)| !resolved.as_ref().is_some_and(|r| r.accepts(t)));
            if disagree {
                let list: Vec<String> = seen.iter().map(|(t, w)| format!("{t} in {w}")).collect();
                ctx.add(
                    &d.file,
                    label("entity", &e.name),
                    format!(
                        "join key \"{}\" has different types across sources: {}; make the columns agree",
                        key.name,
                        list.join(", ")
                    ),
                );
                continue;
            }
            match (&key.dtype, resolved) {
                (Some(declared), Some(found)) if !declared.accepts(&found) => ctx.add(
                    &d.file,
                    label("entity", &e.name),
                    format!("join key \"{}\" is declared {declared} but is {found} in {}", key.name, seen[0].1),
                ),
                (Some(_), _) => {}
                (None, found) => out.entities[ei].value.join_keys[ki].dtype = found,
            }
        }
    }
}

/// Services refer to resolved views and their features.
fn check_services(ctx: &mut Ctx, defs: &Definitions, out: &Definitions) {
    let views: HashMap<&str, &crate::model::FeatureView> =
        out.feature_views.iter().map(|d| (d.value.name.as_str(), &d.value)).collect();
    let on_demand: HashMap<&str, &crate::model::OnDemandFeatureView> =
        out.on_demand_feature_views.iter().map(|d| (d.value.name.as_str(), &d.value)).collect();
    for d in &defs.feature_services {
        let obj = label("feature service", &d.value.name);
        for sel in d.value.selections() {
            if let Some(v) = on_demand.get(sel.view()) {
                if let FeatureSelection::Feature(r) = &sel
                    && v.feature(&r.feature).is_none()
                {
                    ctx.add(
                        &d.file,
                        obj.clone(),
                        format!(
                            "on-demand feature view \"{}\" has no feature \"{}\"; its features are: {}",
                            v.name,
                            r.feature,
                            v.feature_names().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
                continue;
            }
            match views.get(sel.view()) {
                None => ctx.add(
                    &d.file,
                    obj.clone(),
                    format!(
                        "unknown feature view \"{}\" in \"{sel}\"{}",
                        sel.view(),
                        known("feature views", views.keys())
                    ),
                ),
                Some(v) => {
                    if let FeatureSelection::Feature(r) = &sel
                        && v.feature(&r.feature).is_none()
                        && !v.schema.is_empty()
                    {
                        ctx.add(
                            &d.file,
                            obj.clone(),
                            format!(
                                "feature view \"{}\" has no feature \"{}\"; its features are: {}",
                                v.name,
                                r.feature,
                                v.feature_names().collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
}

fn known<'a>(what: &str, names: impl Iterator<Item = &'a &'a str>) -> String {
    let mut names: Vec<&str> = names.copied().collect();
    names.sort_unstable();
    if names.is_empty() {
        format!("; no {what} are defined")
    } else {
        format!("; defined {what}: {}", names.join(", "))
    }
}
