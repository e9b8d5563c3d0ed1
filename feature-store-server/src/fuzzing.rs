//! Entry points for the coverage-guided fuzz target `server_request`
//! (`fuzz/fuzz_targets/server_request.rs`): a request body through the code
//! the HTTP handlers (and the gRPC `GetOnlineFeatures` handler) run on it
//! before they reach the store, with no store and no runtime. Not an API: it exists because the fuzz crate can only
//! call what this crate makes public.
//!
//! The body goes through the handlers' own extractor (`http::Body`) and their
//! own conversions (`json::columns_to_batch`, `json::request_time`). Unlike a
//! handler, every step runs even when an earlier one refused, so the
//! conversions see every body the extractor accepts.

use std::collections::HashMap;
use std::sync::LazyLock;

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use axum::extract::FromRequest;
use feature_store_core::ValueType;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::http::{
    Body, MaterializeIncrementalRequest, MaterializeRequest, OnlineRequest, PushRequest, WriteRequest, features,
};
use crate::json::{columns_to_batch, parse_time, request_time};

/// An error as the client would get it.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The `error` of the JSON answer.
    pub message: String,
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self { status: e.status.as_u16(), message: e.message }
    }
}

/// What a body the extractor accepted became.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Its JSON columns as a batch typed by their values alone, as for
    /// columns the registry does not declare.
    pub inferred: Vec<Result<RecordBatch, Refusal>>,
    /// The same columns typed by [`declared_types`] where it names them.
    pub declared: Vec<Result<RecordBatch, Refusal>>,
    /// The handlers' other checks of the body: the feature selection,
    /// `request_context` against `entities`, `start_ts` and `end_ts`.
    pub checks: Vec<Result<(), Refusal>>,
    /// Every other string field through the timestamp parser, which the
    /// handlers do not do: it gives that parser more text to chew on.
    pub other_times: Vec<Option<i64>>,
}

/// One parse function per HTTP endpoint that takes a JSON body.
pub type ParseFn = fn(&[u8]) -> Result<Parsed, Refusal>;

/// Every endpoint that takes a JSON body, with its parse function.
pub const ENDPOINTS: [(&str, ParseFn); 6] = [
    ("/get-online-features", get_online_features),
    ("gRPC ServingService/GetOnlineFeatures", grpc_get_online_features),
    ("/push", push),
    ("/write-to-online-store", write_to_online_store),
    ("/materialize", materialize),
    ("/materialize-incremental", materialize_incremental),
];

/// Column types as a registry would declare them, one column per type
/// `columns_to_batch` builds (each scalar and each list of one), under
/// Feast-style names.
pub fn declared_types() -> &'static HashMap<String, DataType> {
    static TYPES: LazyLock<HashMap<String, DataType>> = LazyLock::new(|| {
        use ValueType as T;
        let scalars = [
            ("driver_id", T::Int64),
            ("trips", T::Int32),
            ("conv_rate", T::Float64),
            ("acc_rate", T::Float32),
            ("active", T::Bool),
            ("city", T::String),
            ("payload", T::Bytes),
            ("event_timestamp", T::Timestamp),
        ];
        let lists = [
            ("ids", T::Int64),
            ("counts", T::Int32),
            ("embedding", T::Float64),
            ("weights", T::Float32),
            ("flags", T::Bool),
            ("tags", T::String),
            ("blobs", T::Bytes),
            ("seen_at", T::Timestamp),
        ];
        scalars
            .into_iter()
            .chain(lists.into_iter().map(|(n, t)| (n, T::List(Box::new(t)))))
            .map(|(n, t)| (n.to_owned(), t.to_arrow()))
            .collect()
    });
    &TYPES
}

/// The body through the handlers' extractor, as axum hands it over.
fn extract<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let req = axum::extract::Request::new(axum::body::Body::from(body.to_vec()));
    let Body(parsed) =
        Body::<T>::from_request(req, &()).now_or_never().expect("a body held in memory is read without waiting")?;
    Ok(parsed)
}

impl Parsed {
    fn columns(&mut self, columns: &Map<String, Value>, what: &str) {
        let none = HashMap::new();
        self.inferred.push(columns_to_batch(columns, &none, what).map_err(Refusal::from));
        self.declared.push(columns_to_batch(columns, declared_types(), what).map_err(Refusal::from));
    }

    fn time(&mut self, field: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.checks.push(request_time(field, text).map(drop).map_err(Refusal::from));
        }
    }

    fn other_times<'a>(&mut self, texts: impl IntoIterator<Item = &'a String>) {
        self.other_times.extend(texts.into_iter().map(|t| parse_time(t)));
    }
}

/// `POST /get-online-features`: the entities, with `request_context` merged
/// in as the handler merges it.
pub fn get_online_features(body: &[u8]) -> Result<Parsed, Refusal> {
    let req: OnlineRequest = extract(body)?;
    let mut out = Parsed::default();
    out.other_times(req.features.iter().flatten().chain(&req.feature_service));
    out.checks.push(features(req.features, req.feature_service).map(drop).map_err(Refusal::from));
    let mut columns = req.entities;
    for (k, v) in req.request_context.into_iter().flatten() {
        if columns.contains_key(&k) {
            out.checks
                .push(Err(ApiError::bad_request(format!("\"{k}\" is in both entities and request_context")).into()));
        } else {
            columns.insert(k, v);
        }
    }
    out.columns(&columns, "entities");
    Ok(out)
}

