//! [`DataFusionEngine`]: parse, check and compile expressions; evaluate them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError, SchemaError};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable, ScalarUDF, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionConfig;
use feature_store_core::model::{OnDemandFeature, OnDemandFeatureView, UdfSignature};
use feature_store_core::on_demand::{CompiledFeature, CompiledView, ExpressionEngine, FeatureExpr, OnDemandInputs};
use feature_store_core::{ValueType, describe_arrow, similar};

use crate::{Error, Result};

/// Compiles on-demand expressions with DataFusion's SQL planner and built-in
/// functions, plus the functions the process registers.
///
/// Cheap to clone: clones share registered functions.
#[derive(Debug, Clone)]
pub struct DataFusionEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<SessionState>,
    /// User-defined functions by name, with the hash of their source (Python).
    udfs: RwLock<BTreeMap<String, Option<String>>>,
    generation: AtomicU64,
}

impl Default for DataFusionEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl DataFusionEngine {
    /// An engine with DataFusion's built-in scalar functions.
    pub fn new() -> Self {
        // Names are matched exactly: `avgDailyTrips` is not `avgdailytrips`.
        let config = SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
        let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
        Self {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                udfs: RwLock::new(BTreeMap::new()),
                generation: AtomicU64::new(1),
            }),
        }
    }

    /// Registers a scalar function expressions may call by its name.
    ///
    /// It must be immutable (the same inputs always give the same output),
    /// may not take the name of a built-in function, and replaces a function
    /// registered before under its name. Views compiled before are compiled again.
    pub fn register_udf(&self, udf: ScalarUDF) -> Result<()> {
        self.register(udf, None)
    }

    /// [`Self::register_udf`] for a function whose source hashes to
    /// `source_hash` (Python functions): the registry records the hash, so a
    /// process with other source refuses the views that call it.
    pub fn register_udf_with_source(&self, udf: ScalarUDF, source_hash: String) -> Result<()> {
        self.register(udf, Some(source_hash))
    }

    fn register(&self, udf: ScalarUDF, source_hash: Option<String>) -> Result<()> {
        let name = udf.name().to_owned();
        let refuse = |message: String| Err(Error::Registration { name: name.clone(), message });
        if feature_store_core::model::check_name(&name).is_err() {
            return refuse("use ASCII letters, digits and underscores, not starting with a digit".into());
        }
        if udf.signature().volatility != Volatility::Immutable {
            return refuse(
                "it is not immutable (Volatility::Immutable): on-demand features must be pure functions of their \
                 inputs"
                    .into(),
            );
        }
        let mut udfs = self.inner.udfs.write().expect("poisoned");
        let mut state = self.inner.state.write().expect("poisoned");
        let builtin = state.scalar_functions().contains_key(&name) || state.udf(&name).is_ok();
        if builtin && !udfs.contains_key(&name) {
            return refuse("a built-in function has that name; choose another".into());
        }
        state
            .register_udf(Arc::new(udf))
            .map_err(|e| Error::Registration { name: name.clone(), message: e.to_string() })?;
        udfs.insert(name, source_hash);
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The names of the registered user-defined functions.
    pub fn udf_names(&self) -> Vec<String> {
        self.inner.udfs.read().expect("poisoned").keys().cloned().collect()
    }

    fn compile_feature(
        &self,
        state: &SessionState,
        schema: &DFSchema,
        inputs: &OnDemandInputs,
        feature: &OnDemandFeature,
        udfs: &mut BTreeMap<String, UdfSignature>,
    ) -> std::result::Result<CompiledFeature, String> {
        let (name, dtype, sql) = (feature.name.as_str(), &feature.dtype, feature.expression.as_str());
        let at = |m: String| format!("feature \"{name}\": {m}");
        if sql.len() > MAX_EXPRESSION_BYTES {
            return Err(at(format!(
                "the expression is {} bytes long; at most {MAX_EXPRESSION_BYTES} are accepted (split it into several features)",
                sql.len()
            )));
        }
        let expr = state.create_logical_expr(sql, schema).map_err(|e| at(explain(&e, inputs, sql)))?;
        // Columns in first-use order, and what the expression may not do.
        let mut columns: Vec<String> = Vec::new();
        let mut problem: Option<String> = None;
        expr.apply(|e| {
            match e {
                Expr::Column(c) if !columns.contains(&c.name) => columns.push(c.name.clone()),
                Expr::AggregateFunction(f) => {
                    problem = Some(format!(
                        "{}() is an aggregate function; an on-demand feature is computed from one row's values \
                         (aggregate over time with an aggregation view)",
                        f.func.name()
                    ));
                }
                Expr::WindowFunction(_) => {
                    problem = Some(
                        "window functions are not allowed: an on-demand feature is computed from one row's values"
                            .into(),
                    );
                }
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) | Expr::SetComparison(_) => {
                    problem = Some("subqueries are not allowed in an on-demand feature".into());
                }
                Expr::Placeholder(_) => {
                    problem = Some("placeholders ($1) are not allowed; read request fields by name".into());
                }
                Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable => {
                    problem = Some(format!(
                        "{}() is not a pure function (its result changes between calls); an on-demand feature \
                         must be a pure function of its inputs (pass the time as a request field)",
                        f.func.name()
                    ));
                }
                _ => {}
            }
            Ok(if problem.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        })
        .map_err(|e| at(e.message().into_owned()))?;
        if let Some(p) = problem {
            return Err(at(p));
        }
        let depth = depth(&expr);
        if depth > MAX_DEPTH {
            return Err(at(format!(
                "the expression nests {depth} levels deep (operators and calls within each other); at most \
                 {MAX_DEPTH} are accepted, so that serving threads evaluate it within their stack (split it into \
                 several features)"
            )));
        }
        let mut input_indexes = Vec::with_capacity(columns.len());
        let mut fields = Vec::with_capacity(columns.len());
        for c in &columns {
            let i = inputs.names[c];
            input_indexes.push(i);
            fields.push(Field::new(c, inputs.inputs[i].dtype.to_arrow(), true));
        }
        let arrow_schema: SchemaRef = Arc::new(Schema::new(fields));
        let reduced = DFSchema::try_from(Arc::clone(&arrow_schema)).map_err(|e| at(e.message().into_owned()))?;
        // Coerced and simplified as DataFusion's planner does before it
        // creates physical expressions (some functions exist only until then).
        let reduced = Arc::new(reduced);
        let context = SimplifyContext::builder()
            .with_schema(Arc::clone(&reduced))
            .with_config_options(Arc::clone(state.config_options()))
            .build();
        let simplifier = ExprSimplifier::new(context);
        let expr = simplifier.coerce(expr, &reduced).map_err(|e| at(explain(&e, inputs, sql)))?;
        // User functions as called after coercion (the types they receive), before simplification could fold them away.
        let user = self.inner.udfs.read().expect("poisoned");
        expr.apply(|e| {
            if let Expr::ScalarFunction(f) = e
                && let Some(hash) = user.get(f.func.name())
            {
                let args = f
                    .args
                    .iter()
                    .map(|a| a.get_type(&reduced).map(|t| t.to_string()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let returns = e.get_type(&reduced)?.to_string();
                udfs.insert(f.func.name().to_owned(), UdfSignature::new(f.func.name(), args, returns, hash.clone()));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(|e| at(e.message().into_owned()))?;
        drop(user);
        let expr = simplifier.simplify(expr).map_err(|e| at(explain(&e, inputs, sql)))?;
        let physical = state.create_physical_expr(expr, &reduced).map_err(|e| at(explain(&e, inputs, sql)))?;
        let physical = checked_arithmetic(physical)
            .and_then(|e| typed(e, &arrow_schema))
            .map_err(|e| at(e.message().into_owned()))?;
        let found = physical.data_type(&arrow_schema).map_err(|e| at(e.message().into_owned()))?;
        let want = dtype.to_arrow();
        let fits = found == want
            || found == DataType::Null
            || ValueType::from_arrow(&found).is_some_and(|t| dtype.accepts(&t));
        if !fits {
            let (found_name, declare) = match ValueType::from_arrow(&found) {
                Some(t) if t.to_arrow() == found => (t.to_string(), format!("declare dtype: {t} or ")),
                Some(t) => (describe_arrow(&found), format!("declare dtype: {t} or ")),
                None => (describe_arrow(&found), String::new()),
            };
            return Err(at(format!(
                "the expression is {found_name} but the feature is declared {dtype}; {declare}CAST the expression \
                 (CAST(... AS {}))",
                sql_type(dtype)
            )));
        }
        let cast = (found != want).then_some(want);
        Ok(CompiledFeature::new(
            name.to_owned(),
            dtype.clone(),
            input_indexes,
            Arc::new(Compiled { expr: physical, schema: arrow_schema, cast }),
        ))
    }
}

/// Longest expression text accepted.
const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest expression tree accepted: evaluation recurses once per level on
/// the serving thread.
const MAX_DEPTH: usize = 64;
/// Stack of the compiling thread: room for [`MAX_EXPRESSION_BYTES`] of
/// nested operators in DataFusion's recursive parser and planner, even
/// unoptimized (virtual memory: pages are used only as deep as it goes).
const COMPILE_STACK: usize = 256 << 20;

/// Levels of an expression tree (on the compiling thread's large stack).
fn depth(expr: &Expr) -> usize {
    let mut deepest = 0;
    let _ = expr.apply_children(|child| {
        deepest = deepest.max(depth(child));
        Ok(TreeNodeRecursion::Continue)
    });
    deepest + 1
}

/// Integer arithmetic that overflows is an error rather than a wrapped
/// value (DataFusion wraps by default): a feature never silently turns
/// 2^31 into a negative number.
fn checked_arithmetic(expr: Arc<dyn PhysicalExpr>) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::physical_expr::expressions::BinaryExpr;
    expr.transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else { return Ok(Transformed::no(e)) };
        let checked = BinaryExpr::new(Arc::clone(b.left()), *b.op(), Arc::clone(b.right())).with_fail_on_overflow(true);
        Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>))
    })
    .map(|t| t.data)
}

