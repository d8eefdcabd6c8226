//! The property tests at scale: every property of `stagehost_tests::props` run with
//! many cases (default 150,000 each, over a million in all; `-- CASES` to change it).
//! Prints each property's case count, time and result.
//!
//! Run: `cargo bench -p stagehost-tests --bench properties [-- CASES]`.

fn main() {
    let cases: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(150_000);
    let start = std::time::Instant::now();
    let outcomes = stagehost_tests::props::run_all(cases);
    let mut total = 0u64;
    let mut failed = false;
    for o in &outcomes {
        total += u64::from(o.cases);
        println!(
            "{:<28} {:>9} cases {:>8.1}s  {}",
            o.name,
            o.cases,
            o.seconds,
            o.failure.as_deref().unwrap_or("ok")
        );
        failed |= o.failure.is_some();
    }
    println!(
        "{total} cases in {:.1}s, {}",
        start.elapsed().as_secs_f64(),
        if failed { "FAILED" } else { "all held" }
    );
    if failed {
        std::process::exit(1);
    }
}
