//! `grove`: run many coding agents at once, each in its own worktree, and merge their work.

fn main() -> std::process::ExitCode {
    grove_cli::main(None)
}