/// Gives every inner node of a compiled expression its output field, found
/// once here: DataFusion's operators otherwise derive their children's types
/// on every evaluation, and a function call names its arguments by printing
/// them, which on a one-row serving request costs more than the arithmetic.
fn typed(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::physical_expr::expressions::CastExpr;
    use datafusion::physical_expr::expressions::{Column, Literal};
    expr.transform_up(|e| {
        if e.downcast_ref::<Column>().is_some() || e.downcast_ref::<Literal>().is_some() {
            return Ok(Transformed::no(e));
        }
        let field = e.return_field(schema)?;
        if let Some(cast) = e.downcast_ref::<CastExpr>() {
            let from = cast.expr().data_type(schema)?;
            if widening(&from, field.data_type()) {
                let widen = Widen { child: Arc::clone(cast.expr()), from, field, options: cast.cast_options().clone() };
                return Ok(Transformed::yes(Arc::new(widen) as Arc<dyn PhysicalExpr>));
            }
        }
        Ok(Transformed::yes(Arc::new(Typed { inner: e, field }) as Arc<dyn PhysicalExpr>))
    })
    .map(|t| t.data)
}

/// Whether a cast from `from` to `to` is one [`widen`] computes: a numeric
/// conversion that cannot fail, which Arrow's cast kernel computes with `as`.
fn widening(from: &DataType, to: &DataType) -> bool {
    use DataType::{Float32, Float64, Int32, Int64};
    matches!((from, to), (Float32, Float64) | (Int32, Int64) | (Int32, Float64) | (Int64, Float64))
}

