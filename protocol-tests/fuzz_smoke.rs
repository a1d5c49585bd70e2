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

/// The SCRAM target over mutations of real client messages (Cyrus's
/// shapes: authzid, escapes, extensions) and random bytes.
#[test]
fn scram_parser_holds_on_mutated_messages() {
    let seeds: [&[u8]; 5] = [
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO\0c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"n,a=mupdater,n=mupdater,r=abc\0c=bixhPW11cGRhdGVyLA==,r=abcdef,p=AAAA",
        b"y,a=be=2C1=3D,n=a=3Db=2cc,r=abc,x=ext\0c=eSws,r=abc,x=1,p=",
        b"p=tls-unique,,n=u,r=a",
        b"n,,m=x,n=u,r=a\0",
    ];
    let mut rng = Rng(0x5c2a_4d00_1234_5678);
    for _ in 0..20_000 {
        let mut data = seeds[(rng.next() as usize) % seeds.len()].to_vec();
        for _ in 0..1 + rng.next() % 4 {
            let pos = if data.is_empty() { 0 } else { (rng.next() as usize) % data.len() };
            match rng.next() % 4 {
                0 if !data.is_empty() => data[pos] = rng.next() as u8,
                1 => data.insert(pos, b",=\0nrcpa2C3D"[(rng.next() % 12) as usize]),
                2 if !data.is_empty() => {
                    data.remove(pos);
                }
                _ => data.truncate(pos),
            }
        }
        fuzzing::scram(&data);
    }
    for _ in 0..2_000 {
        let len = (rng.next() % 200) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        fuzzing::scram(&data);
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
