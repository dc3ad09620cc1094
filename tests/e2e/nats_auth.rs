//! NATS permissions per role, with the authorization config grove ships
//! (`deploy/nats/grove-auth.conf`) on a real nats-server: the coordinator and workers of two
//! pools run jobs end to end as their users; a worker's user cannot publish an assignment,
//! pull another pool's or make a consumer; the CLI's user reads the registry and cannot pull
//! assignments. Refusals are observed as the server's permission-violation errors.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::sync::mpsc;

use crate::distributed::{dirs_repo, free_port, wait_port};
use crate::harness::{Env, task};

const PASSWORDS: [(&str, &str, &str); 4] = [
    ("GROVE_NATS_COORDINATOR_PASSWORD", "grove-coordinator", "c-pass"),
    ("GROVE_NATS_WORKER_LOCAL_PASSWORD", "grove-worker-local", "l-pass"),
    ("GROVE_NATS_WORKER_CLOUD_PASSWORD", "grove-worker-cloud", "k-pass"),
    ("GROVE_NATS_CLI_PASSWORD", "grove-cli", "x-pass"),
];

fn password(user: &str) -> &'static str {
    PASSWORDS.iter().find(|(_, u, _)| *u == user).map(|(_, _, p)| *p).expect("a user of the config")
}

/// `grove args` as NATS user `user`, its own home under `env` (one per process).
fn grove_as(env: &Env, user: &str, home: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = grove_tests::command("grove");
    cmd.args(args)
        .args(["--nats-user", user])
        .env("GROVE_NATS_PASSWORD", password(user))
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.path().join(home))
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd
}

fn spawn(mut cmd: std::process::Command) -> grove_tests::Proc {
    grove_tests::Proc(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn grove"))
}

/// A raw NATS client as `user` (with its inbox prefix), and the server's errors to it.
async fn raw(url: &str, user: &str) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password(user).into())
        .custom_inbox_prefix(format!("_INBOX_{user}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .expect("connect");
    (client, rx)
}

/// Wait for the server to say that `what` (`Publish to "subject"`) violates the permissions.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, errors.recv()).await {
            Ok(Some(e)) if e.to_lowercase().contains("permissions violation") && e.contains(what) => return,
            Ok(Some(_)) => continue,
            _ => panic!("no permissions violation for {what}"),
        }
    }
}

