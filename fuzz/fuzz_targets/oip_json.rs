//! The Open Inference Protocol JSON decoder on arbitrary bytes: it must never panic, and
//! whatever it accepts must encode back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, tensors)) = edgeinfer_oip::decode_request(data) {
        for tensor in &tensors {
            let _ = edgeinfer_oip::encode_output(tensor);
        }
    }
});
