//! The `python` rule.

use super::*;

#[test]
fn two_projects_with_an_edge() {
    let t = MemTree::new(&[
        ("pyproject.toml", "[tool.ruff]\nline-length = 100\n"),
        ("core/pyproject.toml", "[project]\nname = \"Acme_Core\"\ndependencies = [\"requests>=2\"]\n"),
        ("core/acme_core/__init__.py", ""),
        ("api/setup.cfg", "[metadata]\nname = acme-api\n[options]\ninstall_requires =\n    acme.core>=1\n"),
        ("api/acme_api/__init__.py", ""),
        (
            "cli/pyproject.toml",
            "[project]\nname = \"cli\"\n[tool.uv.sources]\nhelper = { path = \"../helper\" }\n",
        ),
        ("helper/setup.py", "from setuptools import setup\nsetup(name='helper')\n"),
        ("scripts/x.py", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Python));
    assert_eq!(
        layout(&p),
        [
            "acme_core: core/acme_core/__init__.py core/pyproject.toml",
            "helper: helper/setup.py",
            "root: pyproject.toml scripts/x.py",
            "acme-api: api/acme_api/__init__.py api/setup.cfg",
            "cli: cli/pyproject.toml",
        ]
    );
    assert_eq!(task(&p, "acme-api").depends_on, ["acme_core"]);
    assert_eq!(task(&p, "cli").depends_on, ["helper"]);
}

#[test]
fn packages_when_there_is_no_project() {
    let t = MemTree::new(&[
        ("src/shop/__init__.py", ""),
        ("src/shop/cart/__init__.py", ""),
        ("src/shop/cart/model.py", ""),
        ("tools/gen/__init__.py", ""),
        ("run.py", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Python));
    assert_eq!(
        layout(&p),
        [
            "root: run.py",
            "src-shop: src/shop/__init__.py src/shop/cart/__init__.py src/shop/cart/model.py",
            "tools-gen: tools/gen/__init__.py",
        ]
    );
    assert_eq!(task(&p, "src-shop").title, "src.shop");
}

#[test]
fn poetry_path_dependencies() {
    let t = MemTree::new(&[
        (
            "svc/pyproject.toml",
            "[tool.poetry]\nname = \"svc\"\n[tool.poetry.dependencies]\npython = \"^3.11\"\nshared = { path = \"../libs/shared\", develop = true }\n",
        ),
        ("libs/shared/pyproject.toml", "[build-system]\nrequires = [\"hatchling\"]\n"),
        ("libs/shared/shared/__init__.py", ""),
        ("libs/broken/pyproject.toml", "[project\n"),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Python));
    assert_eq!(
        layout(&p),
        [
            "libs-broken: libs/broken/pyproject.toml",
            "libs-shared: libs/shared/pyproject.toml libs/shared/shared/__init__.py",
            "svc: svc/pyproject.toml",
        ]
    );
    assert_eq!(task(&p, "svc").depends_on, ["libs-shared"]);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].starts_with("libs/broken/pyproject.toml:1: "), "{:?}", p.warnings);
}
