#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracewire_fuzz::otlp::otlp_export(data));
