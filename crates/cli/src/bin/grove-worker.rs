//! `grove-worker`: the worker daemon, the same as `grove worker`.

fn main() -> std::process::ExitCode {
    grove_cli::main(Some("worker"))
}