/// `array` converted to `to` as Arrow's cast kernel converts it (`as`, no
/// failure possible; see [`widening`]), into a buffer from the global
/// allocator's ordinary path: Arrow's kernels allocate 128-byte aligned
/// buffers, which glibc serves through its slow `memalign` path, and a
/// one-row serving request casts an input per expression.
fn widen(array: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
    use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray};
    fn map<I: ArrowPrimitiveType, O: ArrowPrimitiveType>(a: &ArrayRef, f: impl Fn(I::Native) -> O::Native) -> ArrayRef {
        let a = a.as_primitive::<I>();
        let values: Vec<O::Native> = a.values().iter().map(|&v| f(v)).collect();
        Arc::new(PrimitiveArray::<O>::new(values.into(), a.nulls().cloned()))
    }
    Some(match (array.data_type(), to) {
        (DataType::Float32, DataType::Float64) => map::<Float32Type, Float64Type>(array, |v| v as f64),
        (DataType::Int32, DataType::Int64) => map::<Int32Type, Int64Type>(array, |v| v as i64),
        (DataType::Int32, DataType::Float64) => map::<Int32Type, Float64Type>(array, |v| v as f64),
        (DataType::Int64, DataType::Float64) => map::<Int64Type, Float64Type>(array, |v| v as f64),
        _ => return None,
    })
}