/// gRPC `GetOnlineFeatures`: the message decoded as tonic decodes it (the
/// body after the frame header), then the handler's checks and its
/// conversion of Feast's typed values to Arrow.
pub fn grpc_get_online_features(body: &[u8]) -> Result<Parsed, Refusal> {
    use prost::Message;
    let req = crate::proto::serving::GetOnlineFeaturesRequest::decode(body)
        .map_err(|e| Refusal { status: 400, message: format!("not a GetOnlineFeaturesRequest: {e}") })?;
    let mut out = Parsed::default();
    match crate::grpc::parse_online_request(req) {
        Ok((_, batch, _)) => out.inferred.push(Ok(batch)),
        Err(e) => out.checks.push(Err(e.into())),
    }
    Ok(out)
}

/// `POST /push`: the `df` columns.
pub fn push(body: &[u8]) -> Result<Parsed, Refusal> {
    let req: PushRequest = extract(body)?;
    let mut out = Parsed::default();
    out.other_times(req.push_source_name.iter().chain(&req.feature_view).chain(&req.to));
    out.columns(&req.df, "df");
    Ok(out)
}

/// `POST /write-to-online-store`: the `df` columns.
pub fn write_to_online_store(body: &[u8]) -> Result<Parsed, Refusal> {
    let req: WriteRequest = extract(body)?;
    let mut out = Parsed::default();
    out.other_times([&req.feature_view_name]);
    out.columns(&req.df, "df");
    Ok(out)
}

/// `POST /materialize`: `start_ts` and `end_ts`.
pub fn materialize(body: &[u8]) -> Result<Parsed, Refusal> {
    let req: MaterializeRequest = extract(body)?;
    let mut out = Parsed::default();
    out.time("start_ts", req.start_ts.as_deref());
    out.time("end_ts", req.end_ts.as_deref());
    out.other_times(req.feature_views.iter().flatten().chain(&req.version));
    Ok(out)
}

/// `POST /materialize-incremental`: `end_ts`.
pub fn materialize_incremental(body: &[u8]) -> Result<Parsed, Refusal> {
    let req: MaterializeIncrementalRequest = extract(body)?;
    let mut out = Parsed::default();
    out.time("end_ts", Some(&req.end_ts));
    out.other_times(req.feature_views.iter().flatten().chain(&req.version));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target only learns something if bodies get through the
    /// extractor to both conversions and the time checks.
    #[test]
    fn bodies_reach_the_conversions_and_refusals_carry_the_status() {
        let p = get_online_features(
            br#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001, 1002]},
                "request_context": {"payload": ["a", null]}}"#,
        )
        .unwrap();
        assert!(p.checks.iter().all(Result::is_ok), "{:?}", p.checks);
        let (inferred, declared) = (p.inferred[0].as_ref().unwrap(), p.declared[0].as_ref().unwrap());
        assert_eq!(inferred.schema().field_with_name("payload").unwrap().data_type(), &DataType::Utf8);
        assert_eq!(declared.schema().field_with_name("payload").unwrap().data_type(), &DataType::Binary);
        assert_eq!(declared.num_rows(), 2);
        let p = materialize_incremental(br#"{"end_ts": "2026-13-01"}"#).unwrap();
        assert!(p.checks[0].as_ref().is_err_and(|r| r.status == 400 && r.message.contains("end_ts")));
        let e = push(b"").unwrap_err();
        assert!(e.status == 400 && e.message.contains("empty"), "{e:?}");
    }

    #[test]
    fn grpc_requests_reach_the_conversion() {
        use prost::Message;

        use crate::proto::serving::get_online_features_request::Kind;
        use crate::proto::serving::{FeatureList, GetOnlineFeaturesRequest};
        use crate::proto::types::value::Val;
        use crate::proto::types::{RepeatedValue, Value};
        let values = |v: Vec<Option<Val>>| RepeatedValue { val: v.into_iter().map(|val| Value { val }).collect() };
        let mut req = GetOnlineFeaturesRequest {
            kind: Some(Kind::Features(FeatureList { val: vec!["driver_hourly_stats:conv_rate".into()] })),
            ..Default::default()
        };
        req.entities.insert("driver_id".into(), values(vec![Some(Val::Int64Val(1001)), None]));
        req.request_context.insert("amount".into(), values(vec![Some(Val::DoubleVal(2.5)), Some(Val::DoubleVal(1.0))]));
        let p = grpc_get_online_features(&req.encode_to_vec()).unwrap();
        let batch = p.inferred[0].as_ref().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema().field(0).name(), "amount");
        assert_eq!(batch.schema().field(1).data_type(), &DataType::Int64);
        // A column of mixed kinds is refused with the client's status.
        req.request_context.insert("amount".into(), values(vec![Some(Val::DoubleVal(2.5)), Some(Val::BoolVal(true))]));
        let p = grpc_get_online_features(&req.encode_to_vec()).unwrap();
        assert!(p.checks[0].as_ref().is_err_and(|r| r.status == 400 && r.message.contains("amount[1] is bool_val")));
        let e = grpc_get_online_features(b"\xff\xff").unwrap_err();
        assert!(e.status == 400 && e.message.contains("GetOnlineFeaturesRequest"), "{e:?}");
    }
}
