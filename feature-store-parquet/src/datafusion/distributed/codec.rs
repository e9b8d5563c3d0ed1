//! How this crate's operators travel to a cluster: a
//! [`PhysicalExtensionCodec`] that encodes [`AsOfJoinExec`],
//! [`RowNumberExec`], [`UniqueRowsExec`], [`LatestPerKeyExec`], [`FolderWriterExec`],
//! [`AttemptStampExec`], [`FirstAttemptExec`], [`TilesExec`] and [`OnDemandExec`]
//! (whose on-demand features the decoding process compiles again) and
//! hands every other node to Ballista's own codec.
//! Scheduler and executors must be started with it
//! (`feature-store cluster scheduler|executor` are).

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use feature_store_core::ValueType;
use feature_store_core::aggregation::WindowSpec;
use prost::Message;

use super::attempts::{AttemptStampExec, FirstAttemptExec};
use super::row_number::{RowNumberExec, UniqueRowsExec};
use crate::datafusion::asof_join::{AggColumn, AsOfJoinExec, AsOfSpec};
use crate::datafusion::folder_writer::FolderWriterExec;
use crate::datafusion::latest::LatestPerKeyExec;
use crate::datafusion::on_demand::OnDemandExec;
use crate::datafusion::tiles::TilesExec;
use feature_store_core::on_demand::{ExpressionEngine, OnDemandProjection};

/// Leads every buffer this codec writes. As a protobuf tag it would be field 8
/// of wire type 6, which does not exist, so no buffer of Ballista's codec
/// starts with it.
const MAGIC: &[u8; 4] = b"FSX1";

/// This crate's nodes, and Ballista's (shuffles) through Ballista's codec.
#[derive(Debug, Default)]
pub struct FeatureStoreCodec {
    ballista: BallistaPhysicalExtensionCodec,
    /// Compiles on-demand features where an [`OnDemandExec`] is decoded.
    engine: Option<Arc<dyn ExpressionEngine>>,
}

impl FeatureStoreCodec {
    /// The codec, ready to register with a scheduler, an executor or a client.
    pub fn new() -> Self {
        Self::default()
    }

