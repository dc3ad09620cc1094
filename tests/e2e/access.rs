//! The coordinator's API off loopback: TLS and scoped tokens. A `grove coordinator` on
//! 0.0.0.0 with a token file of read, submit (two people) and admin tokens; each call is made
//! with each kind of token, through the CLI and straight over gRPC with hostile requests.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use grove_proto::v1 as pb;
use grove_proto::v1::coordinator_client::CoordinatorClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::distributed::{daemon, dirs_repo, free_port, nats_server, self_signed, wait_port, worker};
use crate::harness::{Env, Run};

const TOKENS: &str =
    "# scope token name\nread r-tok-1 dash\nsubmit s-alice alice\nsubmit s-bob bob\nadmin a-tok-1\n";

/// `grove args` in `cwd` as the holder of `token`, trusting the coordinator's certificate.
fn grove_as(env: &Env, ca: &Path, token: Option<&str>, cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = grove_tests::command("grove");
    cmd.current_dir(cwd)
        .args(args)
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.path().join("client-home"))
        .env("GROVE_CA_FILE", ca)
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("GROVE_TOKEN", t);
    }
    let out = cmd.output().expect("grove");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

struct Coordinator {
    _nats: grove_tests::Proc,
    _coordinator: grove_tests::Proc,
    _worker: grove_tests::Proc,
    api: String,
    ca: PathBuf,
}

fn coordinator(env: &Env) -> Coordinator {
    let (cert, key) = self_signed(&env.path().join("tls"));
    let (nats, url) = nats_server(&env.path().join("nats"));
    let tokens = env.path().join("tokens");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let c = daemon(
        env,
        "grove",
        &[
            "coordinator",
            "--nats",
            &url,
            "--listen",
            &listen,
            "--token-file",
            tokens.to_str().expect("utf-8"),
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
        &env.grove_home(),
    );
    let w = worker(env, &url, "w1", "local", false);
    wait_port(port);
    Coordinator {
        _nats: nats,
        _coordinator: c,
        _worker: w,
        api: format!("https://127.0.0.1:{port}"),
        ca: cert,
    }
}

/// Each verb with each kind of token: read looks, submit runs and acts on its own jobs, admin
/// does everything; a call outside its scope is refused naming the scope it needs.
#[test]
fn api_tokens_have_scopes_and_a_submitter_acts_on_its_own_jobs() {
    let env = Env::new();
    let c = coordinator(&env);
    let repo = dirs_repo(&env, "r", 2);
    let api = c.api.as_str();
    let g = |token: Option<&str>, args: &[&str]| {
        // The coordinator flag goes before a `--` that ends the options.
        let mut a = vec![args[0], "--coordinator", api];
        a.extend(&args[1..]);
        grove_as(&env, &c.ca, token, &repo, &a)
    };
    let denied = |r: &Run, scope: &str| {
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains(&format!("needs a token with the {scope} scope")), "{}", r.stderr);
    };

    // No token, a wrong one: unauthenticated.
    for token in [None, Some("s-mallory")] {
        let r = g(token, &["status"]);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("bearer token"), "{}", r.stderr);
    }
    // A token is never sent over plain http off this machine.
    let r =
        grove_as(&env, &c.ca, Some("r-tok-1"), &repo, &["status", "--coordinator", "http://192.0.2.1:7070"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not https"), "{}", r.stderr);

    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    let run_args = ["run", "--split", "dirs", "--merge-mode", "manual", "--json", "--", "sh", "-c", script];
    denied(&g(Some("r-tok-1"), &run_args), "submit");
    denied(&g(Some("r-tok-1"), &["plan", "--split", "dirs"]), "submit");
    let run = g(Some("s-alice"), &run_args);
    assert_eq!(run.code, 1, "checked, waiting for grove merge: {}\n{}", run.stderr, run.stdout);
    let id = run.json()["id"].as_str().expect("id").to_owned();

    // read: everything that looks.
    for args in [
        vec!["status", id.as_str()],
        vec!["status", "--json"],
        vec!["workers"],
        vec!["logs", "d00"],
        vec!["diff", "d00", "--stat"],
    ] {
        let r = g(Some("r-tok-1"), &args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    }
    denied(&g(Some("r-tok-1"), &["cancel", &id]), "submit");
    denied(&g(Some("r-tok-1"), &["retry", &format!("{id}/d00")]), "submit");
    // submit: not the review verbs.
    denied(&g(Some("s-alice"), &["merge", &id]), "admin");
    denied(&g(Some("s-alice"), &["discard", &format!("{id}/d01")]), "admin");
    denied(&g(Some("s-alice"), &["push", &id]), "admin");
    // Another submitter's job: refused.
    for args in [vec!["cancel".to_owned(), id.clone()], vec!["retry".to_owned(), format!("{id}/d00")]] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = g(Some("s-bob"), &args);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("was not submitted with this token"), "{args:?}: {}", r.stderr);
    }
    // admin: the review verbs.
    let merge = g(Some("a-tok-1"), &["merge", &id, "--json"]);
    assert_eq!(merge.code, 0, "{}", merge.stderr);
    // The submitter passes the scope check on its own job (the task is merged, so the retry
    // itself is refused for that).
    let retry = g(Some("s-alice"), &["retry", &format!("{id}/d00")]);
    assert_eq!(retry.code, 2);
    assert!(retry.stderr.contains("already merged") && !retry.stderr.contains("scope"), "{}", retry.stderr);

    // Bad names are refused before they are looked up, naming the field.
    let r = g(Some("r-tok-1"), &["status", "../../etc"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("id: job id"), "{}", r.stderr);
    let r = g(Some("r-tok-1"), &["logs", "../x"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("task: "), "{}", r.stderr);
}

async fn client(c: &Coordinator) -> CoordinatorClient<Channel> {
    let pem = std::fs::read(&c.ca).expect("ca");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)).domain_name("127.0.0.1");
    let channel = Channel::from_shared(c.api.clone())
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    CoordinatorClient::new(channel)
}

