//! Arbitrary bytes decoded as CRI answers (ListPodSandbox, ListContainers,
//! ListContainerStats) and mapped as the agent maps them: never a panic, and
//! every entry kept is one the runtime sent, under the documented rules.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kata_pulse_fuzz::cri_mapping(data);
});
