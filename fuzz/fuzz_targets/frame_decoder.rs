//! Feeds arbitrary bytes to the inter-router frame decoder.
//!
//! The decoder must never panic, never consume bytes it reports as incomplete, decode the same
//! frames whether the bytes arrive at once or in small chunks, and every frame it returns must
//! survive re-encoding.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use van_router::wire::{self, Frame, WireError};

/// Frames decoded, the error that stopped decoding (if any), and the bytes left over.
type Outcome = (Vec<Frame>, Option<WireError>, usize);

/// Decodes `data` arriving in chunks of `chunk` bytes, until `Ok(None)` at the end or `Err`.
fn run(data: &[u8], chunk: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let (mut fed, mut consumed) = (0, 0);
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let before = buf.len();
            match wire::decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(buf.len() < before, "a frame consumed nothing");
                    consumed += before - buf.len();
                    assert!(consumed <= fed, "consumed more than was given");
                    frames.push(f);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => return (frames, Some(e), buf.len()),
            }
        }
    }
    let left = buf.len();
    (frames, None, left)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let whole = run(rest, rest.len());

    // How bytes arrive must not change what is decoded (errors included, as far as reached).
    let (frames, err, _) = run(rest, usize::from(first % 16) + 1);
    assert_eq!(frames, whole.0);
    assert_eq!(err, whole.1);

    for f in &whole.0 {
        let mut again = BytesMut::new();
        f.encode_to(&mut again);
        match wire::decode(&mut again) {
            Ok(Some(g)) => assert_eq!(&g, f),
            // Canonical protobuf can be longer than what was received (sign-extended enums).
            Err(WireError::TooLong { .. }) => {}
            other => panic!("re-encoded {f:?} decoded as {other:?}"),
        }
    }
});
