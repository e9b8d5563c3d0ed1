//! Feast's gRPC `feast.serving.ServingService` over the same store, with
//! values typed as Feast encodes them (`feast.types.Value`).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feature_store_core::online::{FeatureStatus, OnlineResponse};
use feature_store_core::{Features, OnlineOptions, UTC};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::http::AppState;
use crate::metrics::StoreKind;
use crate::proto::serving::get_online_features_request::Kind;
use crate::proto::serving::get_online_features_response::FeatureVector;
use crate::proto::serving::serving_service_server::ServingService;
use crate::proto::serving::{
    FeatureList, FieldStatus, GetFeastServingInfoRequest, GetFeastServingInfoResponse, GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse, GetOnlineFeaturesResponseMetadata,
};
use crate::proto::types::value::Val;
use crate::proto::types::{
    BoolList, BytesList, DoubleList, FloatList, Int32List, Int64List, RepeatedValue, StringList, Value,
};

/// The `ServingService` implementation; build it with [`crate::grpc_service`].
#[derive(Clone)]
pub struct FeastServing {
    pub(crate) state: Arc<AppState>,
}

#[tonic::async_trait]
impl ServingService for FeastServing {
    async fn get_feast_serving_info(
        &self,
        _: Request<GetFeastServingInfoRequest>,
    ) -> Result<Response<GetFeastServingInfoResponse>, Status> {
        Ok(Response::new(GetFeastServingInfoResponse { version: env!("CARGO_PKG_VERSION").to_owned() }))
    }

    async fn get_online_features(
        &self,
        request: Request<GetOnlineFeaturesRequest>,
    ) -> Result<Response<GetOnlineFeaturesResponse>, Status> {
        let (features, batch, options) = parse_online_request(request.into_inner()).map_err(|e| e.to_grpc())?;
        self.state.metrics.entities(batch.num_rows());
        let response = self
            .state
            .store
            .get_online_features(&features, &batch, &options)
            .await
            .map_err(|e| self.state.store_error(StoreKind::Online, e).to_grpc())?;
        self.state.metrics.statuses(&response);
        Ok(Response::new(to_proto(&response)))
    }
}

/// A request as the handler checks it before the store: what it asks for,
/// and its entity rows with `request_context` merged in. Also run by the
/// fuzz target `server_request` (see [`crate::fuzzing`]).
pub(crate) fn parse_online_request(
    req: GetOnlineFeaturesRequest,
) -> Result<(Features, RecordBatch, OnlineOptions), ApiError> {
    if req.include_feature_view_version_metadata {
        return Err(ApiError::bad_request(
            "include_feature_view_version_metadata is not supported: feature views here are not versioned",
        ));
    }
    let features = match req.kind {
        Some(Kind::FeatureService(s)) if !s.is_empty() => Features::service(s),
        Some(Kind::Features(FeatureList { val })) if !val.is_empty() => Features::refs(val),
        _ => {
            return Err(ApiError::bad_request(
                "no features asked for: set features (view:feature references) or feature_service",
            ));
        }
    };
    let mut columns: Vec<(String, RepeatedValue)> = req.entities.into_iter().collect();
    for (k, v) in req.request_context {
        if columns.iter().any(|(c, _)| *c == k) {
            return Err(ApiError::bad_request(format!("\"{k}\" is in both entities and request_context")));
        }
        columns.push((k, v));
    }
    // Protobuf maps have no order; sorted, the response's columns are stable.
    columns.sort_by(|a, b| a.0.cmp(&b.0));
    let batch = entities_batch(&columns)?;
    Ok((features, batch, OnlineOptions::default().with_full_feature_names(req.full_feature_names)))
}

/// Entity columns from typed values; each column takes the kind of its first set value.
fn entities_batch(columns: &[(String, RepeatedValue)]) -> Result<RecordBatch, ApiError> {
    if columns.is_empty() {
        return Err(ApiError::bad_request("entities is empty; give each join key as a list of values"));
    }
    let rows = columns[0].1.val.len();
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays = Vec::with_capacity(columns.len());
    for (name, values) in columns {
        if values.val.len() != rows {
            return Err(ApiError::bad_request(format!(
                "entities: \"{}\" has {rows} values but \"{name}\" has {}; every column needs one value per row",
                columns[0].0,
                values.val.len()
            )));
        }
        let array = column(name, &values.val)?;
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| ApiError::bad_request(format!("entities: {e}")))
}

