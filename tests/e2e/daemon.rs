//! A coordinator that never stops for one job (issue 12): limits that cannot loop forever,
//! failures isolated per job, slow checks off the event loop, coordinators sharing a NATS,
//! followers that outlive a coordinator's restart.

use crate::harness::{Env, task};

fn three_dirs(env: &Env) -> std::path::PathBuf {
    let files: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    env.repo("r", &files)
}

/// A compiler's error at `src/x.rs:429:5` or rustc's "recursion limit reached" is the agent's
/// failure, not a usage limit: the task fails at once. A real limit parks the task, but only
/// `--max-parks` times: the next one fails it, saying why.
#[test]
fn compile_errors_are_not_limits_and_parking_is_capped() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let script = r#"echo "attempt $GROVE_ATTEMPT" >> $GROVE_TASK/f.txt
        case $GROVE_TASK in
          a) echo "error[E0308]: mismatched types"; echo "   --> src/x.rs:429:5";
             echo "error: recursion limit reached while expanding \`vec!\`"; exit 101 ;;
          b) echo "Error: 429 Too Many Requests: rate limit exceeded, retry after 1s"; exit 1 ;;
        esac"#;
    let run = env.grove(
        &repo,
        &["run", "--split", "dirs", "-j", "3", "--max-parks", "1", "--json", "--", "sh", "-c", script],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = run.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "failed", "{a:#}");
    assert_eq!(a["attempt"], 1, "a compile error is not parked: {a:#}");
    assert_eq!(a["parks"], 0, "{a:#}");
    let b = task(&job, "b");
    assert_eq!(b["state"], "failed", "{b:#}");
    assert_eq!(b["attempt"], 2, "parked once, then failed: {b:#}");
    assert_eq!(b["parks"], 1, "{b:#}");
    let why = b["reason"].as_str().expect("reason");
    assert!(why.contains("not parked again: it was parked 1 time already (run.max_parks)"), "{why}");
    assert_eq!(task(&job, "c")["shown"], "merged", "{job:#}");
}
