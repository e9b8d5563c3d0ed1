//! Online reads: [`FeatureStore::get_online_features`] resolves features,
//! checks entity key types against the registry, reads every view in one
//! store call, and decodes values with a status per value (the view's ttl
//! enforced at read time).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, FieldRef, Schema};
use chrono::{DateTime, Utc};

use super::{FeatureStore, Features};
use crate::historical::ViewRequest;
use crate::model::JoinKey;
use crate::online::codec::{FixedArena, FixedColumn, ValueDecoder, entity_keys, record_spans};
use crate::online::{FeatureStatus, OnlineResponse, StoredRow, ViewRead};
use crate::{Error, Result, ValueType, describe_arrow};

/// A resolved view with everything a read needs prepared once per registry
/// version, so a request allocates no names, fields or types of its own.
#[derive(Debug)]
pub(crate) struct ServedView {
    pub(crate) request: ViewRequest,
    /// Requested features, shared with every [`ViewRead`].
    features: Arc<[String]>,
    /// Output field of each requested feature.
    fields: Vec<FieldRef>,
    /// Declared type of each requested feature.
    dtypes: Vec<ValueType>,
    /// The view's ttl in microseconds; `None` is unlimited.
    ttl_micros: Option<i64>,
    /// Where the online store keeps the view ([`crate::registry::online_table`]).
    table: String,
}

impl ServedView {
    pub(crate) fn new(request: ViewRequest, table: String) -> Result<Self> {
        let dtypes = request
            .features
            .iter()
            .map(|f| {
                request.view.feature(f).map(|f| f.dtype.clone()).ok_or_else(|| Error::NotFound {
                    kind: "feature",
                    name: format!("{}:{f}", request.view.name),
                    hint: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let fields = request
            .output_names
            .iter()
            .zip(&dtypes)
            .map(|(name, t)| Arc::new(Field::new(name, t.to_arrow(), true)))
            .collect();
        let ttl_micros = request.view.ttl.map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
        Ok(Self { features: request.features.clone().into(), fields, dtypes, ttl_micros, request, table })
    }
}

/// Options of [`FeatureStore::get_online_features`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OnlineOptions {
    /// Name feature columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// The time ttls are measured against; now when unset (set it to replay or test).
    pub now: Option<DateTime<Utc>>,
}

impl OnlineOptions {
    /// Sets full feature names.
    pub fn with_full_feature_names(mut self, yes: bool) -> Self {
        self.full_feature_names = yes;
        self
    }

    /// Measures ttls against `now` instead of the clock.
    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }
}

/// Checks an entity key column against the key's registry type: integers of
/// any width are accepted for integer keys (keys are encoded width-free);
/// anything else must be the declared type.
pub(crate) fn check_key_column(key: &JoinKey, column: &ArrayRef, context: &str) -> Result<()> {
    let found = ValueType::from_arrow(column.data_type());
    let ok = match (&key.dtype, &found) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(ValueType::Int32 | ValueType::Int64), Some(ValueType::Int32 | ValueType::Int64)) => true,
        (Some(want), Some(got)) => want == got,
    };
    if ok {
        return Ok(());
    }
    let want = key.dtype.as_ref().map_or_else(|| "a supported key type".to_owned(), ToString::to_string);
    Err(Error::data(
        context,
        format!(
            "entity key \"{}\" is {} but the registry declares it {want}; pass {want} values",
            key.name,
            describe_arrow(column.data_type())
        ),
    ))
}

