//! `grove-coordinator`: the coordinator daemon, the same as `grove coordinator`.

fn main() -> std::process::ExitCode {
    grove_cli::main(Some("coordinator"))
}
