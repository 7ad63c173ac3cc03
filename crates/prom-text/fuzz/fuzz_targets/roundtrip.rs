//! Parse, relabel and render as the agent does (identity labels whose
//! values need escaping, kata-monitor's renaming and refused prefixes),
//! then parse the output again: zero errors, and every sample that the
//! rules keep is there with its labels, value and timestamp.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prom_text_fuzz::oracle;

fuzz_target!(|data: &[u8]| {
    oracle::check_roundtrip(data, &oracle::IDENTITY, oracle::agent_action);
    // No extra labels at all (the agent's own families), everything kept.
    oracle::check_roundtrip(data, &[], |_| prom_text::FamilyAction::Keep);
});