impl FeatureStore {
    /// Latest feature values for entity rows given as columns named by join
    /// key: one result row per entity row, in order; repeated entities are
    /// fetched once, and all views are read in one online-store call.
    pub async fn get_online_features(
        &self,
        features: &Features,
        entities: &RecordBatch,
        options: &OnlineOptions,
    ) -> Result<OnlineResponse> {
        let served = self.resolve_served(features, options.full_feature_names).await?;
        let views = &served.views;
        let online = self.online_store()?;
        let rows = entities.num_rows();
        let schema = entities.schema();
        let request_fields = &served.request_fields;
        // Feature names were checked against each other when resolved; here only against entity columns.
        for (i, field) in schema.fields().iter().enumerate() {
            if schema.fields()[..i].iter().any(|f| f.name() == field.name()) {
                return Err(Error::data("entity rows", format!("more than one column is named \"{}\"", field.name())));
            }
            if let Some(v) = views.iter().find(|v| v.request.output_names.iter().any(|o| o == field.name())) {
                return Err(Error::InvalidArgument(format!(
                    "output column \"{}\" would come from both the entity rows and feature view \"{}\"; use full feature names (view__feature)",
                    field.name(),
                    v.request.view.name
                )));
            }
        }

        // Key columns every view needs, checked once; views over the same
        // join keys (the common case) share one key list.
        // Request data is checked before the store is read.
        if let Some(missing) = request_fields.iter().find(|f| schema.index_of(f).is_err()) {
            return Err(crate::on_demand::missing_request_field(missing, &schema, "request data (entity rows)"));
        }
        let mut used = vec![false; schema.fields().len()];
        // Request data rides beside the keys and is not returned.
        let request_only: Vec<bool> = schema
            .fields()
            .iter()
            .map(|f| request_fields.contains(f.name()) || served.declared_request_fields.contains(f.name()))
            .collect();
        let mut reads = Vec::with_capacity(views.len());
        let mut key_sets: Vec<KeySet<'_>> = Vec::new();
        let mut view_set = Vec::with_capacity(views.len());
        let mut plans: Vec<Option<super::tiles::ReadPlan>> = Vec::with_capacity(views.len());
        let now = options.now.unwrap_or_else(Utc::now).timestamp_micros();
        for v in views.iter() {
            let r = &v.request;
            if !r.view.online {
                return Err(Error::InvalidArgument(format!(
                    "feature view \"{}\" is not served online (online: false)",
                    r.view.name
                )));
            }
            let set = match key_sets.iter().position(|s| same_keys(s.keys, &r.join_keys)) {
                Some(i) => {
                    // Same columns, but each view's entity declares its own key types.
                    for key in &r.join_keys {
                        let c = schema.index_of(&key.name).expect("found for the shared key set");
                        check_key_column(key, entities.column(c), "entity rows")?;
                    }
                    i
                }
                None => {
                    let mut cols: Vec<(&str, &ArrayRef)> = Vec::with_capacity(r.join_keys.len());
                    for key in &r.join_keys {
                        let i = schema.index_of(&key.name).map_err(|_| {
                            Error::InvalidArgument(format!(
                                "entity rows have no \"{}\" column, a join key of feature view \"{}\"; given: {}",
                                key.name,
                                r.view.name,
                                column_list(&schema)
                            ))
                        })?;
                        check_key_column(key, entities.column(i), "entity rows")?;
                        used[i] = true;
                        cols.push((key.name.as_str(), entities.column(i)));
                    }
                    key_sets.push(KeySet::new(&r.join_keys, &cols, rows)?);
                    key_sets.len() - 1
                }
            };
            view_set.push(set);
            if r.view.is_aggregation() {
                let plan = super::tiles::ReadPlan::new(&r.view, &v.features, now)?;
                let keys = plan.keys(&key_sets[set].unique);
                reads.push(ViewRead::new(v.table.clone(), plan.states(), keys));
                plans.push(Some(plan));
                continue;
            }
            plans.push(None);
            reads.push(ViewRead::new(v.table.clone(), Arc::clone(&v.features), key_sets[set].unique.clone()));
        }
        for (i, f) in schema.fields().iter().enumerate() {
            if served.source_keys.contains(f.name()) {
                used[i] = true;
            }
        }
        if let Some(extra) = schema.fields().iter().zip(used.iter().zip(&request_only)).find(|(_, (u, r))| !**u && !**r)
        {
            let keys: Vec<&str> =
                views.iter().flat_map(|v| v.request.join_keys.iter().map(|k| k.name.as_str())).collect();
            let keys = if keys.is_empty() {
                "none: the views have no entities, so entity rows have no columns, one empty row per result row"
                    .to_owned()
            } else {
                keys.join(", ")
            };
            return Err(Error::InvalidArgument(format!(
                "entity rows have a column \"{}\" that is not a join key of the requested views (their keys: {keys})",
                extra.0.name(),
            )));
        }

        let stored = online.read(self.project(), &reads).await?;
        if stored.len() != reads.len() || stored.iter().zip(&reads).any(|(s, r)| s.len() != r.keys.len()) {
            return Err(Error::backend(
                online.describe(),
                std::io::Error::other("the store returned a different number of rows than keys asked for"),
            ));
        }
        let watermarks = if plans.iter().any(Option::is_some) {
            let doc = self.document().await?;
            let state = &doc.project(self.project()).registry().view_state;
            views.iter().map(|v| state.get(&v.request.view.name).and_then(|s| s.watermark)).collect()
        } else {
            vec![None; views.len()]
        };

        let feature_count: usize = views.iter().map(|v| v.fields.len()).sum();
        let mut fields: Vec<FieldRef> = Vec::with_capacity(schema.fields().len() + feature_count);
        fields.extend(schema.fields().iter().cloned());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
        columns.extend(entities.columns().iter().cloned());
        let mut statuses = Vec::with_capacity(feature_count * rows);
        let mut times = Vec::with_capacity(feature_count * rows);
        let mut arena = FixedArena::with_capacity(feature_count * (rows * 8 + 8));
        let mut pending = Vec::with_capacity(feature_count);
        for (i, ((v, set), (found, read))) in views.iter().zip(&view_set).zip(stored.iter().zip(&reads)).enumerate() {
            if let Some(plan) = &plans[i] {
                let (columns, st, tm) =
                    plan.decode(&v.request.view, &v.features, &v.dtypes, &key_sets[*set].slots, found, watermarks[i])?;
                pending.extend(columns.into_iter().map(Column::Done));
                statuses.extend(st);
                times.extend(tm);
                fields.extend(v.fields.iter().cloned());
                continue;
            }
            let out = Decoded { arena: &mut arena, columns: &mut pending, statuses: &mut statuses, times: &mut times };
            decode_view(v, &key_sets[*set].slots, found, read, now, out)?;
            fields.extend(v.fields.iter().cloned());
        }
        let buffer = arena.finish();
        columns.extend(pending.into_iter().map(|c| match c {
            Column::Done(a) => a,
            Column::Fixed(c) => c.array(&buffer),
        }));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::data("online response", e.to_string()))?;
        if served.on_demand.is_empty() {
            return Ok(OnlineResponse::new(batch, schema.fields().len(), statuses, times)
                .with_feature_views(Arc::clone(&served.column_views)));
        }
        Ok(with_on_demand(&served, entities, batch, &used, statuses, times)?
            .with_feature_views(Arc::clone(&served.column_views)))
    }
}

