//! Parquet output with columns encoded in parallel: the single-threaded
//! `ArrowWriter` would otherwise dominate a training-set export.

use std::fs::File;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

/// Rows per row group; each group is buffered, then encoded column-parallel.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Under a memory limit the buffered rows and their encoded columns (about
/// as large again) must fit beside the join: a row group is cut at 1/16 of
/// the limit (at least 4 MiB), so the writer holds about 1/8 of it.
pub(crate) fn row_group_bytes(memory_limit: Option<usize>) -> Option<usize> {
    memory_limit.map(|m| (m / 16).max(4 << 20))
}

pub(crate) struct ParallelParquetWriter {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    max_bytes: usize,
    row_groups: usize,
    threads: usize,
}

impl ParallelParquetWriter {
    /// `max_bytes` cuts row groups by buffered size too ([`row_group_bytes`]).
    pub(crate) fn try_new(
        file: File,
        schema: SchemaRef,
        props: WriterProperties,
        max_bytes: Option<usize>,
    ) -> anyhow::Result<Self> {
        let (file, factory) = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))?.into_serialized_writer()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            file,
            factory,
            schema,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            max_bytes: max_bytes.unwrap_or(usize::MAX),
            row_groups: 0,
            threads,
        })
    }

    pub(crate) fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        self.pending_rows += batch.num_rows();
        self.pending_bytes += batch.get_array_memory_size();
        self.pending.push(batch);
        if self.pending_rows >= ROW_GROUP_ROWS || self.pending_bytes >= self.max_bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let writers = self.factory.create_column_writers(self.row_groups)?;
        // Flat schemas have one leaf per field; nested fields keep their leaves together.
        let mut per_field: Vec<Vec<parquet::arrow::arrow_writer::ArrowColumnWriter>> = Vec::new();
        let mut writers = writers.into_iter();
        for field in self.schema.fields() {
            let leaves = parquet::arrow::ArrowSchemaConverter::new()
                .convert(&arrow::datatypes::Schema::new(vec![Arc::clone(field)]))?
                .num_columns();
            per_field.push(writers.by_ref().take(leaves).collect());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.pending_bytes = 0;
        let schema = &self.schema;
        let threads = self.threads.max(1);
        // Fields dealt round-robin to threads; chunks come back in field order.
        let mut jobs: Vec<Vec<(usize, Vec<_>)>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, w) in per_field.into_iter().enumerate() {
            jobs[i % threads].push((i, w));
        }
        let mut chunks: Vec<(usize, Vec<ArrowColumnChunk>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|job| {
                    let batches = &batches;
                    scope.spawn(move || -> anyhow::Result<Vec<(usize, Vec<ArrowColumnChunk>)>> {
                        let mut out = Vec::new();
                        for (field_index, mut writers) in job {
                            let field = schema.field(field_index);
                            for b in batches {
                                let leaves = compute_leaves(field, b.column(field_index))?;
                                for (w, leaf) in writers.iter_mut().zip(leaves) {
                                    w.write(&leaf)?;
                                }
                            }
                            let closed = writers.into_iter().map(|w| w.close()).collect::<Result<Vec<_>, _>>()?;
                            out.push((field_index, closed));
                        }
                        Ok(out)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.join().map_err(|_| anyhow::anyhow!("a Parquet encoding thread panicked"))??);
            }
            Ok::<_, anyhow::Error>(all)
        })?;
        chunks.sort_by_key(|(i, _)| *i);
        let mut row_group = self.file.next_row_group()?;
        for (_, field_chunks) in chunks {
            for chunk in field_chunks {
                chunk.append_to_row_group(&mut row_group)?;
            }
        }
        row_group.close()?;
        self.row_groups += 1;
        Ok(())
    }

    pub(crate) fn close(mut self) -> anyhow::Result<()> {
        self.flush()?;
        self.file.close()?;
        Ok(())
    }
}