/// A widening `CAST` ([`widening`]) computed by [`widen`]; the same values
/// as DataFusion's `CastExpr`, which it replaces.
#[derive(Debug)]
struct Widen {
    child: Arc<dyn PhysicalExpr>,
    from: DataType,
    field: arrow_schema::FieldRef,
    options: arrow_cast::CastOptions<'static>,
}

impl PartialEq for Widen {
    fn eq(&self, other: &Self) -> bool {
        self.child.as_ref() == other.child.as_ref() && self.from == other.from && self.field == other.field
    }
}

impl Eq for Widen {}

impl std::hash::Hash for Widen {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.child.as_ref().hash(state);
        self.from.hash(state);
        self.field.hash(state);
    }
}

impl std::fmt::Display for Widen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CAST({} AS {})", self.child, self.field.data_type())
    }
}

impl PhysicalExpr for Widen {
    fn data_type(&self, _: &Schema) -> datafusion::common::Result<DataType> {
        Ok(self.field.data_type().clone())
    }

    fn nullable(&self, _: &Schema) -> datafusion::common::Result<bool> {
        Ok(self.field.is_nullable())
    }

    fn return_field(&self, _: &Schema) -> datafusion::common::Result<arrow_schema::FieldRef> {
        Ok(Arc::clone(&self.field))
    }

    fn evaluate(&self, batch: &RecordBatch) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::logical_expr::ColumnarValue;
        let value = self.child.evaluate(batch)?;
        if let ColumnarValue::Array(a) = &value
            && let Some(widened) = widen(a, self.field.data_type())
        {
            return Ok(ColumnarValue::Array(widened));
        }
        value.cast_to(self.field.data_type(), Some(&self.options))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.child]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
        let child = children.into_iter().next().unwrap_or_else(|| Arc::clone(&self.child));
        Ok(Arc::new(Widen {
            child,
            from: self.from.clone(),
            field: Arc::clone(&self.field),
            options: self.options.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CAST(")?;
        self.child.fmt_sql(f)?;
        write!(f, " AS {})", self.field.data_type())
    }
}

/// A node with its output field computed at compile time ([`typed`]).
#[derive(Debug)]
struct Typed {
    inner: Arc<dyn PhysicalExpr>,
    field: arrow_schema::FieldRef,
}

impl PartialEq for Typed {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref() == other.inner.as_ref() && self.field == other.field
    }
}

impl Eq for Typed {}

impl std::hash::Hash for Typed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.as_ref().hash(state);
        self.field.hash(state);
    }
}

impl std::fmt::Display for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl PhysicalExpr for Typed {
    fn data_type(&self, _: &Schema) -> datafusion::common::Result<DataType> {
        Ok(self.field.data_type().clone())
    }

    fn nullable(&self, _: &Schema) -> datafusion::common::Result<bool> {
        Ok(self.field.is_nullable())
    }

