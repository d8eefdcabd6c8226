//! The property tests of `stagehost_tests::props`, at a modest case count: parsers never
//! panic, and a secret never reaches an output. `benches/properties.rs` runs the same
//! properties at millions of cases.

#[test]
fn every_property_holds() {
    let outcomes = stagehost_tests::props::run_all(300);
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_ref().map(|f| format!("{}: {f}", o.name)))
        .collect();
    assert_eq!(outcomes.len(), 7);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
