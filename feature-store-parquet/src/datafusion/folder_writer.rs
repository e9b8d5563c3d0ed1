//! A retrieval written as a folder of Parquet files by the operator that
//! produces its rows, so on a cluster the executors write straight to the
//! object store and only a list of files travels back.
//!
//! Rows are cut into files by row number: file `part-RRRRRR-<run>.parquet`
//! holds rows `[R * rows_per_file, (R + 1) * rows_per_file)` in entity
//! order, so the files in name order (and in the manifest's order) are the
//! retrieval's rows in order. A file's rows may come from any partition of
//! the joins; on a cluster they are first gathered by `row / rows_per_file`
//! and sorted by row number (see `distributed::plan`).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;

/// Rows per row group: the writer buffers one group per open file.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writes its input's rows as Parquet files under a folder and outputs one
/// row per file written: `file` (name within the folder), `first_row`,
/// `rows`, `bytes`.
///
/// Each input partition must be sorted by row number and hold every row of
/// the files it writes: either a row-number column ([`Self::row_column`],
/// left out of the files) or, with none, one partition whose rows are
/// numbered in the order they come.
pub struct FolderWriterExec {
    input: Arc<dyn ExecutionPlan>,
    row_column: Option<usize>,
    rows_per_file: u64,
    /// The folder as a URL ending in `/` (`s3://bucket/prefix/`, `file:///dir/`).
    folder: String,
    /// Names this run's files apart from an earlier run's.
    run: String,
    /// The store to write to; on an executor, made from the job's storage settings.
    store: Option<(Arc<dyn ObjectStore>, Path)>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl fmt::Debug for FolderWriterExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FolderWriterExec")
            .field("folder", &self.folder)
            .field("run", &self.run)
            .field("rows_per_file", &self.rows_per_file)
            .finish_non_exhaustive()
    }
}

/// Where a retrieval's rows go: a folder, a file per `rows_per_file` rows.
#[derive(Debug, Clone)]
pub(crate) struct FolderTarget {
    /// The folder as a URL ending in `/`.
    pub(crate) url: String,
    /// This run's name in file names.
    pub(crate) run: String,
    pub(crate) rows_per_file: u64,
    /// The folder's store and path, for writing in this process.
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: Path,
}

/// The schema of a [`FolderWriterExec`]'s output.
pub fn written_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("first_row", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
    ]))
}

/// `path/name` in a store (`name` alone under the root).
pub(crate) fn child_path(path: &Path, name: &str) -> Path {
    let base = path.as_ref().trim_end_matches('/');
    if base.is_empty() { Path::from(name) } else { Path::from(format!("{base}/{name}")) }
}

/// The name of the file holding the rows of file number `index` of `run`.
pub fn part_file_name(index: u64, run: &str) -> String {
    format!("part-{index:06}-{run}.parquet")
}

impl FolderWriterExec {
    /// Writes `input` under `folder` (a URL ending in `/`).
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        row_column: Option<usize>,
        rows_per_file: u64,
        folder: String,
        run: String,
    ) -> Self {
        let schema = written_files_schema();
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self { input, row_column, rows_per_file: rows_per_file.max(1), folder, run, store: None, schema, cache }
    }

    /// Writes to `store` at `path` instead of resolving the folder where it runs.
    pub fn with_store(mut self, store: Arc<dyn ObjectStore>, path: Path) -> Self {
        self.store = Some((store, path));
        self
    }

    /// The columns of the files: the input's, less the row number.
    pub fn file_schema(&self) -> SchemaRef {
        let schema = self.input.schema();
        let keep: Vec<usize> = (0..schema.fields().len()).filter(|i| Some(*i) != self.row_column).collect();
        Arc::new(schema.project(&keep).expect("columns in range"))
    }

    /// The input's row-number column, if any.
    pub fn row_column(&self) -> Option<usize> {
        self.row_column
    }

    /// Rows per file.
    pub fn rows_per_file(&self) -> u64 {
        self.rows_per_file
    }

    /// The folder's URL.
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// This run's name in file names.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The store and path the files go to: the one given, or on an executor
    /// the folder resolved with the job's storage settings.
    fn target(&self, context: &TaskContext) -> Result<(Arc<dyn ObjectStore>, Path)> {
        if let Some((store, path)) = &self.store {
            return Ok((Arc::clone(store), path.clone()));
        }
        #[cfg(feature = "distributed")]
        {
            let options = super::distributed::storage_options(context.session_config());
            let resolved =
                feature_store_object_store::location::resolve(&self.folder, std::path::Path::new("/"), &options)
                    .map_err(|e| DataFusionError::Execution(format!("output folder {}: {e}", self.folder)))?;
            Ok((resolved.store, resolved.path))
        }
        #[cfg(not(feature = "distributed"))]
        {
            let _ = context;
            Err(DataFusionError::Internal(format!("no object store for the output folder {}", self.folder)))
        }
    }
}