fn kind_name(v: &Val) -> &'static str {
    match v {
        Val::BytesVal(_) => "bytes_val",
        Val::StringVal(_) => "string_val",
        Val::Int32Val(_) => "int32_val",
        Val::Int64Val(_) => "int64_val",
        Val::DoubleVal(_) => "double_val",
        Val::FloatVal(_) => "float_val",
        Val::BoolVal(_) => "bool_val",
        Val::UnixTimestampVal(_) => "unix_timestamp_val",
        Val::BytesListVal(_) => "bytes_list_val",
        Val::StringListVal(_) => "string_list_val",
        Val::Int32ListVal(_) => "int32_list_val",
        Val::Int64ListVal(_) => "int64_list_val",
        Val::DoubleListVal(_) => "double_list_val",
        Val::FloatListVal(_) => "float_list_val",
        Val::BoolListVal(_) => "bool_list_val",
        Val::UnixTimestampListVal(_) => "unix_timestamp_list_val",
        Val::NullVal(_) => "null_val",
        _ => "an unsupported kind",
    }
}

fn column(name: &str, values: &[Value]) -> Result<ArrayRef, ApiError> {
    let first = values.iter().filter_map(|v| v.val.as_ref()).find(|v| !matches!(v, Val::NullVal(_)));
    let Some(first) = first else {
        // All null: typed as the registry's key type later would need the registry; int64 keys are the common case.
        return Ok(Arc::new(arrow_array::Int64Array::new_null(values.len())));
    };
    let mismatch = |i: usize, v: &Val| {
        ApiError::bad_request(format!(
            "entities.{name}[{i}] is {}, but earlier values are {}; one column holds one kind",
            kind_name(v),
            kind_name(first)
        ))
    };
    macro_rules! build {
        ($builder:expr, $pat:pat => $out:expr) => {{
            let mut b = $builder;
            for (i, v) in values.iter().enumerate() {
                match v.val.as_ref() {
                    None | Some(Val::NullVal(_)) => b.append_null(),
                    Some($pat) => b.append_value($out),
                    Some(other) => return Err(mismatch(i, other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match first {
        Val::Int64Val(_) => build!(Int64Builder::new(), Val::Int64Val(x) => *x),
        Val::Int32Val(_) => build!(Int32Builder::new(), Val::Int32Val(x) => *x),
        Val::StringVal(_) => build!(StringBuilder::new(), Val::StringVal(x) => x),
        Val::DoubleVal(_) => build!(Float64Builder::new(), Val::DoubleVal(x) => *x),
        Val::FloatVal(_) => build!(Float32Builder::new(), Val::FloatVal(x) => *x),
        Val::BoolVal(_) => build!(BooleanBuilder::new(), Val::BoolVal(x) => *x),
        Val::BytesVal(_) => build!(BinaryBuilder::new(), Val::BytesVal(x) => x),
        Val::UnixTimestampVal(_) => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone(UTC);
            for (i, v) in values.iter().enumerate() {
                match v.val.as_ref() {
                    None | Some(Val::NullVal(_)) => b.append_null(),
                    Some(Val::UnixTimestampVal(s)) => b.append_value(s.saturating_mul(1_000_000)),
                    Some(other) => return Err(mismatch(i, other)),
                }
            }
            Arc::new(b.finish())
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "entities.{name}: {} values cannot be entity keys or request data here",
                kind_name(other)
            )));
        }
    })
}

/// The response as Feast's server builds it: per column, values, statuses
/// and event times over the rows; entity columns `PRESENT` at time zero.
fn to_proto(response: &OnlineResponse) -> GetOnlineFeaturesResponse {
    let values = response.values();
    let keys = response.key_column_count();
    let rows = values.num_rows();
    let names: Vec<String> = values.schema_ref().fields().iter().map(|f| f.name().clone()).collect();
    let results = (0..values.num_columns())
        .map(|c| {
            let col = values.column(c);
            let values: Vec<Value> = (0..rows).map(|r| Value { val: to_val(col.as_ref(), r) }).collect();
            let (statuses, event_timestamps) = if c < keys {
                (vec![FieldStatus::Present as i32; rows], vec![prost_types::Timestamp::default(); rows])
            } else {
                let st = response.feature_statuses(c - keys).iter().map(|s| status(*s) as i32).collect();
                let ts = response
                    .feature_event_micros(c - keys)
                    .iter()
                    .map(|t| {
                        t.map_or_else(prost_types::Timestamp::default, |us| prost_types::Timestamp {
                            seconds: us.div_euclid(1_000_000),
                            nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
                        })
                    })
                    .collect();
                (st, ts)
            };
            FeatureVector { values, statuses, event_timestamps }
        })
        .collect();
    GetOnlineFeaturesResponse {
        metadata: Some(GetOnlineFeaturesResponseMetadata {
            feature_names: Some(FeatureList { val: names }),
            feature_view_metadata: Vec::new(),
        }),
        results,
        status: false,
    }
}

fn status(s: FeatureStatus) -> FieldStatus {
    match s {
        FeatureStatus::Present => FieldStatus::Present,
        FeatureStatus::NullValue => FieldStatus::NullValue,
        FeatureStatus::NotFound => FieldStatus::NotFound,
        FeatureStatus::OutsideMaxAge => FieldStatus::OutsideMaxAge,
        _ => FieldStatus::Invalid,
    }
}

/// One Arrow value as Feast's typed value; null is an unset value, as in Feast.
fn to_val(array: &dyn Array, i: usize) -> Option<Val> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Boolean => Val::BoolVal(array.as_boolean().value(i)),
        DataType::Int32 => Val::Int32Val(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Val::Int64Val(array.as_primitive::<Int64Type>().value(i)),
        DataType::Float32 => Val::FloatVal(array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => Val::DoubleVal(array.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Val::StringVal(array.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Val::StringVal(array.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => Val::StringVal(array.as_string_view().value(i).to_owned()),
        DataType::Binary => Val::BytesVal(array.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Val::BytesVal(array.as_binary::<i64>().value(i).to_vec()),
        // Feast's UNIX_TIMESTAMP is whole seconds since the epoch.
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Val::UnixTimestampVal(array.as_primitive::<TimestampMicrosecondType>().value(i).div_euclid(1_000_000))
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(i);
            return list_val(list.as_ref());
        }
        DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => {
            let v = arrow_cast_i64(array, i)?;
            Val::Int64Val(v)
        }
        _ => return None,
    })
}

fn arrow_cast_i64(array: &dyn Array, i: usize) -> Option<i64> {
    match feature_store_core::online::FeatureValue::from_array(array, i) {
        feature_store_core::online::FeatureValue::Int(v) => Some(v),
        _ => None,
    }
}

fn list_val(items: &dyn Array) -> Option<Val> {
    let n = items.len();
    // Null items have no place in Feast's list messages; they read as the type's zero.
    Some(match items.data_type() {
        DataType::Boolean => {
            let a = items.as_boolean();
            Val::BoolListVal(BoolList { val: (0..n).map(|j| a.is_valid(j) && a.value(j)).collect() })
        }
        DataType::Int32 => Val::Int32ListVal(Int32List {
            val: items.as_primitive::<Int32Type>().iter().map(|v| v.unwrap_or(0)).collect(),
        }),
        DataType::Int64 => Val::Int64ListVal(Int64List {
            val: items.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(0)).collect(),
        }),
        DataType::Float32 => Val::FloatListVal(FloatList {
            val: items.as_primitive::<Float32Type>().iter().map(|v| v.unwrap_or(0.0)).collect(),
        }),
        DataType::Float64 => Val::DoubleListVal(DoubleList {
            val: items.as_primitive::<Float64Type>().iter().map(|v| v.unwrap_or(0.0)).collect(),
        }),
        DataType::Utf8 => Val::StringListVal(StringList {
            val: items.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_owned()).collect(),
        }),
        DataType::Binary => Val::BytesListVal(BytesList {
            val: items.as_binary::<i32>().iter().map(|v| v.unwrap_or_default().to_vec()).collect(),
        }),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Val::UnixTimestampListVal(Int64List {
            val: items
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .map(|v| v.unwrap_or(0).div_euclid(1_000_000))
                .collect(),
        }),
        _ => return None,
    })
}
