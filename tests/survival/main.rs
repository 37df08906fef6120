//! The survival suite (tests/README.md): chaos soaks, crash loops, kills in a refresh
//! storm, hostile servers and fuzzed properties. Durations and counts come from
//! SOAK_SECONDS, CRASH_KILLS, STORM_KILLS and PROPTEST_CASES; `.ci/run` prints the
//! figures they write.

#[path = "../common/mod.rs"]
mod common;

mod chaos;
mod crash;
mod fuzz;
mod hostile;
mod storm;