/// Adds the on-demand features to a decoded response and drops what only
/// they needed: hidden inputs and request columns that are not keys.
fn with_on_demand(
    served: &super::Served,
    entities: &RecordBatch,
    batch: RecordBatch,
    key_used: &[bool],
    statuses: Vec<FeatureStatus>,
    times: Vec<Option<i64>>,
) -> Result<OnlineResponse> {
    use super::on_demand::{Resolution, online_statuses};
    use crate::on_demand::InputSource;
    use crate::on_demand::{evaluate_with, request_column};
    let rows = batch.num_rows();
    let entity_columns = key_used.len();
    let computed = evaluate_with(&served.on_demand, rows, |r, ri, i| {
        let input = &r.inputs.inputs[i];
        match (&input.source, served.positions[ri][i]) {
            (InputSource::Request { .. }, _) => request_column(entities, &r.columns[i], &input.dtype, "request data"),
            (InputSource::Feature(_), Some(p)) => Ok(Arc::clone(batch.column(entity_columns + p))),
            (InputSource::Feature(f), None) => {
                Err(Error::data("online response", format!("on-demand input {f} was not read")))
            }
        }
    })?;
    let schema = batch.schema();
    let span = |p: usize| p * rows..(p + 1) * rows;
    let feature_columns = schema.fields().len() - entity_columns;
    let kept = schema.fields().iter().skip(entity_columns).filter(|f| !Resolution::is_hidden(f.name())).count();
    let added: usize = served.on_demand.iter().map(|r| r.features.len()).sum();
    let mut new_statuses = Vec::with_capacity((kept + added) * rows);
    let mut new_times = Vec::with_capacity((kept + added) * rows);
    let mut fields: Vec<FieldRef> = Vec::with_capacity(entity_columns + kept + added);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
    let mut keys = 0;
    for (c, field) in schema.fields().iter().enumerate().take(entity_columns) {
        if key_used[c] {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(batch.column(c)));
            keys += 1;
        }
    }
    for p in 0..feature_columns {
        let field = schema.field(entity_columns + p);
        if !Resolution::is_hidden(field.name()) {
            fields.push(Arc::clone(&schema.fields()[entity_columns + p]));
            columns.push(Arc::clone(batch.column(entity_columns + p)));
            new_statuses.extend_from_slice(&statuses[span(p)]);
            new_times.extend_from_slice(&times[span(p)]);
        }
    }
    let mut computed = computed.into_iter();
    for (ri, r) in served.on_demand.iter().enumerate() {
        let input = |i: usize| served.positions[ri][i].map(|p| (&statuses[span(p)], &times[span(p)]));
        for (&f, field) in r.features.iter().zip(&r.fields) {
            let value = computed.next().expect("one column per requested feature");
            online_statuses(r, f, value.as_ref(), input, &mut new_statuses, &mut new_times);
            fields.push(Arc::clone(field));
            columns.push(value);
        }
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::data("online response", e.to_string()))?;
    Ok(OnlineResponse::new(batch, keys, new_statuses, new_times))
}