impl DisplayAs for FolderWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FolderWriterExec: folder={}, rows_per_file={}", self.folder, self.rows_per_file)
    }
}

impl ExecutionPlan for FolderWriterExec {
    fn name(&self) -> &str {
        "FolderWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    /// Sorted by row number within each partition: without the requirement
    /// a planner may drop the sort as unneeded (a cluster's did).
    fn required_input_ordering(&self) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        let Some(row) = self.row_column else { return vec![None] };
        vec![Some(row_order(&self.input.schema(), row))]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input]: [Arc<dyn ExecutionPlan>; 1] =
            children.try_into().map_err(|_| DataFusionError::Internal("FolderWriterExec takes one child".into()))?;
        let mut node = Self::new(input, self.row_column, self.rows_per_file, self.folder.clone(), self.run.clone());
        node.store = self.store.clone();
        Ok(Arc::new(node))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if self.row_column.is_none() && self.input.output_partitioning().partition_count() != 1 {
            return Err(DataFusionError::Internal(
                "FolderWriterExec without a row-number column needs one input partition".into(),
            ));
        }
        let (store, base) = self.target(&context)?;
        let mut input = self.input.execute(partition, context)?;
        let input_schema = self.input.schema();
        let keep: Vec<usize> = (0..input_schema.fields().len()).filter(|i| Some(*i) != self.row_column).collect();
        let file_schema = Arc::new(input_schema.project(&keep)?);
        let (row_column, per_file, run, folder) =
            (self.row_column, self.rows_per_file, self.run.clone(), self.folder.clone());
        let out_schema = Arc::clone(&self.schema);
        let written = futures::stream::once(async move {
            let mut files = Files::default();
            let mut open: Option<OpenFile> = None;
            let mut counted: u64 = 0;
            let mut once = RowsOnce::default();
            while let Some(batch) = input.next().await {
                let mut batch = batch?;
                // A row delivered twice (an executor lost mid-job) is written once.
                if let Some(c) = row_column
                    && let Some(keep) = once.keep(&batch, c)?
                {
                    batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)?;
                }
                let n = batch.num_rows();
                if n == 0 {
                    continue;
                }
                let rows: Vec<u64> = match row_column {
                    Some(c) => {
                        let column = batch.column(c).as_primitive_opt::<UInt64Type>().ok_or_else(|| {
                            DataFusionError::Internal("FolderWriterExec: the row number is not UInt64".into())
                        })?;
                        if column.null_count() > 0 {
                            return Err(DataFusionError::Internal("FolderWriterExec: a null row number".into()));
                        }
                        column.values().to_vec()
                    }
                    None => (counted..counted + n as u64).collect(),
                };
                counted += n as u64;
                let data = batch.project(&keep)?;
                // Runs of rows bound for the same file.
                let mut start = 0;
                while start < n {
                    let index = rows[start] / per_file;
                    let mut end = start + 1;
                    while end < n && rows[end] / per_file == index {
                        end += 1;
                    }
                    if open.as_ref().is_some_and(|f| f.index != index) {
                        files.push(open.take().expect("checked").close().await?);
                    }
                    if open.is_none() {
                        let name = part_file_name(index, &run);
                        let path = child_path(&base, &name);
                        open = Some(OpenFile::create(&store, path, name, index, rows[start], &file_schema, &folder)?);
                    }
                    let file = open.as_mut().expect("opened above");
                    file.write(&data.slice(start, end - start), &folder).await?;
                    start = end;
                }
            }
            if let Some(file) = open.take() {
                files.push(file.close().await?);
            }
            files.into_batch(&out_schema)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), written)))
    }
}

/// A file being written.
struct OpenFile {
    writer: AsyncArrowWriter<BufWriter>,
    name: String,
    index: u64,
    first_row: u64,
    rows: u64,
}

impl OpenFile {
    fn create(
        store: &Arc<dyn ObjectStore>,
        path: Path,
        name: String,
        index: u64,
        first_row: u64,
        schema: &SchemaRef,
        folder: &str,
    ) -> Result<Self> {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer =
            AsyncArrowWriter::try_new(BufWriter::new(Arc::clone(store), path), Arc::clone(schema), Some(props))
                .map_err(|e| DataFusionError::Execution(format!("cannot write {folder}{name}: {e}")))?;
        Ok(Self { writer, name, index, first_row, rows: 0 })
    }

    async fn write(&mut self, batch: &RecordBatch, folder: &str) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| DataFusionError::Execution(format!("cannot write {folder}{}: {e}", self.name)))
    }

    async fn close(mut self) -> Result<(String, u64, u64, u64)> {
        self.writer
            .finish()
            .await
            .map_err(|e| DataFusionError::Execution(format!("cannot write {}: {e}", self.name)))?;
        Ok((self.name, self.first_row, self.rows, self.writer.bytes_written() as u64))
    }
}

