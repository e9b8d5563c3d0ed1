//! Online reads: [`FeatureStore::get_online_features`] resolves features,
//! checks entity key types against the registry, reads every view in one
//! store call, and decodes values with a status per value (the view's ttl
//! enforced at read time).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use chrono::{DateTime, Utc};

use crate::historical::ViewRequest;
use crate::model::JoinKey;
use crate::online::codec::{ValueDecoder, entity_keys};
use crate::online::{FeatureStatus, OnlineResponse, ViewRead};
use crate::{Error, FeatureStore, Features, Result, ValueType, describe_arrow};

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
        let views = self.resolve_views_cached(features, options.full_feature_names).await?;
        let online = self.online_store()?;
        let rows = entities.num_rows();
        let schema = entities.schema();
        // Feature names were checked against each other when resolved; here only against entity columns.
        for field in schema.fields() {
            if let Some(v) = views.iter().find(|v| v.output_names.iter().any(|o| o == field.name())) {
                return Err(Error::InvalidArgument(format!(
                    "output column \"{}\" would come from both the entity rows and feature view \"{}\"; use full feature names (view__feature)",
                    field.name(),
                    v.view.name
                )));
            }
        }

        // Key columns every view needs, checked once.
        let mut used = vec![false; schema.fields().len()];
        let mut reads = Vec::with_capacity(views.len());
        let mut row_slots: Vec<Vec<Option<usize>>> = Vec::with_capacity(views.len());
        for v in views.iter() {
            if !v.view.online {
                return Err(Error::InvalidArgument(format!(
                    "feature view \"{}\" is not served online (online: false)",
                    v.view.name
                )));
            }
            let mut cols: Vec<(&str, &ArrayRef)> = Vec::with_capacity(v.join_keys.len());
            for key in &v.join_keys {
                let i = schema.index_of(&key.name).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "entity rows have no \"{}\" column, a join key of feature view \"{}\"; given: {}",
                        key.name,
                        v.view.name,
                        column_list(&schema)
                    ))
                })?;
                check_key_column(key, entities.column(i), "entity rows")?;
                used[i] = true;
                cols.push((key.name.as_str(), entities.column(i)));
            }
            let keys = entity_keys(&cols, rows)?;
            let mut unique: HashMap<&str, usize> = HashMap::new();
            let mut list = Vec::new();
            let slots = keys
                .iter()
                .map(|k| {
                    k.as_deref().map(|k| {
                        *unique.entry(k).or_insert_with(|| {
                            list.push(k.to_owned());
                            list.len() - 1
                        })
                    })
                })
                .collect();
            row_slots.push(slots);
            reads.push(ViewRead::new(v.view.name.clone(), v.features.clone(), list));
        }
        if let Some(extra) = schema.fields().iter().zip(&used).find(|(_, u)| !**u) {
            let keys: Vec<&str> = views.iter().flat_map(|v| v.join_keys.iter().map(|k| k.name.as_str())).collect();
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
        let now = options.now.unwrap_or_else(Utc::now).timestamp_micros();

        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut columns: Vec<ArrayRef> = entities.columns().to_vec();
        let mut statuses = Vec::new();
        let mut times = Vec::new();
        for ((v, slots), found) in views.iter().zip(&row_slots).zip(&stored) {
            decode_view(v, slots, found, now, &mut fields, &mut columns, &mut statuses, &mut times)?;
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::data("online response", e.to_string()))?;
        Ok(OnlineResponse::new(batch, schema.fields().len(), statuses, times))
    }
}

#[allow(clippy::too_many_arguments)]
fn decode_view(
    v: &ViewRequest,
    slots: &[Option<usize>],
    found: &[Option<crate::online::StoredRow>],
    now: i64,
    fields: &mut Vec<Field>,
    columns: &mut Vec<ArrayRef>,
    statuses: &mut Vec<Vec<FeatureStatus>>,
    times: &mut Vec<Vec<Option<i64>>>,
) -> Result<()> {
    let oldest = v.view.ttl.map(|ttl| now.saturating_sub(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)));
    for (fi, (feature, out_name)) in v.features.iter().zip(&v.output_names).enumerate() {
        let dtype = &v.view.feature(feature).expect("resolved features exist").dtype;
        let mut dec = ValueDecoder::new(dtype, slots.len());
        let mut st = Vec::with_capacity(slots.len());
        let mut ts = Vec::with_capacity(slots.len());
        for slot in slots {
            let row = slot.and_then(|s| found[s].as_ref());
            let (status, t) = match row {
                None => (FeatureStatus::NotFound, None),
                Some(r) if oldest.is_some_and(|o| r.event_ts < o) => (FeatureStatus::OutsideMaxAge, Some(r.event_ts)),
                Some(r) => match &r.values[fi] {
                    None => (FeatureStatus::NullValue, Some(r.event_ts)),
                    Some(bytes) => {
                        dec.append(bytes, feature).map_err(|e| match e {
                            Error::Data { message, .. } => {
                                Error::data(format!("online value of feature \"{}:{feature}\"", v.view.name), message)
                            }
                            other => other,
                        })?;
                        st.push(FeatureStatus::Present);
                        ts.push(Some(r.event_ts));
                        continue;
                    }
                },
            };
            dec.append_null();
            st.push(status);
            ts.push(t);
        }
        fields.push(Field::new(out_name, dtype.to_arrow(), true));
        columns.push(dec.finish());
        statuses.push(st);
        times.push(ts);
    }
    Ok(())
}

pub(crate) fn column_list(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}
