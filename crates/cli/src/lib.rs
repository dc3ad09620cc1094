//! The `grove` command line: parsing, printing and exit codes; the work is in the library
//! crates. The binaries `grove`, `grove-coordinator` and `grove-worker` are thin mains over
//! [`main`].

mod commands;
mod embedded;
mod launcher;
mod output;
mod progress;
mod remote;
mod secrets;
mod signal;
mod specargs;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Run the command line. `subcommand` is set by the daemon binaries (`grove-coordinator` is
/// `grove coordinator`): it is put in front of the arguments.
pub fn main(subcommand: Option<&str>) -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(sub) = subcommand {
        args.insert(1.min(args.len()), sub.into());
    }
    let cli = commands::Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporters live on the runtime: made in it, flushed (on drop) before it ends.
    let _telemetry = {
        let _in = runtime.enter();
        init_tracing(cli.global.verbose, cli.service_name())
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let mut text = format!("error: {e}");
            for cause in e.chain().skip(1) {
                text.push_str(&format!("\n  caused by: {cause}"));
            }
            // A credential in a repository URL is never shown, whoever put it in the message.
            let _ = writeln!(std::io::stderr().lock(), "{}", grove_core::urls::redact(&text));
            // A follower that lost its coordinator is not bad input: the job goes on there.
            if e.chain().any(|c| c.downcast_ref::<remote::Lost>().is_some()) {
                return ExitCode::from(remote::LOST);
            }
            ExitCode::from(2)
        }
    }
}

/// `grove status | head` closing the pipe early is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The log on stderr (`GROVE_LOG`, `-v`), and OpenTelemetry export when the `OTEL_*`
/// variables ask for it (see `grove_telemetry::export`). Each layer has its own filter, so a
/// quiet log does not starve the traces and traces do not make the log louder.
fn init_tracing(verbose: u8, service: &str) -> grove_telemetry::export::Telemetry {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default = match verbose {
        0 => "warn",
        1 => "info,grove=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GROVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(output::color_enabled_stderr())
        .with_filter(filter);
    let (otel, telemetry) = match grove_telemetry::export::init(service) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warning: {e}; going on without telemetry");
            (None, grove_telemetry::export::Telemetry::default())
        }
    };
    let _ = tracing_subscriber::registry().with(log).with(otel).try_init();
    telemetry
}
