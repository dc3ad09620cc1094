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
