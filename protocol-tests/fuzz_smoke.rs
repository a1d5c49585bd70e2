//! The fuzz targets' checks over a bounded, reproducible set of inputs:
//! mutations of every transcript's client bytes plus random bytes.

use mupdated::fuzzing;
use mupdated::tools::transcript::{self, Step};

use crate::server::Rng;

fn corpus() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/transcripts");
    for entry in std::fs::read_dir(dir).expect("transcripts") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for step in transcript::parse(&text).expect("parse") {
            if let Step::Send { bytes, .. } = step {
                seeds.push(bytes);
            }
        }
    }
    seeds
}

#[test]
fn fuzz_targets_hold_on_mutated_transcripts() {
    let seeds = corpus();
    assert!(seeds.len() > 50);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for round in 0..20_000 {
        let mut data = seeds[(rng.next() as usize) % seeds.len()].clone();
        let edits = 1 + rng.next() % 4;
        for _ in 0..edits {
            let pos = if data.is_empty() { 0 } else { (rng.next() as usize) % data.len() };
            match rng.next() % 5 {
                0 if !data.is_empty() => data[pos] = rng.next() as u8,
                1 => data.insert(pos, b"{}\r\n+\" \\0123456789"[(rng.next() % 17) as usize]),
                2 if !data.is_empty() => {
                    data.remove(pos);
                }
                3 => {
                    let other = &seeds[(rng.next() as usize) % seeds.len()];
                    data.extend_from_slice(other);
                }
                _ => data.extend((0..(rng.next() % 16)).map(|_| rng.next() as u8)),
            }
        }
        let split = (rng.next() as usize) ^ round;
        fuzzing::framer(&data, split);
        fuzzing::command_round_trip(&data);
    }
}

/// The whole-session target over a bounded, reproducible set of inputs:
/// random command scripts of a few dozen steps each.
#[test]
fn whole_sessions_hold_on_random_scripts() {
    let mut rng = Rng(0x5e55_1011_f00d_0001);
    for _ in 0..100 {
        let len = 16 + (rng.next() % 400) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        fuzzing::session(&data);
    }
}
