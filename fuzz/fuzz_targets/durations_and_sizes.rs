//! Durations (`1h30m`), sizes (`2GiB`) and feature references (`view:feature`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = feature_store_core::duration::parse_duration(&s);
    let _ = feature_store_core::repo::parse_size(&s);
    let _ = s.parse::<feature_store_core::model::FeatureRef>();
});