    /// The codec decoding on-demand features with `engine` (executors need
    /// one to run retrievals with on-demand features; an executor without
    /// one refuses them, naming the view).
    pub fn with_engine(mut self, engine: Arc<dyn ExpressionEngine>) -> Self {
        self.engine = Some(engine);
        self
    }
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(oneof = "Node", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    node: Option<Node>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Node {
    #[prost(message, tag = "1")]
    AsOf(AsOfProto),
    #[prost(message, tag = "2")]
    RowNumber(RowNumberProto),
    #[prost(message, tag = "3")]
    Latest(LatestProto),
    #[prost(message, tag = "4")]
    Folder(FolderProto),
    #[prost(message, tag = "5")]
    UniqueRows(UniqueRowsProto),
    #[prost(message, tag = "6")]
    AttemptStamp(AttemptStampProto),
    #[prost(message, tag = "7")]
    FirstAttempt(Empty),
    #[prost(message, tag = "8")]
    OnDemand(OnDemandProto),
    #[prost(message, tag = "9")]
    Tiles(TilesProto),
}

#[derive(Clone, PartialEq, Message)]
struct TilesProto {
    /// [`TilesExec::spec_json`]: the view's definition, its keys, the blocks.
    #[prost(string, tag = "1")]
    spec: String,
}

#[derive(Clone, PartialEq, Message)]
struct OnDemandProto {
    /// [`OnDemandProjection::to_json`]: the views' definitions, not compiled code.
    #[prost(string, tag = "1")]
    projection: String,
}

#[derive(Clone, PartialEq, Message)]
struct AttemptStampProto {
    #[prost(bool, tag = "1")]
    positions: bool,
}

/// A node with nothing to configure.
#[derive(Clone, PartialEq, Message)]
struct Empty {}

#[derive(Clone, PartialEq, Message)]
struct UniqueRowsProto {
    #[prost(uint64, tag = "1")]
    row: u64,
}

#[derive(Clone, PartialEq, Message)]
struct FolderProto {
    #[prost(uint64, optional, tag = "1")]
    row_column: Option<u64>,
    #[prost(uint64, tag = "2")]
    rows_per_file: u64,
    #[prost(string, tag = "3")]
    folder: String,
    #[prost(string, tag = "4")]
    run: String,
}

#[derive(Clone, PartialEq, Message)]
struct LatestProto {
    #[prost(uint64, tag = "1")]
    key_count: u64,
    #[prost(bool, tag = "2")]
    has_created: bool,
    #[prost(bool, repeated, tag = "3")]
    tie_features: Vec<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct RowNumberProto {
    #[prost(string, tag = "1")]
    column: String,
}

#[derive(Clone, PartialEq, Message)]
struct AsOfProto {
    #[prost(string, tag = "1")]
    view: String,
    #[prost(string, tag = "2")]
    context: String,
    #[prost(uint64, repeated, tag = "3")]
    left_keys: Vec<u64>,
    #[prost(uint64, tag = "4")]
    left_ts: u64,
    /// Key types as the fields of a schema (`k0`, `k1`, ...).
    #[prost(message, optional, tag = "5")]
    key_types: Option<datafusion_proto::protobuf::Schema>,
    #[prost(bool, tag = "6")]
    has_created: bool,
    #[prost(message, optional, tag = "7")]
    features: Option<datafusion_proto::protobuf::Schema>,
    /// 0 s, 1 ms, 2 µs, 3 ns.
    #[prost(uint32, tag = "8")]
    ts_unit: u32,
    #[prost(int64, optional, tag = "9")]
    ttl: Option<i64>,
    #[prost(message, repeated, tag = "10")]
    aggregations: Vec<AggProto>,
    #[prost(bool, tag = "11")]
    features_only: bool,
    #[prost(bool, tag = "12")]
    partitioned: bool,
}

#[derive(Clone, PartialEq, Message)]
struct AggProto {
    /// The function's name as in definitions (`sum`, `last_n`, ...).
    #[prost(string, tag = "1")]
    function: String,
    /// The input's type name; empty counts rows.
    #[prost(string, tag = "2")]
    input: String,
    #[prost(uint32, optional, tag = "3")]
    n: Option<u32>,
    #[prost(int64, tag = "4")]
    window: i64,
    #[prost(int64, optional, tag = "5")]
    interval: Option<i64>,
    #[prost(uint64, optional, tag = "6")]
    column: Option<u64>,
    #[prost(string, tag = "7")]
    dtype: String,
}

fn bad(what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("feature-store codec: {what}"))
}

fn unit_code(u: TimeUnit) -> u32 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn unit_of(code: u32) -> Result<TimeUnit> {
    Ok(match code {
        0 => TimeUnit::Second,
        1 => TimeUnit::Millisecond,
        2 => TimeUnit::Microsecond,
        3 => TimeUnit::Nanosecond,
        other => return Err(bad(format!("unknown time unit {other}"))),
    })
}

fn schema_proto(fields: Vec<Field>) -> Result<datafusion_proto::protobuf::Schema> {
    datafusion_proto::protobuf::Schema::try_from(&Schema::new(fields)).map_err(bad)
}

fn schema_of(proto: Option<&datafusion_proto::protobuf::Schema>) -> Result<Schema> {
    let proto = proto.ok_or_else(|| bad("a schema is missing"))?;
    Schema::try_from(proto).map_err(bad)
}

fn encode_spec(node: &AsOfJoinExec) -> Result<AsOfProto> {
    let spec = node.spec();
    let key_fields =
        spec.key_types.iter().enumerate().map(|(i, t)| Field::new(format!("k{i}"), t.clone(), true)).collect();
    let aggregations = spec
        .aggregations
        .iter()
        .map(|a| {
            let function = serde_json::to_value(a.window.function)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .ok_or_else(|| bad("an aggregate function without a name"))?;
            Ok(AggProto {
                function,
                input: a.window.input.as_ref().map(ToString::to_string).unwrap_or_default(),
                n: a.window.n,
                window: a.window.window,
                interval: a.window.interval,
                column: a.column.map(|c| c as u64),
                dtype: a.dtype.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AsOfProto {
        view: spec.view.clone(),
        context: spec.context.clone(),
        left_keys: spec.left_keys.iter().map(|k| *k as u64).collect(),
        left_ts: spec.left_ts as u64,
        key_types: Some(schema_proto(key_fields)?),
        has_created: spec.has_created,
        features: Some(schema_proto(spec.features.clone())?),
        ts_unit: unit_code(spec.ts_unit),
        ttl: spec.ttl,
        aggregations,
        features_only: node.is_features_only(),
        partitioned: node.is_partitioned(),
    })
}

fn value_type(name: &str) -> Result<ValueType> {
    name.parse().map_err(bad)
}

fn decode_spec(p: &AsOfProto) -> Result<AsOfSpec> {
    let key_types: Vec<DataType> =
        schema_of(p.key_types.as_ref())?.fields().iter().map(|f| f.data_type().clone()).collect();
    let features: Vec<Field> = schema_of(p.features.as_ref())?.fields().iter().map(|f| f.as_ref().clone()).collect();
    let aggregations = p
        .aggregations
        .iter()
        .map(|a| {
            let function = serde_json::from_value(serde_json::Value::String(a.function.clone()))
                .map_err(|_| bad(format!("unknown aggregate function \"{}\"", a.function)))?;
            let input = if a.input.is_empty() { None } else { Some(value_type(&a.input)?) };
            Ok(AggColumn {
                window: WindowSpec { function, input, n: a.n, window: a.window, interval: a.interval },
                column: a.column.map(|c| c as usize),
                dtype: value_type(&a.dtype)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AsOfSpec {
        view: p.view.clone(),
        context: p.context.clone(),
        left_keys: p.left_keys.iter().map(|k| *k as usize).collect(),
        left_ts: p.left_ts as usize,
        key_types,
        has_created: p.has_created,
        features,
        ts_unit: unit_of(p.ts_unit)?,
        ttl: p.ttl,
        aggregations,
    })
}

impl PhysicalExtensionCodec for FeatureStoreCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(body) = buf.strip_prefix(MAGIC.as_slice()) else {
            return self.ballista.try_decode(buf, inputs, ctx, converter);
        };
        let node = NodeProto::decode(body).map_err(bad)?.node.ok_or_else(|| bad("an empty node"))?;
        match node {
            Node::AsOf(p) => {
                let [left, right] = inputs else {
                    return Err(bad(format!("AsOfJoinExec takes two inputs, got {}", inputs.len())));
                };
                let spec = decode_spec(&p)?;
                Ok(Arc::new(AsOfJoinExec::from_parts(
                    Arc::clone(left),
                    Arc::clone(right),
                    spec,
                    p.features_only,
                    p.partitioned,
                )?))
            }
            Node::RowNumber(p) => {
                let [input] = inputs else {
                    return Err(bad(format!("RowNumberExec takes one input, got {}", inputs.len())));
                };
                Ok(Arc::new(RowNumberExec::new(Arc::clone(input), &p.column)))
            }
            Node::UniqueRows(p) => {
                let [input] = inputs else {
                    return Err(bad(format!("UniqueRowsExec takes one input, got {}", inputs.len())));
                };
                let row = p.row as usize;
                if row >= input.schema().fields().len() {
                    return Err(bad(format!("UniqueRowsExec: no column {row}")));
                }
                Ok(Arc::new(UniqueRowsExec::new(Arc::clone(input), row)))
            }
            Node::AttemptStamp(p) => {
                let [input] = inputs else {
                    return Err(bad(format!("AttemptStampExec takes one input, got {}", inputs.len())));
                };
                Ok(Arc::new(AttemptStampExec::new(Arc::clone(input), p.positions)))
            }
            Node::FirstAttempt(_) => {
                let [input] = inputs else {
                    return Err(bad(format!("FirstAttemptExec takes one input, got {}", inputs.len())));
                };
                Ok(Arc::new(FirstAttemptExec::try_new(Arc::clone(input))?))
            }
            Node::Folder(p) => {
                let [input] = inputs else {
                    return Err(bad(format!("FolderWriterExec takes one input, got {}", inputs.len())));
                };
                Ok(Arc::new(FolderWriterExec::new(
                    Arc::clone(input),
                    p.row_column.map(|c| c as usize),
                    p.rows_per_file,
                    p.folder,
                    p.run,
                )))
            }
            Node::OnDemand(p) => {
                let [input] = inputs else {
                    return Err(bad(format!("OnDemandExec takes one input, got {}", inputs.len())));
                };
                let Some(engine) = &self.engine else {
                    return Err(DataFusionError::Execution(
                        "this process cannot compute on-demand features: its codec has no expression engine \
                         (start scheduler and executors with `feature-store cluster`, whose codec has one)"
                            .into(),
                    ));
                };
                let projection = OnDemandProjection::from_json(&p.projection, engine.as_ref())
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(Arc::new(
                    OnDemandExec::try_new(Arc::clone(input), projection)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                ))
            }
            Node::Tiles(p) => {
                let [input] = inputs else {
                    return Err(bad(format!("TilesExec takes one input, got {}", inputs.len())));
                };
                let spec = TilesExec::spec_from_json(&p.spec).map_err(bad)?;
                Ok(Arc::new(TilesExec::new(Arc::clone(input), spec)))
            }
            Node::Latest(p) => {
                let [input] = inputs else {
                    return Err(bad(format!("LatestPerKeyExec takes one input, got {}", inputs.len())));
                };
                Ok(Arc::new(LatestPerKeyExec::try_new(
                    Arc::clone(input),
                    p.key_count as usize,
                    p.has_created,
                    p.tie_features,
                )?))
            }
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let proto = if let Some(join) = node.downcast_ref::<AsOfJoinExec>() {
            Node::AsOf(encode_spec(join)?)
        } else if let Some(rows) = node.downcast_ref::<RowNumberExec>() {
            Node::RowNumber(RowNumberProto { column: rows.column().to_owned() })
        } else if let Some(unique) = node.downcast_ref::<UniqueRowsExec>() {
            Node::UniqueRows(UniqueRowsProto { row: unique.row() as u64 })
        } else if let Some(stamp) = node.downcast_ref::<AttemptStampExec>() {
            Node::AttemptStamp(AttemptStampProto { positions: stamp.positions() })
        } else if node.downcast_ref::<FirstAttemptExec>().is_some() {
            Node::FirstAttempt(Empty {})
        } else if let Some(writer) = node.downcast_ref::<FolderWriterExec>() {
            Node::Folder(FolderProto {
                row_column: writer.row_column().map(|c| c as u64),
                rows_per_file: writer.rows_per_file(),
                folder: writer.folder().to_owned(),
                run: writer.run().to_owned(),
            })
        } else if let Some(on_demand) = node.downcast_ref::<OnDemandExec>() {
            Node::OnDemand(OnDemandProto { projection: on_demand.projection().to_json() })
        } else if let Some(tiles) = node.downcast_ref::<TilesExec>() {
            Node::Tiles(TilesProto { spec: tiles.spec_json() })
        } else if let Some(latest) = node.downcast_ref::<LatestPerKeyExec>() {
            Node::Latest(LatestProto {
                key_count: latest.key_count() as u64,
                has_created: latest.has_created(),
                tie_features: latest.tie_features().to_vec(),
            })
        } else {
            return self.ballista.try_encode(node, buf, converter);
        };
        buf.extend_from_slice(MAGIC);
        NodeProto { node: Some(proto) }.encode(buf).map_err(bad)
    }
}
