//! How long `Phone::parse` takes per number, for a mix of well-formed
//! numbers of several countries (the send path parses every `to` and
//! `from`). Run: `cargo run --release --example phone_parse`.

use std::time::Instant;

use whatan::domain::Phone;

const NUMBERS: &[&str] = &[
    "+917999709798",
    "+14155552671",
    "+447911123456",
    "+5511987654321",
    "+4915112345678",
    "+33612345678",
    "+61412345678",
    "+8613812345678",
    "+2348031234567",
    "+79161234567",
];

fn main() {
    const ROUNDS: usize = 20_000;
    for n in NUMBERS {
        Phone::parse(n).expect("a valid number");
    }
    let started = Instant::now();
    let mut valid = 0usize;
    for _ in 0..ROUNDS {
        for n in NUMBERS {
            valid += Phone::parse(n).is_ok() as usize;
        }
    }
    let parses = ROUNDS * NUMBERS.len();
    let elapsed = started.elapsed();
    println!(
        "Phone::parse: {parses} parses of {} numbers in {:.2?}: {:.2} µs each ({valid} valid)",
        NUMBERS.len(),
        elapsed,
        elapsed.as_secs_f64() * 1e6 / parses as f64
    );
}
