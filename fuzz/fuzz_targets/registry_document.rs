//! The registry document reader: a corrupt or hostile registry is an error.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = feature_store_core::registry::RegistryDocument::from_json(data, "fuzz.json");
});
