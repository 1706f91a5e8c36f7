//! Writes every fuzz target's seeds into `fuzz/corpus/NAME/`, replacing the seeds that were
//! there and leaving what a fuzzer added. Run it when a format or its parser changes:
//! `cargo run -p skywire-fuzzing --example seed_corpus`.

#![allow(clippy::print_stdout)]

use std::fs;

use skywire_fuzzing::{corpus_dir, is_seed, TARGETS};

fn main() -> std::io::Result<()> {
    for target in TARGETS {
        let dir = corpus_dir(target.name);
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_str().is_some_and(is_seed) {
                fs::remove_file(entry.path())?;
            }
        }
        let seeds = (target.seeds)();
        for seed in &seeds {
            fs::write(dir.join(&seed.name), &seed.bytes)?;
        }
        let bytes: usize = seeds.iter().map(|seed| seed.bytes.len()).sum();
        println!("{}: {} seeds, {bytes} bytes", target.name, seeds.len());
    }
    Ok(())
}
