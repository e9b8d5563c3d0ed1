//! Request bodies of the feature server's HTTP API and its gRPC
//! `GetOnlineFeatures` message, as the handlers parse them before reaching
//! the store: any client can send anything. Each body is tried as every
//! endpoint's request. Parsing and the JSON-to-Arrow
//! conversion must never panic; a refusal is a 4xx with a message; a batch
//! has one equal-length column per field, of the field's type, and a column
//! the registry declares has the declared type.
#![no_main]
use arrow_array::Array;
use feature_store_server::fuzzing::{ENDPOINTS, Refusal, declared_types};

fn refusal(endpoint: &str, r: &Refusal) {
    assert!((400..500).contains(&r.status), "{endpoint}: status {} for {r:?}", r.status);
    assert!(!r.message.is_empty(), "{endpoint}: a refusal without a message");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for (endpoint, parse) in ENDPOINTS {
        let parsed = match parse(data) {
            Ok(p) => p,
            Err(r) => {
                refusal(endpoint, &r);
                continue;
            }
        };
        for r in parsed.checks.iter().filter_map(|c| c.as_ref().err()) {
            refusal(endpoint, r);
        }
        let typed = parsed.inferred.iter().map(|b| (b, false)).chain(parsed.declared.iter().map(|b| (b, true)));
        for (batch, declared) in typed {
            let batch = match batch {
                Ok(b) => b,
                Err(r) => {
                    refusal(endpoint, r);
                    continue;
                }
            };
            let schema = batch.schema();
            assert!(batch.num_columns() > 0, "{endpoint}: a batch without columns");
            assert_eq!(schema.fields().len(), batch.num_columns(), "{endpoint}: fields and columns differ");
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                assert_eq!(column.len(), batch.num_rows(), "{endpoint}: column {} has another length", field.name());
                assert_eq!(
                    field.data_type(),
                    column.data_type(),
                    "{endpoint}: column {} is not its field's type",
                    field.name()
                );
                if declared && let Some(t) = declared_types().get(field.name()) {
                    assert_eq!(column.data_type(), t, "{endpoint}: column {} is not its declared type", field.name());
                }
            }
        }
    }
});