    fn return_field(&self, _: &Schema) -> datafusion::common::Result<arrow_schema::FieldRef> {
        Ok(Arc::clone(&self.field))
    }

    fn evaluate(&self, batch: &RecordBatch) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
        self.inner.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
        let inner = children.into_iter().next().unwrap_or_else(|| Arc::clone(&self.inner));
        Ok(Arc::new(Typed { inner, field: Arc::clone(&self.field) }))
    }

    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt_sql(f)
    }
}

/// The SQL type name of a value type, for CAST hints.
fn sql_type(t: &ValueType) -> String {
    match t {
        ValueType::Bool => "BOOLEAN".into(),
        ValueType::Int32 => "INT".into(),
        ValueType::Int64 => "BIGINT".into(),
        ValueType::Float32 => "FLOAT".into(),
        ValueType::Float64 => "DOUBLE".into(),
        ValueType::String => "VARCHAR".into(),
        ValueType::Bytes => "BYTEA".into(),
        ValueType::Timestamp => "TIMESTAMP".into(),
        other => other.to_string(),
    }
}

/// A DataFusion planning error in the user's terms: unknown and ambiguous
/// columns with the close names, everything else without DataFusion's prefixes.
fn explain(e: &DataFusionError, inputs: &OnDemandInputs, sql: &str) -> String {
    if let DataFusionError::SchemaError(inner, _) = e.find_root()
        && let SchemaError::FieldNotFound { field, .. } = inner.as_ref()
    {
        let name = field.name();
        if let Some(options) = inputs.ambiguous.get(name) {
            return format!(
                "column \"{name}\" is ambiguous: more than one input has it; write {}",
                options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(" or ")
            );
        }
        let close: Vec<String> = inputs.names.keys().filter(|n| similar(n, name)).map(|n| format!("\"{n}\"")).collect();
        let hint = if close.is_empty() {
            let mut all: Vec<&str> = inputs.names.keys().map(String::as_str).filter(|n| !n.contains("__")).collect();
            all.extend(inputs.ambiguous.values().flatten().map(String::as_str));
            format!("; the inputs are: {}", all.join(", "))
        } else {
            format!("; did you mean {}?", close.join(" or "))
        };
        return format!("unknown column \"{name}\"{hint}");
    }
    let message = e.find_root().message().into_owned();
    let message = message.strip_prefix("Error during planning: ").unwrap_or(&message).to_owned();
    match e.find_root() {
        DataFusionError::SQL(..) => format!("syntax error in \"{sql}\": {message}"),
        _ => message,
    }
}

