//! Property tests for everything that parses untrusted bytes: the OIP JSON decoder, the binary
//! extension splitter, the Authorization header, the manifest, server and tokens files, and
//! the traffic body. Thousands of cases each, bounded in time; none may panic, and what is
//! accepted must be consistent (round trips, lengths that add up).

use edgeinfer_server::security::tokens::{TokenStore, TokensFile};
use edgeinfer_server::{ServerConfig, TrafficChange};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, max_shrink_iters: 200, ..ProptestConfig::default() }
}

/// JSON-ish text: fragments of valid requests mixed with noise, so the decoder sees deep,
/// almost-valid input rather than only garbage.
fn jsonish() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("\"inputs\"".to_string()),
        Just("\"name\"".to_string()),
        Just("\"X\"".to_string()),
        Just("\"shape\"".to_string()),
        Just("\"datatype\"".to_string()),
        Just("\"FP32\"".to_string()),
        Just("\"BYTES\"".to_string()),
        Just("\"INT64\"".to_string()),
        Just("\"data\"".to_string()),
        Just("\"parameters\"".to_string()),
        Just("\"binary_data_size\"".to_string()),
        Just("\"outputs\"".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[a-z\\\\\"]{0,6}".prop_map(|s| format!("\"{s}\"")),
    ];
    prop::collection::vec(fragment, 0..60).prop_map(|parts| parts.concat())
}

/// A well-formed request with random shapes and data.
fn request() -> impl Strategy<Value = (Vec<u64>, Vec<f32>)> {
    prop::collection::vec(1u64..5, 1..4).prop_flat_map(|shape| {
        let n = shape.iter().product::<u64>() as usize;
        (Just(shape), prop::collection::vec(-1e6f32..1e6, n))
    })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn the_json_decoder_never_panics(text in jsonish(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = edgeinfer_oip::decode_request(text.as_bytes());
        let _ = edgeinfer_oip::decode_request(&bytes);
    }

    #[test]
    fn valid_requests_decode_to_their_bytes((shape, data) in request()) {
        let body = serde_json::json!({"inputs": [{"name": "X", "shape": shape, "datatype": "FP32", "data": data}]});
        let (_, tensors) = edgeinfer_oip::decode_request(body.to_string().as_bytes()).expect("valid");
        let expected: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        prop_assert_eq!(&tensors[0].data, &expected);
        prop_assert_eq!(&tensors[0].shape, &shape);
        let encoded = edgeinfer_oip::encode_output(&tensors[0]).expect("encodes");
        let back: Vec<f32> = encoded.as_array().expect("array").iter().map(|v| v.as_f64().expect("number") as f32).collect();
        prop_assert_eq!(back, data);
    }

    #[test]
    fn the_binary_splitter_is_consistent(
        body in prop::collection::vec(any::<u8>(), 0..300),
        header in prop_oneof![Just(None), any::<u16>().prop_map(|n| Some(n.to_string())), "[ -~]{0,8}".prop_map(Some)],
    ) {
        let body = edgeinfer_oip::Bytes::from(body);
        if let Ok((json, binary)) = edgeinfer_oip::split_body(&body, header.as_deref()) {
            prop_assert_eq!(json.len() + binary.len(), body.len());
            if let Some(header) = &header {
                prop_assert_eq!(Some(json.len()), header.trim().parse::<usize>().ok());
            }
            let _ = edgeinfer_oip::decode_request_with_binary(&json, &binary);
        }
    }

    #[test]
    fn the_traffic_body_parser_never_panics(text in jsonish()) {
        if let Ok(change) = TrafficChange::parse(text.as_bytes()) {
            let _ = change.deployment.validate(&[1, 2, 3].into());
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn config_and_manifest_parsers_never_panic(text in "[ -~\\n]{0,200}", key in "[a-z_]{1,20}", value in "[ -~]{0,20}") {
        let _ = ServerConfig::parse(&text);
        let _ = edgeinfer_runtime::Manifest::parse(&text);
        let _ = toml::from_str::<TokensFile>(&text);
        let line = format!("{key} = {value}\n");
        let _ = ServerConfig::parse(&line);
        let _ = edgeinfer_runtime::Manifest::parse(&line);
    }

    #[test]
    fn the_authorization_header_never_panics_and_never_lets_garbage_in(header in prop::collection::vec(any::<u8>(), 0..120), text in "[ -~]{0,80}") {
        let store = tokens();
        prop_assert!(store.authenticate(Some(&header)).is_err());
        prop_assert!(store.authenticate(Some(text.as_bytes())).is_err());
        let bearer = format!("Bearer {text}");
        prop_assert!(store.authenticate(Some(bearer.as_bytes())).is_err());
    }
}

/// A store holding one admin token (whose value the properties never see).
fn tokens() -> &'static TokenStore {
    static STORE: std::sync::OnceLock<(tempfile::TempDir, TokenStore)> = std::sync::OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("tokens.toml");
            let mut file = TokensFile::default();
            let scopes = vec!["admin".parse().expect("scope")];
            file.create("admin", scopes, None, Default::default()).expect("create");
            file.save(&path).expect("save");
            let store = TokenStore::open(&path).expect("store");
            (dir, store)
        })
        .1
}
