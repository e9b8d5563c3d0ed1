//! Finished aggregates as Arrow columns of the feature's declared type, so
//! every store (the reference, the DataFusion operator, online tiles) hands
//! out the same arrays.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, new_null_array};

use super::state::Output;
use super::value::Value;
use crate::value_type::UTC;
use crate::{Error, Result, ValueType};

/// One builder per scalar type; appends values already known to be of it.
enum Scalar {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Str(StringBuilder),
    Bytes(BinaryBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl Scalar {
    fn new(t: &ValueType, capacity: usize) -> Result<Self> {
        Ok(match t {
            ValueType::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            ValueType::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            ValueType::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            ValueType::Float32 => Self::Float32(Float32Builder::with_capacity(capacity)),
            ValueType::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            ValueType::String => Self::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
            ValueType::Bytes => Self::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 8)),
            ValueType::Timestamp => Self::Time(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone(UTC)),
            ValueType::List(_) => {
                return Err(Error::InvalidArgument("an aggregate of lists of lists cannot be built".into()));
            }
        })
    }

    fn null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Str(b) => b.append_null(),
            Self::Bytes(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
        }
    }

    /// Appends `v`; a value of another type is a bug in the caller, reported as an error.
    fn value(&mut self, v: &Value) -> Result<()> {
        match (self, v) {
            (Self::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (Self::Int32(b), Value::Int(x)) => b.append_value(i32::try_from(*x).map_err(|_| mismatch(v))?),
            (Self::Int64(b), Value::Int(x)) => b.append_value(*x),
            // Float32 inputs widened exactly, so narrowing back is exact.
            (Self::Float32(b), Value::Float(x)) => b.append_value(*x as f32),
            (Self::Float64(b), Value::Float(x)) => b.append_value(*x),
            (Self::Float64(b), Value::Int(x)) => b.append_value(*x as f64),
            (Self::Str(b), Value::Str(x)) => b.append_value(x),
            (Self::Bytes(b), Value::Bytes(x)) => b.append_value(x),
            (Self::Time(b), Value::Time(x)) => b.append_value(*x),
            _ => return Err(mismatch(v)),
        }
        Ok(())
    }

    fn output(&mut self, o: &Output) -> Result<()> {
        match o {
            Output::Null => self.null(),
            Output::Int(i) => self.value(&Value::Int(*i))?,
            Output::Float(f) => self.value(&Value::Float(*f))?,
            Output::Value(v) => self.value(v)?,
            Output::List(_) => return Err(Error::InvalidArgument("a list aggregate for a scalar feature".into())),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Int32(mut b) => Arc::new(b.finish()),
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::Float32(mut b) => Arc::new(b.finish()),
            Self::Float64(mut b) => Arc::new(b.finish()),
            Self::Str(mut b) => Arc::new(b.finish()),
            Self::Bytes(mut b) => Arc::new(b.finish()),
            Self::Time(mut b) => Arc::new(b.finish()),
        }
    }

    fn boxed(self) -> Box<dyn ArrayBuilder> {
        match self {
            Self::Bool(b) => Box::new(b),
            Self::Int32(b) => Box::new(b),
            Self::Int64(b) => Box::new(b),
            Self::Float32(b) => Box::new(b),
            Self::Float64(b) => Box::new(b),
            Self::Str(b) => Box::new(b),
            Self::Bytes(b) => Box::new(b),
            Self::Time(b) => Box::new(b),
        }
    }
}

fn mismatch(v: &Value) -> Error {
    Error::InvalidArgument(format!("aggregate value {v:?} does not fit the feature's type"))
}