impl ExpressionEngine for DataFusionEngine {
    fn compile(
        &self,
        view: &OnDemandFeatureView,
        inputs: &OnDemandInputs,
    ) -> std::result::Result<CompiledView, Vec<String>> {
        let fields: Vec<Field> =
            inputs.names.iter().map(|(n, &i)| Field::new(n, inputs.inputs[i].dtype.to_arrow(), true)).collect();
        let schema = DFSchema::try_from(Schema::new(fields)).map_err(|e| vec![e.message().into_owned()])?;
        let state = self.inner.state.read().expect("poisoned").clone();
        // DataFusion's parser and planner recurse once per level of an
        // expression: compiling runs on a thread with room for the largest
        // expression accepted, so a long definition is an error, never a
        // stack overflow of the caller's (a tokio worker's 2 MiB) stack.
        let (features, problems, udfs) = std::thread::scope(|scope| {
            let compiled = std::thread::Builder::new().stack_size(COMPILE_STACK).spawn_scoped(scope, || {
                let mut features = Vec::with_capacity(view.features.len());
                let mut problems = Vec::new();
                let mut udfs = BTreeMap::new();
                for f in &view.features {
                    match self.compile_feature(&state, &schema, inputs, f, &mut udfs) {
                        Ok(c) => features.push(c),
                        Err(p) => problems.push(p),
                    }
                }
                (features, problems, udfs)
            });
            let failed = |m: String| (Vec::new(), vec![m], BTreeMap::new());
            match compiled {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    failed("the expression engine failed while compiling (a bug: please report it)".into())
                }),
                Err(e) => failed(format!("cannot start the compiling thread: {e}")),
            }
        });
        if problems.is_empty() { Ok(CompiledView::new(features, udfs.into_values().collect())) } else { Err(problems) }
    }

    fn has_udf(&self, name: &str) -> bool {
        self.inner.udfs.read().expect("poisoned").contains_key(name)
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// One compiled feature: a physical expression over its inputs' columns.
#[derive(Debug)]
struct Compiled {
    expr: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
    /// The declared type, when the expression's differs (a lossless widening).
    cast: Option<DataType>,
}

impl FeatureExpr for Compiled {
    fn evaluate(&self, columns: &[ArrayRef], rows: usize) -> feature_store_core::Result<ArrayRef> {
        let failed = |m: String| feature_store_core::Error::data("on-demand expression", m);
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns.to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| failed(e.to_string()))?;
        let value = match self.expr.evaluate(&batch).and_then(|v| v.into_array(rows)) {
            Ok(v) => v,
            Err(e) => {
                let message = e.find_root().message().into_owned();
                return Err(failed(match self.failing_row(&batch) {
                    Some(inputs) => format!("{message} (in the row with {inputs})"),
                    None => message,
                }));
            }
        };
        match &self.cast {
            None => Ok(value),
            Some(t) => match widen(&value, t) {
                Some(widened) => Ok(widened),
                None => arrow_cast::cast(&value, t).map_err(|e| failed(e.to_string())),
            },
        }
    }
}