#[test]
fn each_role_may_do_only_its_part() {
    let env = Env::new();
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/grove-auth.conf");
    let vars: Vec<(&str, &str)> = PASSWORDS.iter().map(|(v, _, p)| (*v, *p)).collect();
    let (_nats, nats_port) =
        grove_tests::nats_server_env(&env.path().join("nats"), &["-c", conf.to_str().expect("utf-8")], &vars);
    let url = format!("nats://127.0.0.1:{nats_port}");

    // A worker started before any coordinator waits for it to set grove up.
    let worker = |user: &str, pool: &str, id: &str| {
        grove_as(
            &env,
            user,
            &format!("worker-{id}"),
            &["worker", "--nats", &url, "--pool", pool, "--id", id, "--ack-wait", "5s"],
        )
    };
    let _local = spawn(worker("grove-worker-local", "local", "l1"));
    let port = free_port();
    let _coordinator = spawn(grove_as(
        &env,
        "grove-coordinator",
        "grove-home",
        &["coordinator", "--nats", &url, "--listen", &format!("127.0.0.1:{port}")],
    ));
    wait_port(port);
    let api = format!("http://127.0.0.1:{port}");
    let repo = dirs_repo(&env, "r", 4);
    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    let run = |pool: &str, include: &str| {
        let mut cmd = grove_tests::command("grove");
        cmd.current_dir(&repo)
            .args(["run", "--coordinator", &api, "--split", "dirs", "--pool", pool, "--include", include])
            .args(["--json", "--", "sh", "-c", script])
            .env("HOME", env.path().join("home"))
            .env("GROVE_HOME", env.path().join("client"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    // The local worker does its pool's job end to end as its own user.
    let out = run("local", "d0[01]/**").output().expect("grove run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(task(&job, "d00")["shown"], "merged", "{job:#}");
    assert_eq!(task(&job, "d01")["shown"], "merged", "{job:#}");

    // A cloud job waits in its pool: no cloud worker yet.
    let cloud_run = run("cloud", "d0[23]/**").spawn().expect("grove run");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (admin, _) = raw(&url, "grove-coordinator").await;
        let admin_js = jetstream::new(admin);
        let mut tasks = admin_js.get_stream("GROVE_TASKS").await.expect("tasks stream");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tasks.info().await.expect("info").state.messages < 2 {
            assert!(Instant::now() < deadline, "the cloud job's assignments were not dispatched");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The local worker's user: no assignment published, no other pool pulled, no consumer made.
        let (worker, mut errors) = raw(&url, "grove-worker-local").await;
        worker.publish("grove.tasks.local", "forged".into()).await.expect("send");
        violation(&mut errors, "Publish to \"grove.tasks.local\"").await;
        worker.publish("grove.tasks.cloud", "forged".into()).await.expect("send");
        violation(&mut errors, "Publish to \"grove.tasks.cloud\"").await;
        let inbox = worker.new_inbox();
        let mut replies = worker.subscribe(inbox.clone()).await.expect("subscribe");
        let next = "$JS.API.CONSUMER.MSG.NEXT.GROVE_TASKS.pool-cloud";
        worker.publish_with_reply(next, inbox.clone(), r#"{"batch":1}"#.into()).await.expect("send");
        violation(&mut errors, &format!("Publish to \"{next}\"")).await;
        let create = "$JS.API.CONSUMER.CREATE.GROVE_TASKS.mine.grove.tasks.cloud";
        worker.publish_with_reply(create, inbox.clone(), "{}".into()).await.expect("send");
        violation(&mut errors, &format!("Publish to \"{create}\"")).await;
        let durable = "$JS.API.CONSUMER.DURABLE.CREATE.GROVE_TASKS.pool-cloud";
        worker.publish_with_reply(durable, inbox.clone(), "{}".into()).await.expect("send");
        violation(&mut errors, &format!("Publish to \"{durable}\"")).await;
        let delete = "$JS.API.STREAM.DELETE.GROVE_TASKS";
        worker.publish_with_reply(delete, inbox.clone(), "".into()).await.expect("send");
        violation(&mut errors, &format!("Publish to \"{delete}\"")).await;
        // Nor read other roles' replies or the events.
        let _snoop = worker.subscribe("_INBOX.>").await.expect("send");
        violation(&mut errors, "Subscription to \"_INBOX.>\"").await;
        let _events = worker.subscribe("grove.events.>").await.expect("send");
        violation(&mut errors, "Subscription to \"grove.events.>\"").await;
        worker.flush().await.expect("flush");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), futures_next(&mut replies)).await.is_err(),
            "nothing was delivered to the local worker's user"
        );

        // The CLI's user: no assignment pulled from any pool, none published.
        let (cli, mut errors) = raw(&url, "grove-cli").await;
        let inbox = cli.new_inbox();
        for pool in ["local", "cloud"] {
            let next = format!("$JS.API.CONSUMER.MSG.NEXT.GROVE_TASKS.pool-{pool}");
            cli.publish_with_reply(next.clone(), inbox.clone(), r#"{"batch":1}"#.into()).await.expect("send");
            violation(&mut errors, &format!("Publish to \"{next}\"")).await;
        }
        cli.publish("grove.tasks.local", "forged".into()).await.expect("send");
        violation(&mut errors, "Publish to \"grove.tasks.local\"").await;
        cli.publish("grove.events.x", "forged".into()).await.expect("send");
        violation(&mut errors, "Publish to \"grove.events.x\"").await;

        // The cloud assignments are still there, and nothing forged was added.
        assert_eq!(tasks.info().await.expect("info").state.messages, 2);
    });

    // The CLI's user reads the registry.
    let mut workers = grove_as(&env, "grove-cli", "cli", &["workers", "--nats", &url, "--json"]);
    let out = workers.output().expect("grove workers");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(listed.as_array().is_some_and(|ws| ws.iter().any(|w| w["id"] == "l1")), "{listed:#}");

    // The cloud worker, as its own user, takes its pool's job to the end.
    let _cloud = spawn(worker("grove-worker-cloud", "cloud", "c1"));
    let out = cloud_run.wait_with_output().expect("grove run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(task(&job, "d02")["shown"], "merged", "{job:#}");
    let id = job["id"].as_str().expect("id");
    assert!(env.path().join(format!("worker-c1/runs/{id}/d03/agent.log")).exists(), "c1 ran it");
}

async fn futures_next(s: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    use futures::StreamExt;
    s.next().await
}