/// Refused with InvalidArgument, the message starting with the field's name.
fn field<T>(r: Result<tonic::Response<T>, tonic::Status>, name: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), Code::InvalidArgument, "{name}: {s:?}");
            assert!(s.message().starts_with(&format!("{name}: ")), "{name}: {}", s.message());
        }
        Ok(_) => panic!("{name}: accepted"),
    }
}

/// Refused with PermissionDenied, naming the scope needed.
fn denied<T>(r: Result<tonic::Response<T>, tonic::Status>, scope: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
            assert!(s.message().contains(&format!("the {scope} scope")), "{}", s.message());
        }
        Ok(_) => panic!("accepted without the {scope} scope"),
    }
}

fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    req
}

/// Hostile requests straight over gRPC: each is refused with InvalidArgument naming its field
/// (or, for one too large to read, by the transport), and a call outside its scope with
/// PermissionDenied.
#[test]
fn hostile_requests_are_refused_naming_the_field() {
    let env = Env::new();
    let c = coordinator(&env);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut api = client(&c).await;
        let admin = "a-tok-1";
        let spec = "[repo]\nsource = \".\"\n[agent]\nkind = \"command\"\ncommand = [\"true\"]\n".to_owned();
        let submit = |spec_toml: String, base_dir: &str| pb::SubmitJobRequest {
            spec_toml,
            spec_name: "job.toml".into(),
            base_dir: base_dir.into(),
        };
        field(api.submit_job(with_token(admin, submit(spec.clone(), "relative/dir"))).await, "base_dir");
        field(api.submit_job(with_token(admin, submit(spec.clone(), "/a/../../etc"))).await, "base_dir");
        field(api.plan_job(with_token(admin, submit(spec.clone(), "/a\0b"))).await, "base_dir");
        field(api.submit_job(with_token(admin, submit("#".repeat(1_500_000), "/tmp"))).await, "spec_toml");
        let too_big = api.submit_job(with_token(admin, submit("#".repeat(3 << 20), "/tmp"))).await;
        assert!(matches!(too_big, Err(ref s) if s.code() != Code::Ok), "{too_big:?}");
        field(
            api.get_job(with_token(
                admin,
                pb::GetJobRequest { id: "../../x".into(), snapshot: false, ..Default::default() },
            ))
            .await,
            "id",
        );
        field(
            api.cancel_job(with_token(
                admin,
                pb::GetJobRequest { id: "a/b".into(), snapshot: false, ..Default::default() },
            ))
            .await,
            "id",
        );
        for task in ["", "..", "j-0001/../x", "a/b/c", "x\n"] {
            field(api.retry_task(with_token(admin, pb::TaskRequest { task: task.into() })).await, "task");
        }
        field(
            api.stream_log(with_token(
                admin,
                pb::LogRequest { task: "../../etc/passwd".into(), follow: true, ..Default::default() },
            ))
            .await,
            "task",
        );
        field(
            api.diff_task(with_token(
                admin,
                pb::DiffRequest { task: "/etc".into(), stat_only: true, color: false },
            ))
            .await,
            "task",
        );
        let many = pb::DiscardRequest { tasks: vec!["t".into(); 20_000], ..Default::default() };
        field(api.discard_tasks(with_token(admin, many)).await, "tasks");
        let dots = pb::DiscardRequest { tasks: vec!["../t".into()], ..Default::default() };
        field(api.discard_tasks(with_token(admin, dots)).await, "tasks");
        field(
            api.pick_variant(with_token(admin, pb::PickRequest { task: "t".into(), variant: "../x".into() }))
                .await,
            "variant",
        );
        for remote in ["--upload-pack=touch /tmp/x", "ext::sh -c touch% /tmp/x", "a\nb"] {
            let push = pb::PushRequest { job: String::new(), remote: Some(remote.into()) };
            field(api.push_job(with_token(admin, push)).await, "remote");
        }

        // Scopes, with their codes.
        denied(api.submit_job(with_token("r-tok-1", submit(spec.clone(), "/tmp"))).await, "submit");
        denied(api.merge_job(with_token("s-alice", pb::GetJobRequest::default())).await, "admin");
        denied(api.push_job(with_token("s-alice", pb::PushRequest::default())).await, "admin");
        let none = api.list_jobs(tonic::Request::new(pb::ListJobsRequest::default())).await;
        assert!(matches!(none, Err(ref s) if s.code() == Code::Unauthenticated), "{none:?}");
        let ok = api.list_jobs(with_token("r-tok-1", pb::ListJobsRequest::default())).await;
        assert!(ok.is_ok(), "{ok:?}");
    });
}
