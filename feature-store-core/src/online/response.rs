//! The result of an online read: Arrow values plus a status and an event time per value.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::{Error, Result, UTC};

/// Status of one value, named as in Feast's serving API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum FeatureStatus {
    /// A value was found and is fresh.
    Present,
    /// The entity's row exists but this feature is null.
    NullValue,
    /// Nothing is stored for the entity (or its key is null), or its stored
    /// row predates the feature (added to the view after the last write).
    NotFound,
    /// The stored row is older than the view's ttl allows; its value is withheld.
    OutsideMaxAge,
}

impl FeatureStatus {
    /// The Feast name (`PRESENT`, `NULL_VALUE`, `NOT_FOUND`, `OUTSIDE_MAX_AGE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "PRESENT",
            Self::NullValue => "NULL_VALUE",
            Self::NotFound => "NOT_FOUND",
            Self::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        }
    }
}

impl std::fmt::Display for FeatureStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value as a plain Rust value, for services that want a row view.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum FeatureValue {
    /// Missing or null.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer.
    Int(i64),
    /// Any float. In JSON, NaN and the infinities are the strings `"NaN"`,
    /// `"Infinity"` and `"-Infinity"` (the protobuf JSON mapping's
    /// convention), since JSON numbers cannot hold them.
    #[serde(serialize_with = "float_json")]
    Float(f64),
    /// A string.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// An instant.
    Timestamp(DateTime<Utc>),
    /// A list.
    List(Vec<FeatureValue>),
}

fn float_json<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    match *v {
        v if v.is_nan() => s.serialize_str("NaN"),
        f64::INFINITY => s.serialize_str("Infinity"),
        f64::NEG_INFINITY => s.serialize_str("-Infinity"),
        v => s.serialize_f64(v),
    }
}

impl FeatureValue {
    /// Row `i` of `array`.
    pub fn from_array(array: &dyn Array, i: usize) -> Self {
        if array.is_null(i) {
            return Self::Null;
        }
        match array.data_type() {
            DataType::Boolean => Self::Bool(array.as_boolean().value(i)),
            DataType::Int8 => Self::Int(array.as_primitive::<Int8Type>().value(i).into()),
            DataType::Int16 => Self::Int(array.as_primitive::<Int16Type>().value(i).into()),
            DataType::Int32 => Self::Int(array.as_primitive::<Int32Type>().value(i).into()),
            DataType::Int64 => Self::Int(array.as_primitive::<Int64Type>().value(i)),
            DataType::UInt8 => Self::Int(array.as_primitive::<UInt8Type>().value(i).into()),
            DataType::UInt16 => Self::Int(array.as_primitive::<UInt16Type>().value(i).into()),
            DataType::UInt32 => Self::Int(array.as_primitive::<UInt32Type>().value(i).into()),
            DataType::UInt64 => Self::Int(array.as_primitive::<UInt64Type>().value(i) as i64),
            // Through the shortest decimal form, so 0.1f32 reads 0.1 rather than 0.10000000149.
            DataType::Float32 => {
                let v = array.as_primitive::<Float32Type>().value(i);
                Self::Float(v.to_string().parse().unwrap_or(f64::from(v)))
            }
            DataType::Float64 => Self::Float(array.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 => Self::String(array.as_string::<i32>().value(i).to_owned()),
            DataType::LargeUtf8 => Self::String(array.as_string::<i64>().value(i).to_owned()),
            DataType::Utf8View => Self::String(array.as_string_view().value(i).to_owned()),
            DataType::Binary => Self::Bytes(array.as_binary::<i32>().value(i).to_vec()),
            DataType::LargeBinary => Self::Bytes(array.as_binary::<i64>().value(i).to_vec()),
            DataType::BinaryView => Self::Bytes(array.as_binary_view().value(i).to_vec()),
            DataType::Timestamp(unit, _) => {
                let v = match unit {
                    TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(i).checked_mul(1_000_000),
                    TimeUnit::Millisecond => {
                        array.as_primitive::<TimestampMillisecondType>().value(i).checked_mul(1_000)
                    }
                    TimeUnit::Microsecond => Some(array.as_primitive::<TimestampMicrosecondType>().value(i)),
                    TimeUnit::Nanosecond => Some(array.as_primitive::<TimestampNanosecondType>().value(i) / 1_000),
                };
                v.and_then(micros_to_datetime).map_or(Self::Null, Self::Timestamp)
            }
            DataType::List(_) => {
                let list = array.as_list::<i32>().value(i);
                Self::List((0..list.len()).map(|j| Self::from_array(list.as_ref(), j)).collect())
            }
            DataType::LargeList(_) => {
                let list = array.as_list::<i64>().value(i);
                Self::List((0..list.len()).map(|j| Self::from_array(list.as_ref(), j)).collect())
            }
            // Entity columns keep the caller's encoding, pandas categoricals included.
            DataType::Dictionary(key, _) => {
                let (values, k) = match key.as_ref() {
                    DataType::Int8 => dict_entry(array.as_dictionary::<Int8Type>(), i),
                    DataType::Int16 => dict_entry(array.as_dictionary::<Int16Type>(), i),
                    DataType::Int32 => dict_entry(array.as_dictionary::<Int32Type>(), i),
                    DataType::Int64 => dict_entry(array.as_dictionary::<Int64Type>(), i),
                    DataType::UInt8 => dict_entry(array.as_dictionary::<UInt8Type>(), i),
                    DataType::UInt16 => dict_entry(array.as_dictionary::<UInt16Type>(), i),
                    DataType::UInt32 => dict_entry(array.as_dictionary::<UInt32Type>(), i),
                    DataType::UInt64 => dict_entry(array.as_dictionary::<UInt64Type>(), i),
                    _ => return Self::Null,
                };
                Self::from_array(values, k)
            }
            _ => Self::Null,
        }
    }

    /// The value as `f64` when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(v) => Some(*v),
            Self::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The value as `i64` when it is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        if let Self::Int(v) = self { Some(*v) } else { None }
    }

