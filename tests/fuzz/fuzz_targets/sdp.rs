//! The body of the HTTP signaling request (`POST /api/v1/sessions/{id}/rtc`): an SDP offer as a
//! browser or anyone else sends it, parsed by the SDP library the server hands it to.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    let _ = rtc_sdp::description::session::SessionDescription::unmarshal(&mut cursor);
});
