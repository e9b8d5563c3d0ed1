//! Spill files for the grace join ([`super::grace`]): when a view's feature rows do
//! not fit in the memory limit, both sides are hash-partitioned by join key
//! into Arrow IPC files (a grace hash join), each partition is joined in
//! memory, and the per-partition outputs, each already in entity-row order,
//! are put back into input order by the route file: each entity row's
//! partition, written as the rows were partitioned, so reassembly takes the
//! next row of the named partition (O(1) a row, no comparisons).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use std::sync::Arc;

use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::{concat_batches, interleave, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, UInt64Type};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool};

fn io(e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("spilling the as-of join to disk failed: {e}"))
}

/// Bytes each spill file's batches aim at, with `partitions` files written
/// (and later read back) at once. Every spilling side keeps one pending batch
/// per partition and the reassembly one current batch per partition, so the
/// batch size, not the data, bounds that memory: together about 1/64 of the
/// pool (256 KiB a batch at 32 partitions under a 512 MiB pool), each batch
/// between 32 KiB and 4 MiB.
pub(crate) fn spill_batch_bytes(pool: &dyn MemoryPool, partitions: usize) -> usize {
    match pool.memory_limit() {
        MemoryLimit::Finite(pool) => (pool / 64 / partitions.max(1)).clamp(32 << 10, 4 << 20),
        _ => 4 << 20,
    }
}

/// An Arrow IPC file in the temp folder, deleted when dropped. Rows are
/// gathered into batches of about `batch_bytes`, so read-back batches carry
/// little overhead and never hold more than that.
pub(crate) struct SpillWriter {
    writer: FileWriter<BufWriter<File>>,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_bytes: usize,
    batch_bytes: usize,
    rows: usize,
}

/// A finished spill file.
pub(crate) struct SpillFile {
    file: File,
    pub(crate) rows: usize,
    /// Size on disk.
    pub(crate) bytes: usize,
    /// Bytes read ahead of the reader ([`ReadAhead`]).
    window: u64,
}

