//! End-to-end tests: the real `grove` binary on real repositories made by the tests.
//! One test binary; every command gets a hermetic HOME, GROVE_HOME and git config.

mod adapters;
mod agents_cli;
mod cancel;
mod chaos;
mod custom_agents;
mod distributed;
mod faults;
mod gc;
mod harness;
mod limits;
mod refusals;
mod rerun;
mod run;
mod train;
