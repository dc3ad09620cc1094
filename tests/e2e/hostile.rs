//! A hostile agent: task A poisons everything git lets it reach (its own repository's config,
//! hooks and attributes, and the shared mirror's, found through its object store), and task B's
//! agent then runs git in its own workspace. Nothing the poison names runs, in B's workspace or
//! in grove's own checkpoints, merges and publishing; the merged result holds both tasks' files
//! as written.

use crate::harness::{Env, task};

#[test]
fn an_agent_poisoning_the_mirror_reaches_no_other_task_and_not_grove() {
    let env = Env::new();
    let files: Vec<(String, String)> = vec![
        ("a/one.txt".into(), "one\n".into()),
        ("b/two.txt".into(), "two\n".into()),
        ("README".into(), "r\n".into()),
    ];
    let repo = env.repo("r", &files);
    let mark = env.path().join("ran");
    let sync = env.path().join("sync");
    std::fs::create_dir_all(&mark).expect("mark");
    std::fs::create_dir_all(&sync).expect("sync");
    let (mark, sync) = (mark.display(), sync.display());
    // `spy NAME` leaves a file NAME in the marker folder, and passes its input through.
    let script = format!(
        r#"set -e
spy="$PWD/../spy-$GROVE_TASK"
printf '#!/bin/sh\ntouch {mark}/"$1"\ncat\n' > "$spy"; chmod +x "$spy"
poison() {{ # $1: a git dir to poison
  g="git --git-dir=$1"
  $g config core.hooksPath "$1/evil-hooks"
  $g config core.fsmonitor "$spy fsmonitor-$GROVE_TASK"
  $g config alias.commit "!$spy alias-$GROVE_TASK"
  $g config filter.evil.clean "$spy clean-$GROVE_TASK"
  $g config filter.evil.smudge "$spy smudge-$GROVE_TASK"
  $g config filter.evil.required true
  $g config diff.evil.textconv "$spy textconv-$GROVE_TASK"
  $g config diff.external "$spy external-diff-$GROVE_TASK"
  $g config merge.evil.driver "$spy merge-driver-$GROVE_TASK"
  $g config core.sshCommand "$spy ssh-$GROVE_TASK"
  mkdir -p "$1/info" "$1/hooks" "$1/evil-hooks"
  echo '* filter=evil diff=evil merge=evil' > "$1/info/attributes"
  for h in pre-commit post-commit reference-transaction post-checkout pre-push pre-receive update post-update post-receive; do
    printf '#!/bin/sh\n%s hook-%s-%s </dev/null\n' "$spy" "$h" "$GROVE_TASK" > "$1/hooks/$h"
    cp "$1/hooks/$h" "$1/evil-hooks/$h"; chmod +x "$1/hooks/$h" "$1/evil-hooks/$h"
  done
}}
case "$GROVE_TASK" in
a)
  poison "$PWD/.git"
  mirror=$(sed 's#/objects$##' .git/objects/info/alternates)
  poison "$mirror"
  echo '* filter=evil diff=evil merge=evil' > .gitattributes
  echo ONE > a/one.txt
  touch {sync}/a-done ;;
b)
  i=0; while [ ! -f {sync}/a-done ]; do i=$((i+1)); [ $i -lt 600 ] || exit 3; sleep 0.05; done
  echo TWO > b/two.txt
  git status --porcelain > /dev/null
  git add -A
  git -c user.name=b -c user.email=b@example.invalid commit -q -m "agent b commits itself"
  git diff HEAD~1 > /dev/null ;;
esac
"#
    );
    let run = env.grove(&repo, &["run", "--split", "dirs", "-j", "2", "--json", "--", "sh", "-c", &script]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    for t in ["a", "b"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{job:#}");
    }
    let ran: Vec<String> = std::fs::read_dir(env.path().join("ran"))
        .expect("marker")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(ran.is_empty(), "the poison ran: {ran:?}");

    // The merged tree holds both changes as the agents wrote them (no clean filter), and B's
    // own commit, which its hooks would have stopped.
    let branch = job["integration_branch"].as_str().expect("branch");
    let show = |path: &str| env.git(&repo, &["show", &format!("{branch}:{path}")]);
    assert_eq!(show("a/one.txt"), "ONE");
    assert_eq!(show("b/two.txt"), "TWO");
    let log = env.git(&repo, &["log", "--format=%s", branch]);
    assert!(log.contains("agent b commits itself"), "{log}");
    // The mirror is grove's again: no hook, no attributes, no driver in its config.
    let mirrors = env.grove_home().join("mirrors");
    let mirror = std::fs::read_dir(&mirrors).expect("mirrors").flatten().next().expect("a mirror").path();
    let config = std::fs::read_to_string(mirror.join("config")).expect("config").to_lowercase();
    for gone in ["hookspath", "[alias", "[filter", "[merge", "[diff", "sshcommand", "fsmonitor"] {
        assert!(!config.contains(gone), "{gone} is still in the mirror's config:\n{config}");
    }
    assert!(!mirror.join("info/attributes").exists());
    let hooks = std::fs::read_dir(mirror.join("hooks")).map(|d| d.flatten().count()).unwrap_or(0);
    assert_eq!(hooks, 0, "hooks left in the mirror");
}