impl SpillWriter {
    pub(crate) fn new(schema: &SchemaRef, batch_bytes: usize) -> Result<Self> {
        let file = tempfile::tempfile().map_err(io)?;
        Ok(Self {
            writer: FileWriter::try_new(BufWriter::new(file), schema)?,
            schema: Arc::clone(schema),
            pending: Vec::new(),
            pending_bytes: 0,
            batch_bytes: batch_bytes.max(1),
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            self.rows += batch.num_rows();
            self.pending_bytes += get_record_batch_memory_size(batch);
            self.pending.push(batch.clone());
            if self.pending_bytes >= self.batch_bytes {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&self.schema, &self.pending)?;
        let bytes = self.pending_bytes;
        self.pending.clear();
        self.pending_bytes = 0;
        // A batch written whole would be read back whole: slice it to size.
        let rows = batch.num_rows();
        let step = (rows * self.batch_bytes / bytes.max(1)).clamp(1, rows);
        let mut start = 0;
        while start < rows {
            let len = step.min(rows - start);
            self.writer.write(&batch.slice(start, len))?;
            start += len;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<SpillFile> {
        self.flush()?;
        self.writer.finish()?;
        let mut file = self.writer.into_inner()?.into_inner().map_err(|e| io(e.into_error()))?;
        let bytes = file.stream_position().map_err(io)? as usize;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        // Two batches ahead: with every partition's file read at once, the
        // read-ahead stays about 1/32 of the pool.
        let window = (2 * self.batch_bytes as u64).max(MIN_READ_AHEAD);
        Ok(SpillFile { file, rows: self.rows, bytes, window })
    }
}

impl SpillFile {
    /// Reads the file from the start; it can be read again.
    pub(crate) fn read(&self) -> Result<FileReader<BufReader<ReadAhead>>> {
        let mut file = self.file.try_clone().map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok(FileReader::try_new(BufReader::new(ReadAhead::new(file, self.window)), None)?)
    }
}

/// Least read-ahead of a spill file.
const MIN_READ_AHEAD: u64 = 128 << 10;

/// A spill file read with a read-ahead bounded by the memory limit. The
/// kernel's own read-ahead grows to the device's maximum per file (8 MiB on
/// many virtual disks): with a few hundred partition files read at once
/// that is gigabytes of page cache, charged to the process's cgroup and
/// evicted again before it is read. So the kernel's is switched off for
/// these files and each reader asks for the next `window` bytes itself
/// (`POSIX_FADV_WILLNEED`, which reads them in the background) once it is
/// halfway through the previous window. Elsewhere than Linux the kernel's
/// default applies.
pub(crate) struct ReadAhead {
    file: File,
    pos: u64,
    /// Bytes up to here were asked for.
    hinted: u64,
    window: u64,
    enabled: bool,
}

impl ReadAhead {
    fn new(file: File, window: u64) -> Self {
        let mut r = Self { file, pos: 0, hinted: 0, window, enabled: cfg!(target_os = "linux") };
        r.advise(0, 0, Advice::Random);
        r
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn advise(&mut self, offset: u64, len: u64, advice: Advice) {
        use std::os::fd::AsRawFd;
        if !self.enabled {
            return;
        }
        let advice = match advice {
            Advice::Random => libc::POSIX_FADV_RANDOM,
            Advice::WillNeed => libc::POSIX_FADV_WILLNEED,
        };
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            self.enabled = false;
            return;
        };
        // SAFETY: the descriptor belongs to `self.file`, open for the call;
        // the call touches no memory of ours.
        if unsafe { libc::posix_fadvise(self.file.as_raw_fd(), offset, len, advice) } != 0 {
            // Advice only: without it the kernel's read-ahead applies.
            self.enabled = false;
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn advise(&mut self, _offset: u64, _len: u64, _advice: Advice) {
        self.enabled = false;
    }
}

#[derive(Clone, Copy)]
enum Advice {
    Random,
    WillNeed,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.enabled && self.pos + self.window / 2 >= self.hinted {
            let start = self.hinted.max(self.pos);
            self.advise(start, self.window, Advice::WillNeed);
            self.hinted = start + self.window;
        }
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ReadAhead {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = self.file.seek(to)?;
        // Arrow's reader seeks to each batch it reads: forward within what
        // was asked for keeps the hint; anywhere else starts anew.
        if pos < self.pos || pos > self.hinted {
            self.hinted = pos;
        }
        self.pos = pos;
        Ok(pos)
    }
}

/// Each entity row's level-0 partition, one byte a row, in row order.
pub(crate) struct RouteWriter {
    out: BufWriter<File>,
    rows: usize,
}

impl RouteWriter {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self { out: BufWriter::new(tempfile::tempfile().map_err(io)?), rows: 0 })
    }

    /// Appends the partitions [`scatter`] sent these rows to.
    pub(crate) fn write(&mut self, parts: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = parts
            .iter()
            .map(|p| match *p {
                NO_PARTITION => 0,
                p => u8::try_from(p).expect("at most 256 level-0 partitions"),
            })
            .collect();
        self.rows += bytes.len();
        self.out.write_all(&bytes).map_err(io)
    }

    pub(crate) fn finish(self) -> Result<(BufReader<File>, usize)> {
        let rows = self.rows;
        let mut file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok((BufReader::with_capacity(64 << 10, file), rows))
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

/// Where `batch` (the current batch of a partition whose slot is `slot`) sits
/// in `sources`, the batches an output batch interleaves from; added once.
fn source_index(sources: &mut Vec<RecordBatch>, slot: &mut Option<usize>, batch: &RecordBatch) -> usize {
    *slot.get_or_insert_with(|| {
        sources.push(batch.clone());
        sources.len() - 1
    })
}

/// Merges outputs sorted by the row-number column `row_col` into one stream
/// in row-number order, dropping that column: the sub-partitions of a
/// partition that was split again.
pub(crate) struct Merger {
    readers: Vec<FileReader<BufReader<ReadAhead>>>,
    /// Per partition: its current batch, that batch's row numbers, the next row.
    current: Vec<Option<(RecordBatch, ScalarBuffer<u64>, usize)>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    row_col: usize,
    out_schema: SchemaRef,
    batch_size: usize,
}

impl Merger {
    /// Output batches hold at most `batch_size` rows and about `batch_bytes`:
    /// every level-0 partition's current batch is held at once.
    pub(crate) fn new(
        files: Vec<SpillFile>,
        row_col: usize,
        out_schema: SchemaRef,
        (batch_size, batch_bytes): (usize, usize),
    ) -> Result<Self> {
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
        let row_bytes = m
            .current
            .iter()
            .flatten()
            .map(|(b, _, _)| get_record_batch_memory_size(b).div_ceil(b.num_rows().max(1)))
            .max()
            .unwrap_or(1);
        m.batch_size = (batch_bytes / row_bytes.max(1)).clamp(1, batch_size);
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
            let s = source_index(&mut sources, &mut source_of[p], batch);
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

/// One level-0 partition's joined rows, in entity-row order.
pub(crate) enum Slot {
    /// No entity row went there.
    Empty,
    /// One file (the row-number column is dropped as batches are read).
    File { reader: FileReader<BufReader<ReadAhead>>, keep: Vec<usize> },
    /// A partition split again: its sub-partitions merged by row number.
    Merged(Merger),
}

impl Slot {
    pub(crate) fn new(
        mut files: Vec<SpillFile>,
        row_col: usize,
        out_schema: &SchemaRef,
        batch: (usize, usize),
    ) -> Result<Self> {
        Ok(match files.len() {
            0 => Self::Empty,
            1 => {
                let file = files.pop().expect("one file");
                let keep = (0..=out_schema.fields().len()).filter(|c| *c != row_col).collect();
                Self::File { reader: file.read()?, keep }
            }
            _ => Self::Merged(Merger::new(files, row_col, Arc::clone(out_schema), batch)?),
        })
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self {
            Self::Empty => Ok(None),
            Self::File { reader, keep } => {
                for b in reader.by_ref() {
                    let b = b?;
                    if b.num_rows() > 0 {
                        return Ok(Some(b.project(keep)?));
                    }
                }
                Ok(None)
            }
            Self::Merged(m) => m.next_batch(),
        }
    }
}

/// Reads a spill file's rows in order, `n` at a time.
struct RowReader {
    reader: FileReader<BufReader<ReadAhead>>,
    /// The current batch and its next row.
    current: Option<(RecordBatch, usize)>,
}

impl RowReader {
    /// The next `n` rows (a slice when one batch holds them all).
    fn take(&mut self, n: usize, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut parts = Vec::new();
        let mut want = n;
        while want > 0 {
            let (batch, i) = match self.current.take() {
                Some(c) => c,
                None => match self.reader.next() {
                    Some(b) => (b?, 0),
                    None => {
                        return Err(DataFusionError::Internal(
                            "as-of join: the entity rows file ran out before the route did".into(),
                        ));
                    }
                },
            };
            let len = want.min(batch.num_rows() - i);
            parts.push(batch.slice(i, len));
            want -= len;
            if i + len < batch.num_rows() {
                self.current = Some((batch, i + len));
            }
        }
        Ok(match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => concat_batches(schema, &parts)?,
        })
    }
}

/// Puts the partitions' outputs back into entity-row order: the entity rows
/// read whole and in order, each beside the features of the next row of the
/// partition the route names.
pub(crate) struct Reassembly {
    route: BufReader<File>,
    remaining: usize,
    /// The entity rows, unless the join outputs features only.
    whole: Option<(RowReader, SchemaRef)>,
    /// Each level-0 partition's features (row numbers dropped), in row order.
    slots: Vec<Slot>,
    /// Per slot: its current batch and the next row of it.
    current: Vec<Option<(RecordBatch, usize)>>,
    out_schema: SchemaRef,
    batch_size: usize,
    chunk: Vec<u8>,
}

impl Reassembly {
    pub(crate) fn new(
        route: (BufReader<File>, usize),
        whole: Option<FileReader<BufReader<ReadAhead>>>,
        slots: Vec<Slot>,
        out_schema: SchemaRef,
        batch_size: usize,
    ) -> Self {
        let current = (0..slots.len()).map(|_| None).collect();
        Self {
            route: route.0,
            remaining: route.1,
            whole: whole.map(|reader| {
                let schema = reader.schema();
                (RowReader { reader, current: None }, schema)
            }),
            slots,
            current,
            out_schema,
            batch_size,
            chunk: Vec::new(),
        }
    }

    /// The next output batch, or `None` after the last entity row.
    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let n = self.batch_size.min(self.remaining);
        if n == 0 {
            return Ok(None);
        }
        self.chunk.resize(n, 0);
        self.route.read_exact(&mut self.chunk).map_err(io)?;
        self.remaining -= n;
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut source_of: Vec<Option<usize>> = vec![None; self.slots.len()];
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(n);
        for &p in &self.chunk {
            let p = usize::from(p);
            if self.current[p].is_none() {
                let Some(b) = self.slots[p].next_batch()? else {
                    return Err(DataFusionError::Internal(format!(
                        "as-of join: spill partition {p} ran out of rows before the entity rows did"
                    )));
                };
                self.current[p] = Some((b, 0));
                source_of[p] = None;
            }
            let (batch, i) = self.current[p].as_mut().expect("a current batch");
            let s = source_index(&mut sources, &mut source_of[p], batch);
            picks.push((s, *i));
            *i += 1;
            if *i == batch.num_rows() {
                self.current[p] = None;
            }
        }
        let mut columns = match &mut self.whole {
            Some((reader, schema)) => reader.take(n, schema)?.columns().to_vec(),
            None => Vec::new(),
        };
        let features = self.out_schema.fields().len() - columns.len();
        for c in 0..features {
            let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
            columns.push(interleave(&arrays, &picks)?);
        }
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(Arc::clone(&self.out_schema), columns, &options)?))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::ReadAhead;

    #[test]
    fn read_ahead_reads_what_was_written_across_seeks() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut r = ReadAhead::new(file, 64 << 10);
        let mut back = vec![0; 300_000];
        r.read_exact(&mut back).unwrap();
        assert!(back[..] == data[..300_000]);
        // Forward inside the hinted window, then back to the start, then past it.
        for at in [310_000u64, 0, 900_000] {
            assert_eq!(r.seek(SeekFrom::Start(at)).unwrap(), at);
            let mut part = vec![0; 50_000];
            r.read_exact(&mut part).unwrap();
            assert!(part[..] == data[at as usize..at as usize + 50_000]);
            assert!(!r.enabled || r.hinted > r.pos, "a window ahead of the reader was asked for");
        }
        // The advice went through rather than switching itself off.
        assert_eq!(r.enabled, cfg!(target_os = "linux"));
    }
}
