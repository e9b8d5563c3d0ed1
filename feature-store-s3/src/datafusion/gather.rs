//! Gathering feature values for probe hits. Entity rows hit feature rows in
//! random order, so a column-at-a-time `take` pays one cache miss per row
//! per feature. When every feature is a fixed-width primitive, the build side
//! also keeps its rows row-major: one miss per row fetches all features, and
//! the gathered rows are then split back into columns sequentially.

use datafusion::arrow::array::{Array, ArrayRef, ArrayData, UInt32Array, make_array};
use datafusion::arrow::buffer::{Buffer, MutableBuffer, NullBuffer};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;

/// Feature values of the build side, in sorted row order: row-major when
/// every feature is fixed-width (the columns are then dropped), else columns.
pub(crate) enum Features {
    Columns(Vec<ArrayRef>),
    Rows(RowMajor, Vec<DataType>),
}

pub(crate) struct RowMajor {
    /// Bytes per row: a validity byte per feature, then each value.
    width: usize,
    /// Offset of each feature's value within a row.
    offsets: Vec<usize>,
    /// Byte width of each feature's value.
    sizes: Vec<usize>,
    data: Vec<u8>,
}

fn fixed_width(dt: &DataType) -> Option<usize> {
    match dt {
        DataType::Int32 | DataType::Float32 | DataType::Date32 => Some(4),
        DataType::Int64 | DataType::Float64 | DataType::Timestamp(_, _) | DataType::Date64 => Some(8),
        DataType::Int16 => Some(2),
        DataType::Int8 => Some(1),
        _ => None,
    }
}

impl Features {
    pub(crate) fn new(columns: Vec<ArrayRef>) -> Self {
        let sizes: Option<Vec<usize>> = columns.iter().map(|c| fixed_width(c.data_type())).collect();
        match sizes {
            Some(sizes) if columns.len() > 1 => {
                let types = columns.iter().map(|c| c.data_type().clone()).collect();
                Self::Rows(RowMajor::new(&columns, sizes), types)
            }
            _ => Self::Columns(columns),
        }
    }

    /// Values at `indices` (null index: null values), one array per feature.
    pub(crate) fn gather(&self, indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
        match self {
            Self::Rows(rows, types) => Ok(rows.gather(types, indices)),
            Self::Columns(columns) => Ok(columns.iter().map(|c| take(c.as_ref(), indices, None)).collect::<Result<_, _>>()?),
        }
    }
}

impl RowMajor {
    fn new(columns: &[ArrayRef], sizes: Vec<usize>) -> Self {
        let nf = columns.len();
        let mut offsets = Vec::with_capacity(nf);
        let mut at = nf;
        for s in &sizes {
            offsets.push(at);
            at += s;
        }
        let width = at;
        let n = columns.first().map_or(0, |c| c.len());
        let mut data = vec![0u8; n * width];
        for (j, c) in columns.iter().enumerate() {
            let d = c.to_data();
            let size = sizes[j];
            let values = &d.buffers()[0].as_slice()[d.offset() * size..(d.offset() + n) * size];
            for i in 0..n {
                let row = &mut data[i * width..(i + 1) * width];
                row[j] = u8::from(c.is_valid(i));
                row[offsets[j]..offsets[j] + size].copy_from_slice(&values[i * size..(i + 1) * size]);
            }
        }
        Self { width, offsets, sizes, data }
    }

    fn gather(&self, types: &[DataType], indices: &UInt32Array) -> Vec<ArrayRef> {
        let n = indices.len();
        let w = self.width;
        // One random read per hit, into a dense scratch buffer.
        let mut scratch = vec![0u8; n * w];
        for (i, idx) in indices.iter().enumerate() {
            if let Some(r) = idx {
                let r = r as usize;
                scratch[i * w..(i + 1) * w].copy_from_slice(&self.data[r * w..(r + 1) * w]);
            }
        }
        types
            .iter()
            .enumerate()
            .map(|(j, dt)| {
                let size = self.sizes[j];
                let off = self.offsets[j];
                let mut values = MutableBuffer::new(n * size);
                let mut any_null = false;
                let valid: Vec<bool> = (0..n)
                    .map(|i| {
                        let v = scratch[i * w + j] == 1;
                        any_null |= !v;
                        v
                    })
                    .collect();
                for i in 0..n {
                    values.extend_from_slice(&scratch[i * w + off..i * w + off + size]);
                }
                let nulls = any_null.then(|| NullBuffer::from(valid));
                let data = ArrayData::builder(dt.clone())
                    .len(n)
                    .add_buffer(Buffer::from(values))
                    .nulls(nulls)
                    .build()
                    .expect("fixed-width layout is valid");
                make_array(data)
            })
            .collect()
    }
}