/// The entity keys of one set of join-key columns.
struct KeySet<'a> {
    keys: &'a [JoinKey],
    /// Per entity row, its position in `unique` (`None`: a null key).
    slots: Vec<Option<usize>>,
    /// Distinct keys in first-seen order.
    unique: Vec<String>,
}

impl<'a> KeySet<'a> {
    fn new(keys: &'a [JoinKey], cols: &[(&str, &ArrayRef)], rows: usize) -> Result<Self> {
        let texts = entity_keys(cols, rows)?;
        let mut unique = Vec::new();
        let slots = if rows == 1 {
            // One row, the usual serving request: no map needed.
            texts
                .into_iter()
                .map(|k| {
                    k.map(|k| {
                        unique.push(k);
                        0
                    })
                })
                .collect()
        } else {
            let mut seen: HashMap<&str, usize> = HashMap::with_capacity(rows);
            texts
                .iter()
                .map(|k| {
                    k.as_deref().map(|k| {
                        *seen.entry(k).or_insert_with(|| {
                            unique.push(k.to_owned());
                            unique.len() - 1
                        })
                    })
                })
                .collect()
        };
        Ok(Self { keys, slots, unique })
    }
}

fn same_keys(a: &[JoinKey], b: &[JoinKey]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name)
}

/// Where decoded views go: feature columns, and statuses and event times laid
/// out feature-major as [`OnlineResponse`] keeps them.
struct Decoded<'a> {
    /// Fixed-width columns share one buffer, sliced once it is complete.
    arena: &'a mut FixedArena,
    columns: &'a mut Vec<Column>,
    statuses: &'a mut Vec<FeatureStatus>,
    times: &'a mut Vec<Option<i64>>,
}

/// A decoded feature column, or a fixed-width one waiting for its arena.
enum Column {
    Done(ArrayRef),
    Fixed(FixedColumn),
}

/// What was found for one distinct key of a view.
#[derive(Clone, Copy)]
enum Found {
    Missing,
    Stale(i64),
    /// Event time, and whether the record lists every feature it was written
    /// with (so an absent one is `NOT_FOUND`, not a null).
    Fresh(i64, bool),
}

/// One requested feature of one entity row, classified.
enum Cell {
    /// A value: the stored row, the value's byte range in its record, its event time.
    Value { row: usize, range: (u32, u32), event_ts: i64 },
    /// No value, with the status saying why (and the row's event time when there was a row).
    Absent { status: FeatureStatus, event_ts: Option<i64> },
}

