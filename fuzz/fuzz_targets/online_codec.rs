//! Online records and every value type's decoder, and aggregation states:
//! bytes from a store may be anything (another version, corruption).
#![no_main]
use feature_store_core::ValueType;
use feature_store_core::online::codec::{ValueDecoder, decode_record};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let wanted: Vec<String> = ["a", "conv_rate", "n", "missing"].iter().map(|s| (*s).to_owned()).collect();
    let types = [
        ValueType::Int64,
        ValueType::Int32,
        ValueType::Float32,
        ValueType::Float64,
        ValueType::String,
        ValueType::Bool,
        ValueType::Bytes,
        ValueType::Timestamp,
        ValueType::List(Box::new(ValueType::Float64)),
        ValueType::List(Box::new(ValueType::String)),
    ];
    let decode = |bytes: &[u8]| {
        for t in &types {
            let mut d = ValueDecoder::new(t, 1);
            let _ = d.append(bytes, "f");
            let _ = d.finish();
        }
    };
    if let Ok(values) = decode_record(data, &wanted) {
        values.iter().flatten().for_each(|v| decode(v));
    }
    decode(data);
    let _ = feature_store_core::aggregation::AggState::decode(data);
});