impl Compiled {
    /// The inputs of the first row of `batch` the expression fails on alone,
    /// as `name=value` pairs: said with the error, as a DataFusion error
    /// (a division by zero, an overflow) names no row. Only runs after a
    /// failure, one row at a time.
    fn failing_row(&self, batch: &RecordBatch) -> Option<String> {
        use arrow_cast::display::{ArrayFormatter, FormatOptions};
        let row = (0..batch.num_rows()).find(|&i| {
            let one = batch.slice(i, 1);
            self.expr.evaluate(&one).and_then(|v| v.into_array(1)).is_err()
        })?;
        let options = FormatOptions::default().with_null("NULL");
        let values: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| {
                let value = ArrayFormatter::try_new(c.as_ref(), &options)
                    .map_or_else(|_| "?".to_owned(), |v| v.value(row).to_string());
                format!("{}={value}", f.name())
            })
            .collect();
        Some(if values.is_empty() { format!("index {row}") } else { values.join(", ") })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array};
    use feature_store_core::ValueType;
    use feature_store_core::model::{FeatureView, OnDemandFeatureView};
    use feature_store_core::on_demand::{ExpressionEngine, OnDemandInputs};

    use super::DataFusionEngine;

    /// Compiles `expression` over `x float64, n int32` and evaluates it on the given columns.
    fn eval(dtype: ValueType, expression: &str, x: Vec<Option<f64>>, n: Vec<Option<i32>>) -> ArrayRef {
        let view = FeatureView::builder("v", "s")
            .feature("x", ValueType::Float64)
            .feature("n", ValueType::Int32)
            .build()
            .unwrap();
        let od = OnDemandFeatureView::builder("od").source("v").feature("f", dtype, expression).build().unwrap();
        let inputs = OnDemandInputs::of(&od, |_| Some(view.clone()), |_| None);
        let compiled = DataFusionEngine::new().compile(&od, &inputs).unwrap_or_else(|e| panic!("{expression}: {e:?}"));
        let f = &compiled.features[0];
        let rows = x.len();
        let all: [ArrayRef; 2] = [Arc::new(Float64Array::from(x)), Arc::new(Int32Array::from(n))];
        let args: Vec<ArrayRef> = f.inputs.iter().map(|&i| Arc::clone(&all[i])).collect();
        f.expr.evaluate(&args, rows).unwrap()
    }

    fn bools(a: &ArrayRef) -> Vec<Option<bool>> {
        a.as_any().downcast_ref::<BooleanArray>().unwrap().iter().collect()
    }

    #[test]
    fn nan_is_equal_to_itself_and_above_every_number() {
        let x = vec![Some(f64::NAN), Some(f64::INFINITY), Some(1.0), None];
        let n = vec![Some(0); 4];
        assert_eq!(
            bools(&eval(ValueType::Bool, "x = x", x.clone(), n.clone())),
            [Some(true), Some(true), Some(true), None]
        );
        let above = eval(ValueType::Bool, "x > 1e308", x, n);
        assert_eq!(bools(&above), [Some(true), Some(true), Some(false), None]);
    }

    #[test]
    fn nulls_propagate_as_in_sql() {
        let x = vec![None, Some(2.0)];
        let n = vec![Some(1), None];
        let sum = eval(ValueType::Float64, "x + n", x.clone(), n.clone());
        assert_eq!(sum.null_count(), 2);
        assert_eq!(bools(&eval(ValueType::Bool, "x > 0 AND n > 0", x.clone(), n.clone())), [None, None]);
        assert_eq!(bools(&eval(ValueType::Bool, "x IS NULL OR n IS NULL", x, n)), [Some(true), Some(true)]);
    }

    #[test]
    fn integer_overflow_is_an_error_not_a_wrapped_value() {
        let (view, od) = (
            FeatureView::builder("v", "s")
                .feature("x", ValueType::Float64)
                .feature("n", ValueType::Int32)
                .build()
                .unwrap(),
            OnDemandFeatureView::builder("od").source("v").feature("f", ValueType::Int64, "n + n").build().unwrap(),
        );
        let inputs = OnDemandInputs::of(&od, |_| Some(view.clone()), |_| None);
        let compiled = DataFusionEngine::new().compile(&od, &inputs).unwrap();
        let n: ArrayRef = Arc::new(Int32Array::from(vec![i32::MAX]));
        let err = compiled.features[0].expr.evaluate(&[n], 1).unwrap_err().to_string();
        assert!(err.contains("Overflow"), "{err}");
        // The error names the row it happened in by its inputs.
        let n: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(i32::MAX), Some(i32::MAX)]));
        let err = compiled.features[0].expr.evaluate(&[n], 4).unwrap_err().to_string();
        assert!(err.contains("Overflow") && err.ends_with(&format!("(in the row with n={})", i32::MAX)), "{err}");
    }

    #[test]
    fn results_widen_to_the_declared_type() {
        // int32 + int32 is int32 in DataFusion; the feature is int64.
        let out = eval(ValueType::Int64, "n + n", vec![Some(0.0)], vec![Some(1 << 20)]);
        assert_eq!(out.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 1 << 21);
        // A literal NULL takes the declared type.
        let out = eval(ValueType::Float64, "NULL", vec![Some(0.0)], vec![Some(1)]);
        assert_eq!(out.data_type(), &arrow_schema::DataType::Float64);
        assert!(out.is_null(0));
    }

    /// `widen` must give Arrow's cast kernel's values bit for bit (NaN
    /// payloads and signs, zeros' signs, extremes) and its nulls.
    #[test]
    fn widening_casts_equal_arrows_cast_kernel() {
        use arrow_array::Float32Array;
        use arrow_schema::DataType;
        let f32s: ArrayRef = Arc::new(Float32Array::from(vec![
            Some(f32::NAN),
            Some(-f32::NAN),
            Some(f32::from_bits(0x7fa0_0001)),
            Some(f32::INFINITY),
            Some(f32::NEG_INFINITY),
            Some(-0.0),
            Some(0.0),
            Some(f32::MIN_POSITIVE / 3.0),
            Some(f32::MAX),
            Some(f32::MIN),
            Some(0.1),
            None,
        ]));
        let i32s: ArrayRef = Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(i32::MAX), Some(-1), None, Some(0)]));
        let i64s: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(i64::MIN),
            Some(i64::MAX),
            Some((1 << 53) + 1),
            Some(-(1 << 53) - 1),
            None,
            Some(7),
        ]));
        let cases = [
            (&f32s, DataType::Float64),
            (&i32s, DataType::Int64),
            (&i32s, DataType::Float64),
            (&i64s, DataType::Float64),
        ];
        for (input, to) in cases {
            for sliced in [Arc::clone(input), input.slice(1, input.len() - 2)] {
                let ours = super::widen(&sliced, &to).expect("a widening");
                let arrow = arrow_cast::cast(&sliced, &to).unwrap();
                assert_eq!(ours.data_type(), arrow.data_type());
                assert_eq!(ours.len(), arrow.len());
                for i in 0..ours.len() {
                    assert_eq!(ours.is_null(i), arrow.is_null(i), "{} -> {to}, row {i}", input.data_type());
                    if ours.is_valid(i) {
                        let bits = |a: &ArrayRef| match a.data_type() {
                            DataType::Float64 => a.as_any().downcast_ref::<Float64Array>().unwrap().value(i).to_bits(),
                            _ => a.as_any().downcast_ref::<Int64Array>().unwrap().value(i) as u64,
                        };
                        assert_eq!(bits(&ours), bits(&arrow), "{} -> {to}, row {i}", input.data_type());
                    }
                }
            }
        }
        assert!(super::widen(&f32s, &DataType::Int64).is_none(), "only widenings");
    }

    /// Inputs that meet in arithmetic are widened (CAST) inside the expression.
    #[test]
    fn mixed_types_widen_inside_expressions() {
        let out =
            eval(ValueType::Float64, "x + n", vec![Some(0.5), None, Some(f64::NAN)], vec![Some(2), Some(1), Some(3)]);
        let out = out.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(out.value(0), 2.5);
        assert!(out.is_null(1));
        assert!(out.value(2).is_nan());
        let out = eval(ValueType::Int64, "CAST(n AS BIGINT) * 3", vec![None], vec![Some(i32::MAX)]);
        assert_eq!(out.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 3 * i32::MAX as i64);
    }
}

