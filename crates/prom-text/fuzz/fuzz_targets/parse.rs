//! The parser on arbitrary bytes: never panics, never loops, and what it
//! returns keeps its structural promises (families tile the samples, valid
//! names, unique labels, escapes that re-escape to themselves, values that
//! re-read to themselves, a bounded error list).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prom_text_fuzz::oracle;

fuzz_target!(|data: &[u8]| {
    oracle::check_exposition(&prom_text::parse(data));
});
