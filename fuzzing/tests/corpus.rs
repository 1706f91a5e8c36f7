//! Every fuzz target's seeds in `fuzz/corpus/` get past its parser's first check, so a target
//! cannot quietly fuzz nothing, and every libFuzzer binary in `fuzz/` is one of the targets.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use skywire_fuzzing::{corpus_dir, is_seed, TARGETS};

const REWRITE: &str = "rewrite them with `cargo run -p skywire-fuzzing --example seed_corpus`";

#[test]
fn every_seed_in_the_repository_is_accepted_by_its_target() {
    for target in TARGETS {
        let dir = corpus_dir(target.name);
        let mut seeds: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("{}: {err}; {REWRITE}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(is_seed)
            })
            .collect();
        seeds.sort();
        assert!(
            !seeds.is_empty(),
            "{} holds no seeds; {REWRITE}",
            dir.display()
        );
        for seed in seeds {
            let bytes = fs::read(&seed).unwrap();
            assert!(
                (target.run)(&bytes),
                "{} is refused by {}: the format changed? {REWRITE}",
                seed.display(),
                target.name
            );
        }
    }
}

#[test]
fn freshly_made_seeds_are_accepted_by_their_targets() {
    for target in TARGETS {
        let seeds = (target.seeds)();
        assert!(!seeds.is_empty(), "{} makes no seeds", target.name);
        for seed in seeds {
            assert!(is_seed(&seed.name), "{}: {}", target.name, seed.name);
            assert!(
                (target.run)(&seed.bytes),
                "{}: the seed {} is refused",
                target.name,
                seed.name
            );
        }
    }
}

#[test]
fn the_fuzz_binaries_are_the_targets_and_call_their_bodies() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    let binaries: BTreeSet<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            section
                .lines()
                .find_map(|line| line.strip_prefix("name = "))
        })
        .map(|name| name.trim_matches('"'))
        .collect();
    let targets: BTreeSet<&str> = TARGETS.iter().map(|target| target.name).collect();
    assert_eq!(
        binaries, targets,
        "fuzz/Cargo.toml's [[bin]]s and skywire_fuzzing::TARGETS"
    );
    for name in &targets {
        let source = fs::read_to_string(fuzz.join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            source.contains(&format!("::{name}(data)")),
            "fuzz/fuzz_targets/{name}.rs does not call its body {name}"
        );
    }
    let folders: BTreeSet<String> = fs::read_dir(fuzz.join("corpus"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = targets.iter().map(|name| name.to_string()).collect();
    assert_eq!(folders, expected, "fuzz/corpus's folders and the targets");
}