/// What a feature of a requested row is: `found` is the row's distinct-key
/// state and index (`None` when the key was not read), `span` the feature's
/// byte range in that row's record.
#[inline]
fn cell(found: Option<(Found, usize)>, span: impl Fn(usize) -> Option<(u32, u32)>) -> Cell {
    let absent = |status, event_ts| Cell::Absent { status, event_ts };
    match found {
        None | Some((Found::Missing, _)) => absent(FeatureStatus::NotFound, None),
        Some((Found::Stale(t), _)) => absent(FeatureStatus::OutsideMaxAge, Some(t)),
        Some((Found::Fresh(t, complete), row)) => match span(row) {
            // A complete record without the feature: it was added after the row was written.
            None if complete => absent(FeatureStatus::NotFound, None),
            None => absent(FeatureStatus::NullValue, Some(t)),
            Some((a, b)) if a == b => absent(FeatureStatus::NullValue, Some(t)),
            Some(range) => Cell::Value { row, range, event_ts: t },
        },
    }
}

/// The decoder of one output column: fixed-width values go to the shared
/// arena, others to a typed builder.
enum ColumnDecoder {
    Fixed(FixedColumn),
    General(ValueDecoder),
}

impl ColumnDecoder {
    fn new(arena: &mut FixedArena, dtype: &ValueType, rows: usize) -> Self {
        match arena.column(dtype, rows) {
            Some(c) => Self::Fixed(c),
            None => Self::General(ValueDecoder::new(dtype, rows)),
        }
    }

    #[inline]
    fn append(&mut self, arena: &mut FixedArena, bytes: &[u8], feature: &str) -> Result<()> {
        match self {
            Self::Fixed(c) => arena.append(c, bytes, feature),
            Self::General(d) => d.append(bytes, feature),
        }
    }

    #[inline]
    fn append_null(&mut self, arena: &mut FixedArena) {
        match self {
            Self::Fixed(c) => arena.append_null(c),
            Self::General(d) => d.append_null(),
        }
    }

    fn finish(self) -> Column {
        match self {
            Self::Fixed(c) => Column::Fixed(c),
            Self::General(mut d) => Column::Done(d.finish()),
        }
    }
}

fn decode_view(
    v: &ServedView,
    slots: &[Option<usize>],
    found: &[Option<StoredRow>],
    read: &ViewRead,
    now: i64,
    out: Decoded<'_>,
) -> Result<()> {
    let view = &v.request.view.name;
    let oldest = v.ttl_micros.map(|ttl| now.saturating_sub(ttl));
    let nf = v.features.len();
    // Each stored record is parsed once: the byte range of every requested feature.
    let mut spans: Vec<Option<(u32, u32)>> = vec![None; found.len() * nf];
    let mut state = Vec::with_capacity(found.len());
    for (u, row) in found.iter().enumerate() {
        state.push(match row {
            None => Found::Missing,
            Some(r) if oldest.is_some_and(|o| r.event_ts < o) => Found::Stale(r.event_ts),
            Some(r) => {
                let complete = record_spans(&r.record, &v.features, &mut spans[u * nf..(u + 1) * nf]).map_err(|e| {
                    Error::data(
                        format!("online record of feature view \"{view}\" for entity {}", read.keys[u]),
                        match e {
                            Error::Data { message, .. } => message,
                            other => other.to_string(),
                        },
                    )
                })?;
                Found::Fresh(r.event_ts, complete)
            }
        });
    }
    for (fi, (feature, dtype)) in v.features.iter().zip(&v.dtypes).enumerate() {
        let mut column = ColumnDecoder::new(out.arena, dtype, slots.len());
        for slot in slots {
            let found_at = |u: usize| (state[u], u);
            match cell(slot.map(found_at), |u| spans[u * nf + fi]) {
                Cell::Value { row, range: (a, b), event_ts } => {
                    let record = &found[row].as_ref().expect("fresh rows exist").record;
                    column.append(out.arena, &record[a as usize..b as usize], feature).map_err(|e| match e {
                        Error::Data { message, .. } => {
                            Error::data(format!("online value of feature \"{view}:{feature}\""), message)
                        }
                        other => other,
                    })?;
                    out.statuses.push(FeatureStatus::Present);
                    out.times.push(Some(event_ts));
                }
                Cell::Absent { status, event_ts } => {
                    column.append_null(out.arena);
                    out.statuses.push(status);
                    out.times.push(event_ts);
                }
            }
        }
        out.columns.push(column.finish());
    }
    Ok(())
}

pub(crate) fn column_list(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}
