//! The request path a peer reaches: any bytes as the body of a federation
//! request message, through the bus's decoder, read as a control API
//! envelope as the daemon reads it, its version checked, and turned into
//! the HTTP route and back as the control socket does. Nothing may panic
//! or hang; an envelope that reads must serialise and read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch_api::Envelope;
use orch_federation::wire::{Message, decode};

fuzz_target!(|data: &[u8]| {
    let id = 7u64.to_be_bytes();
    let frames: [&[u8]; 4] = [b"OF\x01\x04", &id, b"pc2", data];
    let Ok(envelope) = decode(&frames) else {
        return;
    };
    let Message::Request(request) = envelope.message else {
        panic!("a request message decodes as a request");
    };
    let Ok(env) = serde_json::from_slice::<Envelope>(&request.body) else {
        return;
    };
    let _ = env.check_version();
    let _ = env.request.name();
    let route = orch_api::http::to_route(&env);
    let (path, query) = match route.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (route.path.as_str(), None),
    };
    let _ = orch_api::http::from_route(
        route.method.as_str(),
        path,
        query,
        route.body.as_deref().unwrap_or_default(),
    );
    let again = serde_json::to_vec(&env).expect("an envelope serialises");
    assert_eq!(serde_json::from_slice::<Envelope>(&again).ok(), Some(env));
});
