//! Ctrl-C and SIGTERM: the first cancels the job cleanly (agents killed, state saved,
//! branches published); a second one exits at once.

use tokio_util::sync::CancellationToken;

/// Watch for SIGINT/SIGTERM; the first cancels `token`, the second exits with 130.
pub fn install(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                return;
            }
        };
        for n in 0..2 {
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                _ = term.recv() => {}
            }
            if n == 0 {
                eprintln!(
                    "\ngrove: cancelling: stopping agents and saving state (Ctrl-C again to exit at once)"
                );
                token.cancel();
            } else {
                eprintln!("grove: exiting now; state is saved up to the last recorded step");
                std::process::exit(130);
            }
        }
    });
}
