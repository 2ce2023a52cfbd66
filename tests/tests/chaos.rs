//! The chaos suite (see `cronfleet_e2e::chaos`): a seeded run of random faults against a
//! whole cluster of real processes, then the history checker. `./scripts/test` runs a
//! short one; `./scripts/chaos --faults N --seed S` a long one, with the same code:
//! `CRONFLEET_CHAOS_FAULTS` and `CRONFLEET_CHAOS_SEED` set its size and seed.

use cronfleet_e2e::chaos;

fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seeded_chaos_run_keeps_every_promise() {
    let seed = setting("CRONFLEET_CHAOS_SEED", 20261204);
    let faults = setting("CRONFLEET_CHAOS_FAULTS", 12);
    let report = chaos::run(seed, usize::try_from(faults).expect("a fault count")).await;
    let table = report.table();
    println!("{table}");
    assert!(
        report.verdict.violations.is_empty(),
        "{table}\n{}\n\nlogs:\n{}",
        report.verdict.violations.join("\n\n"),
        report.logs
    );
}
