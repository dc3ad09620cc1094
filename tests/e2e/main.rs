//! End-to-end tests: the real `grove` binary on real repositories made by the tests.
//! One test binary; every command gets a hermetic HOME, GROVE_HOME and git config.

mod access;
mod adapters;
mod agents_cli;
mod cancel;
mod chaos;
mod chart;
mod credentials;
mod custom_agents;
mod daemon;
mod direct;
mod distributed;
mod faults;
mod gc;
mod handoff;
mod harness;
mod hostile;
mod kube;
mod limits;
mod nats_auth;
mod notify;
mod pr;
mod refusals;
mod repos;
mod rerun;
mod run;
mod secrets;
mod telemetry;
mod train;
mod ui;
