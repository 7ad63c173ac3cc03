//! Several shim bodies (the input split at ASCII record separators, 0x1e),
//! each rendered with its own sandbox id, merged as `/metrics` does: the
//! response re-parses with zero errors, one HELP and TYPE per family,
//! families sorted, type conflicts cost only their family. Once with every
//! family and once through a `filter_family`-like prefix filter. The
//! compact encoding streamed in chunks gives the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prom_text::{MetricType, Rendered};
use prom_text_fuzz::oracle;

const SEPARATOR: u8 = 0x1e;
const MAX_PARTS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let ids: Vec<String> = (0..MAX_PARTS).map(|i| format!("sandbox-{i}")).collect();
    let parts: Vec<Rendered> = data
        .split(|b| *b == SEPARATOR)
        .take(MAX_PARTS)
        .zip(&ids)
        .map(|(body, id)| {
            let exp = prom_text::parse(body);
            let labels = [("sandbox_id", id.as_str()), ("cri_uid", "u\"\\\n")];
            Rendered::from_exposition(&exp, &labels, oracle::agent_action)
        })
        .collect();
    // The agent's own families come first, as in `/metrics`, written with
    // the builder: its HELP, label value and sample value come from the
    // input's first line and first bytes.
    let first_line = data
        .split(|b| *b == b'\n' || *b == SEPARATOR)
        .next()
        .unwrap_or(&[]);
    let text = String::from_utf8_lossy(first_line);
    let mut bits = [0u8; 8];
    for (b, d) in bits.iter_mut().zip(data) {
        *b = *d;
    }
    let mut own = Rendered::default();
    own.begin_family("kata_monitor_running_shim_count", &text, MetricType::Gauge);
    own.sample("", &[], parts.len() as f64);
    own.begin_family("kata_pulse_fuzz", "Builder values.", MetricType::Gauge);
    let value = f64::from_bits(u64::from_le_bytes(bits));
    own.sample("", &[("sandbox_id", &text), ("cri_uid", "")], value);
    own.finish();
    let mut all: Vec<&Rendered> = vec![&own];
    all.extend(parts.iter());
    oracle::check_merge(&all, &|_| true);
    oracle::check_merge(&all, &|name| name.starts_with(['a', 'k', 'x']));
    // The compact encoding, streamed in chunks of an input-chosen size,
    // writes exactly the same bytes.
    let bodies: Vec<oracle::Labelled<'_>> = data
        .split(|b| *b == SEPARATOR)
        .take(MAX_PARTS)
        .zip(&ids)
        .map(|(body, id)| {
            (
                body,
                [
                    ("sandbox_id", id.as_str()),
                    ("cri_uid", "u\"\\\n"),
                    ("cri_name", ""),
                    ("cri_namespace", "ns"),
                ],
            )
        })
        .collect();
    let chunk = 1 + data.len() % 977;
    oracle::check_compact_stream(&bodies, &own, &|_| true, chunk);
    oracle::check_compact_stream(&bodies, &own, &|name| name.starts_with(['a', 'k']), chunk);
});
