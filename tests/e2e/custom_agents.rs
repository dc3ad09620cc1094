//! Repository-defined agents: `grove agents` lists `.github/agents/*.agent.md` and
//! `.claude/agents/*.md` at the base commit, `--custom-agent NAME` refuses a missing or
//! broken definition before any work starts, and a good one reaches the agent.

use grove_tests::model_server::{ModelServer, Reply};

use crate::harness::{Env, listed, task};

const REVIEW: &str = "---\ndescription: Reviews a change and leaves notes\nname: Reviewer\n\
tools: ['read', 'edit']\nmodel: claude-review-model\n---\n\nYou are the review agent. Sign every note with REVIEWED.\n";
const ARCHITECT: &str =
    "---\nname: architect\ndescription: Designs features\ntools: Glob, Grep, Read\n---\nDesign first.\n";
const BROKEN: &str = "---\ndescription: Broken on purpose\ntools: 3\n---\nNever runs.\n";

fn files(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> =
        ["a", "b"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    files.push((".github/agents/review.agent.md".into(), REVIEW.into()));
    files.push((".claude/agents/architect.md".into(), ARCHITECT.into()));
    files.push((".github/agents/README.md".into(), "Not an agent: only *.agent.md are.\n".into()));
    files.extend(extra.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())));
    files
}

