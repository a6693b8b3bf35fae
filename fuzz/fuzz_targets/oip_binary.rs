//! The binary tensor extension: `Inference-Header-Content-Length` (the first two bytes) and
//! a body split into JSON and binary parts, then decoded. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<2>() else { return };
    let header = u16::from_le_bytes(*head).to_string();
    if let Ok((json, binary)) = edgeinfer_oip::split_body(body, Some(&header)) {
        assert_eq!(json.len() + binary.len(), body.len());
        let _ = edgeinfer_oip::decode_request_with_binary(json, binary);
    }
});
