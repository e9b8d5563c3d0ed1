//! Spill files for the grace join ([`super::grace`]): when a view's feature rows do
//! not fit in the memory limit, both sides are hash-partitioned by join key
//! into Arrow IPC files (a grace hash join), each partition is joined in
//! memory, and the per-partition outputs, each already in entity-row order,
//! are merged back into input order by row number.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use std::sync::Arc;

use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::{concat_batches, interleave, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, UInt64Type};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DataFusionError, Result};

fn io(e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("spilling the as-of join to disk failed: {e}"))
}

/// An Arrow IPC file in the temp folder, deleted when dropped. Small
/// batches are coalesced so read-back batches carry little overhead.
pub(crate) struct SpillWriter {
    writer: FileWriter<BufWriter<File>>,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    rows: usize,
}

/// Rows gathered before a spill file gets a batch.
const COALESCE_ROWS: usize = 4096;

/// A finished spill file.
pub(crate) struct SpillFile {
    file: File,
    pub(crate) rows: usize,
    /// Size on disk.
    pub(crate) bytes: usize,
}

impl SpillWriter {
    pub(crate) fn new(schema: &SchemaRef) -> Result<Self> {
        let file = tempfile::tempfile().map_err(io)?;
        Ok(Self {
            writer: FileWriter::try_new(BufWriter::new(file), schema)?,
            schema: Arc::clone(schema),
            pending: Vec::new(),
            pending_rows: 0,
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            self.rows += batch.num_rows();
            self.pending_rows += batch.num_rows();
            self.pending.push(batch.clone());
            if self.pending_rows >= COALESCE_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let batch = concat_batches(&self.schema, &self.pending)?;
            self.pending.clear();
            self.pending_rows = 0;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<SpillFile> {
        self.flush()?;
        self.writer.finish()?;
        let mut file = self.writer.into_inner()?.into_inner().map_err(|e| io(e.into_error()))?;
        let bytes = file.stream_position().map_err(io)? as usize;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok(SpillFile { file, rows: self.rows, bytes })
    }
}

impl SpillFile {
    /// Reads the file from the start; it can be read again.
    pub(crate) fn read(&self) -> Result<FileReader<BufReader<File>>> {
        let mut file = self.file.try_clone().map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok(FileReader::try_new(BufReader::new(file), None)?)
    }
}

/// Hash partition of each row's key (already cast to the canonical key
/// types). Rows with a null key match nothing: they get [`NO_PARTITION`],
/// which [`scatter`] drops for feature rows and sends to partition 0 for
/// entity rows (which must still appear in the output).
///
/// `level` salts the hash, so a partition split again spreads its keys.
pub(crate) fn partition_of(keys: &[ArrayRef], types: &[DataType], partitions: usize, level: u32) -> Result<Vec<u32>> {
    let n = keys.first().map_or(0, |k| k.len());
    let p = partitions as u64;
    let salt = u64::from(level).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mix = |h: u64| ((h ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) % p;
    if types.len() == 1 && types[0] == DataType::Int64 {
        let a = keys[0].as_primitive::<Int64Type>();
        return Ok((0..n).map(|i| if a.is_null(i) { NO_PARTITION } else { mix(a.value(i) as u64) as u32 }).collect());
    }
    let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
    let rows = converter.convert_columns(keys)?;
    Ok((0..n)
        .map(|i| {
            if keys.iter().any(|k| k.is_null(i)) {
                return NO_PARTITION;
            }
            let h = rows
                .row(i)
                .as_ref()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
            mix(h) as u32
        })
        .collect())
}

/// Partition of a row whose key is null.
pub(crate) const NO_PARTITION: u32 = u32::MAX;

/// Splits `batch` by partition number and appends each part to its writer;
/// null-key rows are dropped unless `keep_null_keys`.
pub(crate) fn scatter(
    batch: &RecordBatch,
    parts: &[u32],
    writers: &mut [SpillWriter],
    keep_null_keys: bool,
) -> Result<()> {
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); writers.len()];
    for (row, p) in parts.iter().enumerate() {
        match *p {
            NO_PARTITION if keep_null_keys => indices[0].push(row as u32),
            NO_PARTITION => {}
            p => indices[p as usize].push(row as u32),
        }
    }
    for (p, idx) in indices.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let idx = UInt32Array::from(idx);
        let columns = batch.columns().iter().map(|c| take(c.as_ref(), &idx, None)).collect::<Result<Vec<_>, _>>()?;
        writers[p].write(&RecordBatch::try_new(batch.schema(), columns)?)?;
    }
    Ok(())
}

/// Merges partition outputs, each sorted by the row-number column `row_col`,
/// back into one stream in row-number order, dropping that column.
pub(crate) struct Merger {
    readers: Vec<FileReader<BufReader<File>>>,
    /// Per partition: its current batch, that batch's row numbers, the next row.
    current: Vec<Option<(RecordBatch, ScalarBuffer<u64>, usize)>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    row_col: usize,
    out_schema: SchemaRef,
    batch_size: usize,
}

impl Merger {
    pub(crate) fn new(files: Vec<SpillFile>, row_col: usize, out_schema: SchemaRef, batch_size: usize) -> Result<Self> {
        let mut readers = Vec::new();
        for f in &files {
            readers.push(f.read()?);
        }
        let mut m = Self {
            current: (0..readers.len()).map(|_| None).collect(),
            readers,
            heap: BinaryHeap::new(),
            row_col,
            out_schema,
            batch_size,
        };
        for p in 0..m.readers.len() {
            m.advance_batch(p)?;
        }
        Ok(m)
    }

    fn advance_batch(&mut self, p: usize) -> Result<()> {
        self.current[p] = None;
        for next in self.readers[p].by_ref() {
            let b = next?;
            if b.num_rows() > 0 {
                let rows = b.column(self.row_col).as_primitive::<UInt64Type>().values().clone();
                self.heap.push(Reverse((rows[0], p)));
                self.current[p] = Some((b, rows, 0));
                break;
            }
        }
        Ok(())
    }

    /// The next output batch, or `None` when every partition is drained.
    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        // Batches picked from, and (batch, row) picks into them.
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut source_of: Vec<Option<usize>> = vec![None; self.readers.len()];
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(self.batch_size);
        while picks.len() < self.batch_size {
            let Some(Reverse((_, p))) = self.heap.pop() else { break };
            let (batch, rows, i) = self.current[p].as_mut().expect("heap entries have a batch");
            let s = match source_of[p] {
                Some(s) => s,
                None => {
                    sources.push(batch.clone());
                    source_of[p] = Some(sources.len() - 1);
                    sources.len() - 1
                }
            };
            picks.push((s, *i));
            *i += 1;
            if *i < rows.len() {
                self.heap.push(Reverse((rows[*i], p)));
            } else {
                // The partition moves to a new batch, which needs its own source slot.
                self.advance_batch(p)?;
                source_of[p] = None;
            }
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let columns = (0..self.out_schema.fields().len() + 1)
            .filter(|c| *c != self.row_col)
            .map(|c| {
                let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, &picks)
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        Ok(Some(RecordBatch::try_new(self.out_schema.clone(), columns)?))
    }
}