    /// The value as `&str` when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        if let Self::String(v) = self { Some(v) } else { None }
    }

    /// True for [`FeatureValue::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

fn dict_entry<K: arrow_array::types::ArrowDictionaryKeyType>(
    dict: &arrow_array::DictionaryArray<K>,
    i: usize,
) -> (&dyn Array, usize) {
    (dict.values().as_ref(), arrow_buffer::ArrowNativeType::as_usize(dict.keys().value(i)))
}

pub(crate) fn micros_to_datetime(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

/// Online features for a list of entity rows: one row per requested entity
/// row, in request order, with the entity key columns first.
#[derive(Debug, Clone)]
pub struct OnlineResponse {
    values: RecordBatch,
    /// Number of leading entity key columns.
    key_columns: usize,
    /// Per feature column (after the key columns), per row: feature-major,
    /// `rows` entries a feature, so one allocation serves the whole response.
    statuses: Vec<FeatureStatus>,
    /// The stored row's event time of each value, laid out as `statuses`.
    event_ts: Vec<Option<i64>>,
    /// The feature view of each feature column, when the response came from the facade.
    views: Option<Arc<[Arc<str>]>>,
}

impl OnlineResponse {
    pub(crate) fn new(
        values: RecordBatch,
        key_columns: usize,
        statuses: Vec<FeatureStatus>,
        event_ts: Vec<Option<i64>>,
    ) -> Self {
        debug_assert_eq!(statuses.len(), (values.num_columns() - key_columns) * values.num_rows());
        debug_assert_eq!(event_ts.len(), statuses.len());
        Self { values, key_columns, statuses, event_ts, views: None }
    }

    pub(crate) fn with_feature_views(mut self, views: Arc<[Arc<str>]>) -> Self {
        debug_assert_eq!(views.len(), self.values.num_columns() - self.key_columns);
        self.views = Some(views);
        self
    }

    /// The feature view (plain or on-demand) feature column `i` comes from
    /// (0 = the first column after the keys), for per-view accounting.
    pub fn feature_view(&self, i: usize) -> Option<&str> {
        self.views.as_ref().and_then(|v| v.get(i)).map(|v| &**v)
    }

    fn span(&self, feature: usize) -> std::ops::Range<usize> {
        let rows = self.values.num_rows();
        feature * rows..(feature + 1) * rows
    }

    /// Entity key columns then feature columns; withheld and missing values are null.
    pub fn values(&self) -> &RecordBatch {
        &self.values
    }

    /// Number of rows (requested entity rows).
    pub fn num_rows(&self) -> usize {
        self.values.num_rows()
    }

    /// Column names: entity keys, then features.
    pub fn column_names(&self) -> Vec<&str> {
        self.values.schema_ref().fields().iter().map(|f| f.name().as_str()).collect()
    }

    /// Feature column names only.
    pub fn feature_names(&self) -> Vec<&str> {
        self.column_names().split_off(self.key_columns)
    }

    /// Number of leading entity key columns in [`OnlineResponse::values`].
    pub fn key_column_count(&self) -> usize {
        self.key_columns
    }

    /// Statuses of feature column `i` (0 = the first column after the keys), one per row.
    ///
    /// For bindings that build their own row views without going through Arrow strings.
    pub fn feature_statuses(&self, i: usize) -> &[FeatureStatus] {
        &self.statuses[self.span(i)]
    }

    /// Stored event times (µs since the epoch, UTC) of feature column `i`, one per row.
    pub fn feature_event_micros(&self, i: usize) -> &[Option<i64>] {
        &self.event_ts[self.span(i)]
    }

    fn column(&self, name: &str) -> Result<usize> {
        self.values.schema_ref().index_of(name).map_err(|_| Error::NotFound {
            kind: "column",
            name: name.to_owned(),
            hint: Some(format!("the response has: {}", self.column_names().join(", "))),
        })
    }

    /// The value of column `name` in row `row`.
    pub fn value(&self, row: usize, name: &str) -> Result<FeatureValue> {
        Ok(FeatureValue::from_array(self.values.column(self.column(name)?).as_ref(), row))
    }

    /// The status of column `name` in row `row`; entity key columns are `PRESENT`.
    pub fn status(&self, row: usize, name: &str) -> Result<FeatureStatus> {
        let c = self.column(name)?;
        Ok(if c < self.key_columns { FeatureStatus::Present } else { self.feature_statuses(c - self.key_columns)[row] })
    }

    /// The event time of the stored row column `name` of row `row` came from.
    pub fn event_timestamp(&self, row: usize, name: &str) -> Result<Option<DateTime<Utc>>> {
        let c = self.column(name)?;
        Ok(if c < self.key_columns { None } else { self.feature_event_micros(c - self.key_columns)[row] }
            .and_then(micros_to_datetime))
    }

    /// Statuses as Arrow: one string column per response column.
    pub fn statuses(&self) -> RecordBatch {
        let rows = self.num_rows();
        let columns: Vec<ArrayRef> = (0..self.values.num_columns())
            .map(|c| {
                let a: StringArray = (0..rows)
                    .map(|r| {
                        Some(if c < self.key_columns {
                            "PRESENT"
                        } else {
                            self.feature_statuses(c - self.key_columns)[r].as_str()
                        })
                    })
                    .collect();
                Arc::new(a) as ArrayRef
            })
            .collect();
        self.side_batch(columns, DataType::Utf8)
    }

    /// Event times as Arrow: one timestamp column per response column (null for keys and missing values).
    pub fn event_timestamps(&self) -> RecordBatch {
        let rows = self.num_rows();
        let columns: Vec<ArrayRef> = (0..self.values.num_columns())
            .map(|c| {
                let a: TimestampMicrosecondArray = if c < self.key_columns {
                    TimestampMicrosecondArray::new_null(rows)
                } else {
                    self.feature_event_micros(c - self.key_columns).iter().copied().collect()
                };
                Arc::new(a.with_timezone(UTC)) as ArrayRef
            })
            .collect();
        self.side_batch(columns, crate::timestamp_type())
    }

    fn side_batch(&self, columns: Vec<ArrayRef>, dt: DataType) -> RecordBatch {
        let fields: Vec<Field> =
            self.values.schema_ref().fields().iter().map(|f| Field::new(f.name(), dt.clone(), true)).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match fields")
    }

    /// The response in the JSON shape of Feast's feature server
    /// (`/get-online-features`): `metadata.feature_names` and, per column,
    /// `values`, `statuses` and `event_timestamps` over the rows.
    pub fn to_feast_json(&self) -> serde_json::Value {
        let mut out = Vec::new();
        self.write_feast_json(&mut out);
        serde_json::from_slice(&out).expect("the writer produces valid JSON")
    }

    /// [`OnlineResponse::to_feast_json`] written straight into `out`, for
    /// servers: no intermediate JSON tree, each event time formatted once
    /// per run of equal times (a view's features share their row's time).
    pub fn write_feast_json(&self, out: &mut Vec<u8>) {
        const EPOCH: &[u8] = b"\"1970-01-01T00:00:00Z\"";
        let rows = self.num_rows();
        out.extend_from_slice(b"{\"metadata\":{\"feature_names\":");
        serde_json::to_writer(&mut *out, &self.column_names()).expect("strings serialize");
        out.extend_from_slice(b"},\"results\":[");
        // Features of one view share their row's event time: formatted once
        // per row (and again only when a row's time changes between views).
        let mut row_times: Vec<Option<(i64, Vec<u8>)>> = vec![None; rows];
        for c in 0..self.values.num_columns() {
            if c > 0 {
                out.push(b',');
            }
            let feature = c.checked_sub(self.key_columns);
            out.extend_from_slice(b"{\"event_timestamps\":[");
            for (r, cached) in row_times.iter_mut().enumerate() {
                if r > 0 {
                    out.push(b',');
                }
                let Some(us) = feature.and_then(|k| self.feature_event_micros(k)[r]) else {
                    out.extend_from_slice(EPOCH);
                    continue;
                };
                if cached.as_ref().is_none_or(|(l, _)| *l != us) {
                    let text = micros_to_datetime(us).map_or_else(
                        || EPOCH.to_vec(),
                        |t| format!("\"{}\"", t.to_rfc3339_opts(SecondsFormat::AutoSi, true)).into_bytes(),
                    );
                    *cached = Some((us, text));
                }
                out.extend_from_slice(&cached.as_ref().expect("set above").1);
            }
            out.extend_from_slice(b"],\"statuses\":[");
            for r in 0..rows {
                if r > 0 {
                    out.push(b',');
                }
                let status = feature.map_or(FeatureStatus::Present, |k| self.feature_statuses(k)[r]);
                out.push(b'"');
                out.extend_from_slice(status.as_str().as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(b"],\"values\":[");
            write_json_values(self.values.column(c).as_ref(), out);
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
    }
}

/// The values of `col`, comma-separated, as [`FeatureValue`] serializes them;
/// 64-bit numbers without building a value first.
fn write_json_values(col: &dyn Array, out: &mut Vec<u8>) {
    fn each(col: &dyn Array, out: &mut Vec<u8>, mut write: impl FnMut(usize, &mut Vec<u8>)) {
        for r in 0..col.len() {
            if r > 0 {
                out.push(b',');
            }
            if col.is_null(r) {
                out.extend_from_slice(b"null");
            } else {
                write(r, out);
            }
        }
    }
    match col.data_type() {
        DataType::Int64 => {
            let a = col.as_primitive::<Int64Type>();
            each(col, out, |r, out| serde_json::to_writer(out, &a.value(r)).expect("integers serialize"));
        }
        DataType::Float64 => {
            let a = col.as_primitive::<Float64Type>();
            each(col, out, |r, out| {
                serde_json::to_writer(out, &FeatureValue::Float(a.value(r))).expect("floats serialize")
            });
        }
        _ => each(col, out, |r, out| {
            serde_json::to_writer(out, &FeatureValue::from_array(col, r)).expect("values serialize")
        }),
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::Float64Array;
    use chrono::SecondsFormat;

    use super::{FeatureValue, OnlineResponse, micros_to_datetime};

    /// The straightforward rendering (a JSON tree), the oracle of the writer.
    fn reference_json(response: &OnlineResponse) -> serde_json::Value {
        let this = response;
        let rows = this.num_rows();
        let epoch = "1970-01-01T00:00:00Z".to_owned();
        let results: Vec<serde_json::Value> = (0..this.values.num_columns())
            .map(|c| {
                let col = this.values.column(c);
                let values: Vec<FeatureValue> = (0..rows).map(|r| FeatureValue::from_array(col.as_ref(), r)).collect();
                let (statuses, times): (Vec<&str>, Vec<String>) = (0..rows)
                    .map(|r| {
                        if c < this.key_columns {
                            ("PRESENT", epoch.clone())
                        } else {
                            let k = c - this.key_columns;
                            let t = this.feature_event_micros(k)[r]
                                .and_then(micros_to_datetime)
                                .map_or_else(|| epoch.clone(), |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
                            (this.feature_statuses(k)[r].as_str(), t)
                        }
                    })
                    .unzip();
                serde_json::json!({ "values": values, "statuses": statuses, "event_timestamps": times })
            })
            .collect();
        serde_json::json!({ "metadata": { "feature_names": this.column_names() }, "results": results })
    }

    #[test]
    fn the_json_writer_writes_what_the_json_tree_writes() {
        use std::sync::Arc;

        use arrow_array::types::Int64Type;
        use arrow_array::{
            ArrayRef, BooleanArray, Float32Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
            TimestampMicrosecondArray,
        };

        use super::FeatureStatus;
        let t = 1_700_000_000_123_456i64;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
            ("name \"q\"", Arc::new(StringArray::from(vec![Some("a\"b"), None, Some("é")]))),
            ("f32", Arc::new(Float32Array::from(vec![Some(0.1), Some(f32::NAN), None]))),
            ("f64", Arc::new(Float64Array::from(vec![Some(-0.0), Some(f64::INFINITY), Some(1e300)]))),
            ("i32", Arc::new(Int32Array::from(vec![Some(-7), None, Some(i32::MAX)]))),
            ("b", Arc::new(BooleanArray::from(vec![Some(true), Some(false), None]))),
            ("ts", Arc::new(TimestampMicrosecondArray::from(vec![Some(t), None, Some(0)]).with_timezone("UTC"))),
            (
                "l",
                Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
                    Some(vec![Some(1), None]),
                    None,
                    Some(vec![]),
                ])),
            ),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let features = batch.num_columns() - 1;
        let statuses =
            [FeatureStatus::Present, FeatureStatus::NullValue, FeatureStatus::OutsideMaxAge].repeat(features);
        let times: Vec<Option<i64>> = [Some(t), None, Some(t + 1)].repeat(features);
        let response = OnlineResponse::new(batch, 1, statuses, times);
        let mut written = Vec::new();
        response.write_feast_json(&mut written);
        let expected = serde_json::to_vec(&reference_json(&response)).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(expected).unwrap());

        // Float32 takes its own path: the digits must be the tree's, at every magnitude.
        let mut floats = vec![
            1e-7f32,
            3.402_823_5e38,
            1e21,
            1e20,
            123_456.79,
            16_777_217.0,
            -1.175_494_4e-38,
            1e-45,
            0.3,
            2.5e-5,
            f32::NEG_INFINITY,
            -0.0,
            7.0,
        ];
        let mut state = 0x1234_5678u32;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            floats.push(f32::from_bits(state));
        }
        let n = floats.len();
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())) as ArrayRef),
            ("f", Arc::new(Float32Array::from(floats)) as ArrayRef),
        ])
        .unwrap();
        let response = OnlineResponse::new(batch, 1, vec![FeatureStatus::Present; n], vec![Some(t); n]);
        let mut written = Vec::new();
        response.write_feast_json(&mut written);
        let expected = serde_json::to_vec(&reference_json(&response)).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(expected).unwrap());
    }

    /// JSON numbers cannot hold NaN or the infinities; they must not turn into
    /// null (which reads as a missing value beside a PRESENT status).
    #[test]
    fn non_finite_floats_survive_json() {
        let col = Float64Array::from(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5]);
        let values: Vec<FeatureValue> = (0..col.len()).map(|i| FeatureValue::from_array(&col, i)).collect();
        let json = serde_json::to_string(&values).unwrap();
        assert_eq!(json, r#"["NaN","Infinity","-Infinity",-0.5]"#);
        let list = FeatureValue::List(vec![FeatureValue::Float(f64::NAN), FeatureValue::Null]);
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"["NaN",null]"#);
    }
}
