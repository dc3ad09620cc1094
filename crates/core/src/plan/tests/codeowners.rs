//! The `codeowners` rule.

use super::*;

#[test]
fn one_task_per_owner_set_last_rule_wins() {
    let t = MemTree::new(&[
        (
            ".github/CODEOWNERS",
            "# owners\n*       @org/all\n*.js    @org/web @bob\n/docs/  @org/docs\napps/   @org/web   @bob\n/docs/internal/secret.md\nsrc/*   @carol # direct files only\n",
        ),
        ("CODEOWNERS", "* @ignored\n"),
        ("README.md", ""),
        ("src/main.rs", ""),
        ("src/deep/mod.rs", ""),
        ("src/ui/app.js", ""),
        ("docs/guide.md", ""),
        ("docs/internal/secret.md", ""),
        ("x/apps/y.txt", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Codeowners));
    assert_eq!(
        layout(&p),
        [
            "bob-org-web: src/ui/app.js x/apps/y.txt",
            "carol: src/main.rs",
            "org-all: .github/CODEOWNERS CODEOWNERS README.md src/deep/mod.rs",
            "org-docs: docs/guide.md",
            "unowned: docs/internal/secret.md",
        ]
    );
    assert_eq!(task(&p, "bob-org-web").title, "@bob @org/web");
    assert_eq!(
        task(&p, "bob-org-web").sparse.as_deref(),
        Some(&["src/ui".to_owned(), "x/apps".to_owned()][..])
    );
    assert_sparse_covers(&p);
}

#[test]
fn without_codeowners_it_says_so_and_uses_folders() {
    let t = MemTree::new(&[("a/x", ""), ("b/y", "")]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Codeowners));
    assert_eq!(layout(&p), ["a: a/x", "b: b/y"]);
    assert_eq!(p.warnings, ["split codeowners: no CODEOWNERS file found; planned by folders at depth 1"]);
}
