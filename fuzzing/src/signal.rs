//! Viscript's signal protocol from a launched app: the frame decoder over a byte stream that
//! arrives in pieces, and the JSON bodies the server reads (registrations and replies).

use skywire_control::signal::frame::{encode_data, Decoder, Frame};
use skywire_control::signal::message::{split_body, Register, ShutdownAck, OP_REGISTER, REPLY};
use skywire_control::signal::Request;

use crate::Seed;

/// The input's first byte says how large the pieces are in which the rest arrives (1 to 256
/// bytes); the decoder takes them as the server's reads would give them. Every frame it yields
/// re-encodes to bytes that decode to the same frame, and its body is read as the server reads
/// it. Accepted when a frame was decoded.
pub fn signal_frames(data: &[u8]) -> bool {
    let Some((&piece, stream)) = data.split_first() else {
        return false;
    };
    let mut decoder = Decoder::new();
    let mut frames = 0;
    for mut piece in stream.chunks(usize::from(piece) + 1) {
        while !piece.is_empty() {
            let taken = decoder.push(piece);
            piece = &piece[taken..];
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        frames += 1;
                        check_frame(&frame);
                    }
                    Ok(None) => break,
                    Err(_) => return frames > 0,
                }
            }
            assert!(taken > 0, "the decoder is full and gives no frame");
        }
    }
    frames > 0
}

fn check_frame(frame: &Frame) {
    let mut bytes = Vec::new();
    frame
        .encode(&mut bytes)
        .expect("a decoded frame re-encodes");
    assert_eq!(
        Frame::decode(&bytes),
        Ok(Some((frame.clone(), bytes.len())))
    );
    let Frame::Data { body, .. } = frame else {
        return;
    };
    match split_body(body) {
        Some((OP_REGISTER, json)) => {
            let _ = serde_json::from_slice::<Register>(json);
        }
        Some((op, json)) if op & REPLY != 0 => {
            let _ = serde_json::from_slice::<serde_json::Value>(json);
        }
        _ => {}
    }
}

/// A client's session as the server sees it: the registration, a keepalive, acknowledgements
/// and the answers to each request, in pieces of 1, 7 and 256 bytes.
pub fn signal_frames_seeds() -> Vec<Seed> {
    let json = |value: &serde_json::Value| serde_json::to_vec(value).expect("JSON");
    let mut stream = Vec::new();
    let register = serde_json::to_vec(&Register { id: 1 }).expect("JSON");
    encode_data(1, &[&[OP_REGISTER], &register], &mut stream).expect("a small body");
    let frames = [
        Frame::Ping {
            ms: 1_700_000_000_000,
        },
        Frame::Ack { seq: 1 },
        Frame::Pong {
            ms: 1_700_000_000_000,
        },
    ];
    for frame in &frames {
        frame.encode(&mut stream).expect("a small frame");
    }
    let usage = json(&serde_json::json!({"Alloc": 1_048_576, "NumGC": 3, "Sys": 8_388_608}));
    let shutdown = serde_json::to_vec(&ShutdownAck { pid: 4242 }).expect("JSON");
    let replies: [(Request, &[u8]); 3] = [
        (Request::ResourceUsage, &usage),
        (Request::Ping, b"null"),
        (Request::Shutdown, &shutdown),
    ];
    for (seq, (request, body)) in (2..).zip(replies) {
        encode_data(seq, &[&[request.op() | REPLY], body], &mut stream).expect("a small body");
    }
    [0u8, 6, 255]
        .into_iter()
        .map(|piece| {
            let mut bytes = vec![piece];
            bytes.extend_from_slice(&stream);
            Seed::new(format!("session_{}.bin", usize::from(piece) + 1), bytes)
        })
        .collect()
}