/// `grove agents --json` lists both formats with their model, tools and the CLIs that can run
/// them; a definition that does not parse is listed with its file, line and field, and makes
/// the exit code 1. The text form is a table. `--repo` reads another repository.
#[test]
fn grove_agents_lists_a_repositorys_definitions_and_who_runs_them() {
    let env = Env::new();
    let repo = env.repo("r", &files(&[]));
    let run = env.grove(env.path(), &["agents", "--repo", "r", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    let agents = doc["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2, "{doc:#}");
    let review = agents.iter().find(|a| a["name"] == "review").expect("review");
    assert_eq!(review["path"], ".github/agents/review.agent.md");
    assert_eq!(review["format"], "github");
    assert_eq!(review["display_name"], "Reviewer");
    assert_eq!(review["model"], "claude-review-model");
    assert_eq!(review["tools"], serde_json::json!(["read", "edit"]));
    assert_eq!(
        review["claude_tools"],
        serde_json::json!(["Read", "NotebookRead", "Edit", "MultiEdit", "Write", "NotebookEdit"])
    );
    let clis: Vec<&str> =
        review["runners"].as_array().expect("runners").iter().filter_map(|r| r["cli"].as_str()).collect();
    assert!(clis.contains(&"claude") && clis.contains(&"copilot") && clis.contains(&"command"), "{clis:?}");
    let architect = agents.iter().find(|a| a["name"] == "architect").expect("architect");
    assert_eq!(architect["format"], "claude");
    assert_eq!(architect["tools"], serde_json::json!(["Glob", "Grep", "Read"]));
    assert_eq!(doc["errors"], serde_json::json!([]));
    assert_eq!(doc["base"].as_str().map(str::len), Some(40));

    let text = env.grove(&repo, &["agents"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("NAME") && text.stdout.contains("RUNS WITH"), "{}", text.stdout);
    assert!(text.stdout.contains("review") && text.stdout.contains("claude-review-model"), "{}", text.stdout);

    std::fs::write(repo.join(".github/agents/broken.agent.md"), BROKEN).expect("write");
    env.git(&repo, &["add", "--all"]);
    env.git(&repo, &["commit", "--quiet", "-m", "a broken agent"]);
    let run = env.grove(&repo, &["agents", "--json"]);
    assert_eq!(run.code, 1, "a broken definition fails the listing: {}", run.stdout);
    let doc = run.json();
    assert_eq!(doc["agents"].as_array().map(Vec::len), Some(2), "the good ones are still listed");
    let error = doc["errors"][0]["error"].as_str().expect("error");
    assert_eq!(doc["errors"][0]["path"], ".github/agents/broken.agent.md");
    assert!(error.starts_with(".github/agents/broken.agent.md:3: tools: expected a list"), "{error}");
    // The base commit decides: the commit before has no broken file.
    let run = env.grove(&repo, &["agents", "--base", "HEAD~1", "--json"]);
    assert_eq!((run.code, run.json()["errors"].as_array().map(Vec::len)), (0, Some(0)));
}

/// `--custom-agent` naming a definition that does not parse, or none at all, is refused (exit
/// 2) before anything is created, naming the file and the field, or the agents there are.
#[test]
fn a_broken_or_missing_custom_agent_is_refused_before_any_work() {
    let env = Env::new();
    let repo = env.repo("r", &files(&[(".github/agents/broken.agent.md", BROKEN)]));
    let branches = env.git(&repo, &["branch", "--list"]);
    let agent = ["--agent", "command", "--", "sh", "-c", "echo ran >> $GROVE_TASK/f.txt"];
    let cases: [(&str, &[&str]); 3] = [
        (
            "broken",
            &["agent.custom", "\"broken\"", ".github/agents/broken.agent.md:3: tools: expected a list"],
        ),
        ("nobody", &["agent.custom: no agent \"nobody\"", "it defines: architect, review"]),
        ("../x", &["agent.custom", "is not an agent name"]),
    ];
    for (name, expected) in cases {
        let mut args = vec!["run", "--split", "dirs", "--custom-agent", name];
        args.extend(agent);
        let run = env.grove(&repo, &args);
        assert_eq!(run.code, 2, "{name} should be refused: {}", run.stderr);
        for e in expected {
            assert!(run.stderr.contains(e), "{name}: expected {e:?} in: {}", run.stderr);
        }
    }
    // A spec file naming it is refused the same way, with the replace agent refused outright.
    let spec = env.path().join("job.toml");
    std::fs::write(
        &spec,
        "[repo]\nsource = \"r\"\n\n[agent]\nkind = \"command\"\ncommand = [\"true\"]\ncustom = \"broken\"\n",
    )
    .expect("write");
    let run = env.grove(env.path(), &["run", spec.to_str().expect("utf-8")]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("tools: expected a list"), "{}", run.stderr);
    let run = env.grove(
        &repo,
        &["run", "--custom-agent", "review", "--agent", "replace", "--pattern", "a", "--replace", "b"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("the replace agent runs no model"), "{}", run.stderr);
    assert!(!env.grove_home().exists(), "grove created state for a refused job");
    assert_eq!(env.git(&repo, &["branch", "--list"]), branches);
    assert_eq!(std::fs::read_to_string(repo.join("a/f.txt")).expect("read"), "a\n", "nothing ran");
}

/// A job run as the repository's `review` agent: the command agent gets the definition in
/// GROVE_AGENT_FILE, GROVE_AGENT_MODEL and GROVE_AGENT_TOOLS, and the real Claude Code,
/// given them as `--append-system-prompt` and `--model`, sends the agent's body in its system
/// prompt and asks for the agent's model, as the scripted server records.
#[test]
fn a_custom_agents_body_and_model_reach_claude() {
    let env = Env::new();
    let repo = env.repo("r", &files(&[]));
    let server = ModelServer::start();
    server.respond(|req, n| {
        let task = req.workdir().and_then(|w| w.rsplit('/').next().map(str::to_owned)).unwrap_or_default();
        match n {
            0 => Reply::write(&format!("{task}/review.txt"), "REVIEWED\n"),
            _ => Reply::text("Reviewed."),
        }
    });
    let claude = grove_tests::agent_cli("claude");
    let script = format!(
        "echo \"tools=$GROVE_AGENT_TOOLS name=$GROVE_AGENT_NAME\"; exec {} -p \"$1\" --output-format json \
         --permission-mode acceptEdits --model \"$GROVE_AGENT_MODEL\" --append-system-prompt \"$(cat \"$GROVE_AGENT_FILE\")\"",
        claude.display()
    );
    let run = env.grove_with(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--include",
            "a/**",
            "--include",
            "b/**",
            "--custom-agent",
            "review",
            "--prompt",
            "Review your folder",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
            "{prompt}",
        ],
        &listed(server.claude_env(&env.path().join("home"))),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json();
    for t in ["a", "b"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{:#}", task(&job, t));
        let logs = env.grove(&repo, &["logs", &format!("{}/{t}", job["id"].as_str().expect("id"))]);
        assert!(logs.stdout.contains("tools=read,edit name=review"), "{}", logs.stdout);
    }
    let asked = server.model_requests();
    assert_eq!(asked.len(), 4, "two requests per task");
    for r in &asked {
        assert!(r.system().contains("You are the review agent. Sign every note with REVIEWED."), "the body");
        assert_eq!(r.model(), Some("claude-review-model"));
    }
}

/// `--agent claude --custom-agent review`: the builtin adapter gives Claude Code the
/// definition's body as its appended system prompt, its model, and its tools (`read`, `edit`)
/// as Claude's own tool list, as the requests the scripted server received show; Bash, which
/// the definition does not name, is not offered.
#[test]
fn a_custom_agent_runs_with_the_claude_adapter() {
    let env = Env::new();
    let repo = env.repo("r", &files(&[]));
    let server = ModelServer::start();
    server.respond(|req, n| {
        let task = req.workdir().and_then(|w| w.rsplit('/').next().map(str::to_owned)).unwrap_or_default();
        match n {
            0 => Reply::write(&format!("{task}/review.txt"), "REVIEWED\n"),
            _ => Reply::text("Reviewed."),
        }
    });
    let claude = grove_tests::agent_cli("claude");
    let run = env.grove_with(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--include",
            "a/**",
            "--agent",
            "claude",
            "--agent-program",
            claude.to_str().expect("utf-8 path"),
            "--custom-agent",
            "review",
            "--prompt",
            "Review your folder",
            "--json",
        ],
        &listed(server.claude_env(&env.path().join("home"))),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json();
    assert_eq!(task(&job, "a")["shown"], "merged", "{:#}", task(&job, "a"));
    let asked = server.model_requests();
    assert_eq!(asked.len(), 2, "two requests");
    for r in &asked {
        assert!(r.system().contains("You are the review agent. Sign every note with REVIEWED."), "the body");
        assert_eq!(r.model(), Some("claude-review-model"));
        let tools = r.tool_names();
        for t in ["Read", "Edit", "Write"] {
            assert!(tools.iter().any(|n| n == t), "{t} offered: {tools:?}");
        }
        assert!(!tools.iter().any(|n| n == "Bash"), "Bash is not the agent's: {tools:?}");
    }
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/review.txt")]), "REVIEWED");
}
