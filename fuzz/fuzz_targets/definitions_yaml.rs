//! Definition files (YAML): a value or an error, never a panic or a hang.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = feature_store_core::repo::Definitions::from_yaml(&String::from_utf8_lossy(data), "fuzz.yaml");
});