/// The column of `outputs`, typed as the feature's `dtype` (`to_arrow()`).
pub fn outputs_to_array(outputs: &[Output], dtype: &ValueType) -> Result<ArrayRef> {
    if outputs.iter().all(|o| matches!(o, Output::Null)) {
        return Ok(new_null_array(&dtype.to_arrow(), outputs.len()));
    }
    let ValueType::List(inner) = dtype else {
        let mut b = Scalar::new(dtype, outputs.len())?;
        for o in outputs {
            b.output(o)?;
        }
        return Ok(b.finish());
    };
    let values = Scalar::new(inner, outputs.len())?;
    let field = match dtype.to_arrow() {
        arrow_schema::DataType::List(f) => f,
        other => return Err(Error::InvalidArgument(format!("list feature with arrow type {other}"))),
    };
    let mut list = ListBuilder::new(values.boxed()).with_field(field);
    for o in outputs {
        match o {
            Output::Null => list.append_null(),
            Output::List(items) => {
                let b = list.values();
                for v in items {
                    append_dyn(b, inner, v)?;
                }
                list.append(true);
            }
            _ => return Err(Error::InvalidArgument("a scalar aggregate for a list feature".into())),
        }
    }
    Ok(Arc::new(list.finish()))
}

/// Appends one value to a boxed scalar builder of type `t`.
fn append_dyn(b: &mut Box<dyn ArrayBuilder>, t: &ValueType, v: &Value) -> Result<()> {
    fn get<B: 'static>(b: &mut Box<dyn ArrayBuilder>) -> Result<&mut B> {
        b.as_any_mut().downcast_mut::<B>().ok_or_else(|| Error::InvalidArgument("list builder type".into()))
    }
    match (t, v) {
        (ValueType::Bool, Value::Bool(x)) => get::<BooleanBuilder>(b)?.append_value(*x),
        (ValueType::Int32, Value::Int(x)) => {
            get::<Int32Builder>(b)?.append_value(i32::try_from(*x).map_err(|_| mismatch(v))?)
        }
        (ValueType::Int64, Value::Int(x)) => get::<Int64Builder>(b)?.append_value(*x),
        (ValueType::Float32, Value::Float(x)) => get::<Float32Builder>(b)?.append_value(*x as f32),
        (ValueType::Float64, Value::Float(x)) => get::<Float64Builder>(b)?.append_value(*x),
        (ValueType::String, Value::Str(x)) => get::<StringBuilder>(b)?.append_value(x),
        (ValueType::Bytes, Value::Bytes(x)) => get::<BinaryBuilder>(b)?.append_value(x),
        (ValueType::Timestamp, Value::Time(x)) => get::<TimestampMicrosecondBuilder>(b)?.append_value(*x),
        _ => return Err(mismatch(v)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    use arrow_array::{Array, Float64Array, Int64Array};

    use super::*;

    #[test]
    fn outputs_become_columns_of_the_feature_type() {
        let a = outputs_to_array(&[Output::Int(3), Output::Null], &ValueType::Int64).unwrap();
        assert_eq!(a.as_any().downcast_ref::<Int64Array>().unwrap(), &Int64Array::from(vec![Some(3), None]));
        let a = outputs_to_array(&[Output::Float(1.5), Output::Null], &ValueType::Float64).unwrap();
        assert_eq!(a.as_any().downcast_ref::<Float64Array>().unwrap(), &Float64Array::from(vec![Some(1.5), None]));
        let t = ValueType::List(Box::new(ValueType::Int32));
        let a = outputs_to_array(&[Output::List(vec![Value::Int(2), Value::Int(1)]), Output::Null], &t).unwrap();
        assert_eq!(a.data_type(), &t.to_arrow());
        let list = a.as_list::<i32>();
        assert!(list.is_null(1));
        let first = list.value(0);
        assert_eq!(first.as_primitive::<Int32Type>().values(), &[2, 1]);
        let a = outputs_to_array(&[Output::Null, Output::Null], &ValueType::String).unwrap();
        assert_eq!((a.len(), a.null_count(), a.data_type()), (2, 2, &ValueType::String.to_arrow()));
        assert!(outputs_to_array(&[Output::Value(Value::Str("x".into()))], &ValueType::Int64).is_err());
    }
}