#[cfg(test)]
mod deep {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array};
    use feature_store_core::ValueType;
    use feature_store_core::model::{FeatureView, OnDemandFeatureView};
    use feature_store_core::on_demand::{ExpressionEngine, OnDemandInputs};

    /// Compiles and evaluates `expression` on a thread with a tokio worker's 2 MiB stack.
    fn on_small_stack(expression: String) -> Result<(), String> {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let view = FeatureView::builder("v", "s").feature("x", ValueType::Float64).build().unwrap();
                let od = OnDemandFeatureView::builder("od")
                    .source("v")
                    .feature("f", ValueType::Float64, expression)
                    .build()
                    .unwrap();
                let inputs = OnDemandInputs::of(&od, |_| Some(view.clone()), |_| None);
                let compiled = super::DataFusionEngine::new().compile(&od, &inputs).map_err(|e| e.join("; "))?;
                let x: ArrayRef = Arc::new(Float64Array::from(vec![1.0; 3]));
                compiled.features[0].expr.evaluate(&[x], 3).map(|_| ()).map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap()
    }

    /// Long and deep expressions are errors, never a stack overflow of the caller's thread.
    #[test]
    fn long_and_deep_expressions_are_bounded() {
        on_small_stack(vec!["x"; 63].join(" + ")).unwrap();
        let err = on_small_stack(vec!["x"; 2048].join("+")).unwrap_err();
        assert!(err.contains("nests 2048 levels deep") && err.contains("at most 64"), "{err}");
        let err = on_small_stack(vec!["x"; 2049].join("+")).unwrap_err();
        assert!(err.contains("4097 bytes long"), "{err}");
        let err = on_small_stack(format!("{}x{}", "(".repeat(1000), ")".repeat(1000))).unwrap_err();
        assert!(err.contains("feature \"f\""), "{err}");
        let err = on_small_stack(format!("{}x{}", "abs(".repeat(500), ")".repeat(500))).unwrap_err();
        assert!(err.contains("feature \"f\""), "{err}");
    }
}
