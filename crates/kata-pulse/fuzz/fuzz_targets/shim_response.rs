//! A shim's answer as arbitrary bytes, through the agent's HTTP client over
//! an in-memory stream: never a panic (in the caller or in the connection's
//! task), never a hang, never more body than the cap, and a Content-Length
//! body exactly as long as declared.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kata_pulse_fuzz::shim_response(data);
});
