//! Stream records as `feature-store ingest` decodes them: a Kafka value, a
//! NATS payload or a Redis entry may hold anything. Decoding must never
//! panic, must account for every message (a row or a dead letter with its
//! reason), and must give every row its join key and event time. The
//! one-pass fast path must decide exactly as the checked path does.
#![no_main]
use arrow_array::Array;
use feature_store_core::ValueType;
use feature_store_core::ingest::decode::{RecordField, RecordSchema};
use feature_store_core::ingest::{Message, Payload};
use feature_store_core::model::{EpochUnit, StreamKind, StreamSource};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let unit = [EpochUnit::Seconds, EpochUnit::Millis, EpochUnit::Micros, EpochUnit::Nanos][usize::from(mode >> 4) % 4];
    let source = StreamSource::builder("s", StreamKind::RedisStream, "ts", "b")
        .redis("redis://x", "k")
        .map_field("rate", "conv_rate")
        .timestamp_unit(unit)
        .strict(mode & 2 != 0)
        .build()
        .expect("valid source");
    let fields = vec![
        RecordField { name: "driver_id".into(), dtype: ValueType::Int64, required: true },
        RecordField { name: "conv_rate".into(), dtype: ValueType::Float32, required: false },
        RecordField { name: "n".into(), dtype: ValueType::Int32, required: false },
        RecordField { name: "name".into(), dtype: ValueType::String, required: false },
        RecordField { name: "ok".into(), dtype: ValueType::Bool, required: false },
        RecordField { name: "at".into(), dtype: ValueType::Timestamp, required: false },
        RecordField { name: "tags".into(), dtype: ValueType::List(Box::new(ValueType::String)), required: false },
        RecordField { name: "xs".into(), dtype: ValueType::List(Box::new(ValueType::Float64)), required: false },
    ];
    let schema = RecordSchema::new(&source, fields, "event_timestamp");
    // Several messages per input: split on newlines.
    let messages: Vec<Message> = rest
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, chunk)| {
            let payload = if mode & 1 == 0 {
                Payload::Json(bytes::Bytes::copy_from_slice(chunk))
            } else {
                // A flat Redis entry: field=value pairs separated by `;`.
                let text = String::from_utf8_lossy(chunk);
                Payload::Fields(
                    text.split(';')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (k.to_owned(), v.to_owned())
                        })
                        .collect(),
                )
            };
            Message::new("p".into(), i as u128, i.to_string(), payload)
        })
        .collect();
    let d = schema.decode(&messages);
    // The one-pass fast path decides as the checked path does, to the value.
    let checked = schema.decode_checked(&messages);
    assert_eq!(d.rows, checked.rows, "fast and checked paths took different rows");
    assert_eq!(d.rejected, checked.rejected, "fast and checked paths refused differently");
    assert!(
        d.batch.columns().iter().zip(checked.batch.columns()).all(|(a, b)| a.to_data() == b.to_data()),
        "fast and checked paths decoded different values"
    );
    assert_eq!(d.rows.len() + d.rejected.len(), messages.len(), "every message is a row or a dead letter");
    assert_eq!(d.batch.num_rows(), d.rows.len());
    assert!(d.rejected.iter().all(|(_, why)| !why.is_empty()), "every dead letter says why");
    assert_eq!(d.batch.column(0).null_count(), 0, "every row has its join key");
    let ts = d.batch.column_by_name("event_timestamp").expect("event time column");
    assert_eq!(ts.null_count(), 0, "every row has its event time");
});