#[derive(Default)]
struct Files(Vec<(String, u64, u64, u64)>);

impl Files {
    fn push(&mut self, file: (String, u64, u64, u64)) {
        self.0.push(file);
    }

    fn into_batch(self, schema: &SchemaRef) -> Result<RecordBatch> {
        let names: StringArray = self.0.iter().map(|f| Some(f.0.as_str())).collect();
        let column = |pick: fn(&(String, u64, u64, u64)) -> u64| -> Arc<dyn Array> {
            Arc::new(UInt64Array::from_iter_values(self.0.iter().map(pick)))
        };
        Ok(RecordBatch::try_new(
            Arc::clone(schema),
            vec![Arc::new(names), column(|f| f.1), column(|f| f.2), column(|f| f.3)],
        )?)
    }
}

/// The files listed by a [`FolderWriterExec`]'s output batches, in row
/// order, each once (a cluster that ran a writer twice lists its files
/// twice); an error unless they hold every row from 0 without a gap.
pub fn written_files(batches: &[RecordBatch]) -> Result<Vec<(String, u64, u64, u64)>> {
    let mut files = Vec::new();
    for b in batches {
        let names = b.column(0).as_string::<i32>();
        let u = |i: usize| b.column(i).as_primitive::<UInt64Type>();
        for r in 0..b.num_rows() {
            files.push((names.value(r).to_owned(), u(1).value(r), u(2).value(r), u(3).value(r)));
        }
    }
    files.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    files.dedup_by(|later, earlier| later.0 == earlier.0);
    let mut next = 0;
    for (name, first, rows, _) in &files {
        if *first != next {
            return Err(DataFusionError::Execution(format!(
                "the written files do not hold every row: {name} starts at row {first}, row {next} was expected \
                 (rows lost after an executor failed?); run the job again"
            )));
        }
        next = first + rows;
    }
    Ok(files)
}

/// Ascending by the row-number column `row` of `schema`: what the operators
/// that keep each row number once require of their input.
pub(crate) fn row_order(schema: &SchemaRef, row: usize) -> datafusion::physical_expr::OrderingRequirements {
    let column = Arc::new(datafusion::physical_expr::expressions::Column::new(schema.field(row).name(), row));
    let order =
        datafusion::physical_expr::LexOrdering::new([datafusion::physical_expr::PhysicalSortExpr::new_default(column)])
            .expect("one sort expression");
    datafusion::physical_expr::OrderingRequirements::from(order)
}

/// Row numbers in ascending order, each kept once: the state
/// `UniqueRowsExec` and the folder writer carry across batches.
#[derive(Debug, Default)]
pub(crate) struct RowsOnce {
    /// The next row number expected; `None` before the first row (a
    /// partition of the folder writer starts at any row).
    next: Option<u64>,
    /// Rows dropped as second copies.
    pub(crate) dropped: u64,
    /// Every row number from 0, none skipped (one partition holding every
    /// row); otherwise ascending from any row, with gaps.
    every_row: bool,
}

impl RowsOnce {
    /// Expects every row number from 0.
    #[cfg_attr(not(feature = "distributed"), allow(dead_code))] // the cluster's last stage
    pub(crate) fn every_row() -> Self {
        Self { every_row: true, ..Self::default() }
    }

    /// Which rows of `batch` to keep (`None`: all of them), by its column
    /// `row`; an error when row numbers go down or skip.
    pub(crate) fn keep(
        &mut self,
        batch: &RecordBatch,
        row: usize,
    ) -> Result<Option<datafusion::arrow::array::BooleanArray>> {
        use datafusion::arrow::array::{Array, AsArray};
        let numbers = batch
            .column(row)
            .as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>()
            .ok_or_else(|| DataFusionError::Internal("the row number is not UInt64".into()))?;
        if numbers.null_count() > 0 {
            return Err(DataFusionError::Internal("a null row number".into()));
        }
        let mut keep: Option<Vec<bool>> = None;
        for (i, &n) in numbers.values().iter().enumerate() {
            let expected = self.next.unwrap_or(if self.every_row { 0 } else { n });
            if n == expected || (!self.every_row && n > expected) {
                self.next = Some(n + 1);
                if let Some(k) = keep.as_mut() {
                    k.push(true);
                }
            } else if n + 1 == expected {
                // The row just kept, delivered again.
                self.dropped += 1;
                keep.get_or_insert_with(|| vec![true; i]).push(false);
            } else {
                return Err(DataFusionError::Execution(format!(
                    "the cluster returned row {n} where row {expected} was expected: rows were lost or reordered \
                     after an executor failed; run the job again"
                )));
            }
        }
        Ok(keep.map(datafusion::arrow::array::BooleanArray::from))
    }
}
