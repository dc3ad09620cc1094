//! The `maven` and `gradle` rules.

use super::*;

const POM: &str = r#"<?xml version="1.0"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <groupId>com.acme</groupId>
  <artifactId>parent</artifactId>
  <packaging>pom</packaging>
  <modules>
    <module>core</module>
    <module>web</module>
  </modules>
  <profiles><profile><modules><module>extra</module></modules></profile></profiles>
</project>"#;

fn module_pom(artifact: &str, deps: &[&str]) -> String {
    let deps: String = deps
        .iter()
        .map(|d| {
            format!(
                "<dependency><groupId>${{project.groupId}}</groupId><artifactId>{d}</artifactId></dependency>"
            )
        })
        .collect();
    format!(
        "<project><parent><groupId>com.acme</groupId><artifactId>parent</artifactId></parent><artifactId>{artifact}</artifactId><dependencies>{deps}<dependency><groupId>org.x</groupId><artifactId>lib</artifactId></dependency></dependencies></project>"
    )
}

#[test]
fn maven_multi_module() {
    let core = module_pom("acme-core", &[]);
    let web = module_pom("acme-web", &["acme-core"]);
    let extra = module_pom("acme-extra", &["acme-web", "acme-core"]);
    let t = MemTree::new(&[
        ("pom.xml", POM),
        ("core/pom.xml", &core),
        ("core/src/main/java/A.java", ""),
        ("core/src/test/resources/pom.xml", "<project><artifactId>fixture</artifactId></project>"),
        ("web/pom.xml", &web),
        ("extra/pom.xml", &extra),
        ("broken/pom.xml", "<project><artifactId>x</project>"),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Maven));
    assert_eq!(
        layout(&p),
        [
            "acme-core: core/pom.xml core/src/main/java/A.java core/src/test/resources/pom.xml",
            "broken: broken/pom.xml",
            "parent: pom.xml",
            "acme-web: web/pom.xml",
            "acme-extra: extra/pom.xml",
        ]
    );
    assert_eq!(task(&p, "acme-extra").depends_on, ["acme-web"]);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].starts_with("broken/pom.xml:1: "), "{:?}", p.warnings);
}

#[test]
fn gradle_kts_build() {
    let t = MemTree::new(&[
        (
            "settings.gradle.kts",
            "rootProject.name = \"shop\"\ninclude(\":core\", \":web\")\ninclude(\":libs:json-util\")\n// include(\":old\")\n",
        ),
        ("build.gradle.kts", "plugins { java }\n"),
        ("core/build.gradle.kts", "dependencies { implementation(projects.libs.jsonUtil) }\n"),
        ("core/src/Main.kt", ""),
        (
            "web/build.gradle.kts",
            "dependencies {\n  implementation(project(\":core\"))\n  // implementation(project(\":old\"))\n}\n",
        ),
        ("libs/json-util/build.gradle.kts", ""),
        ("old/build.gradle.kts", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Gradle));
    assert_eq!(
        layout(&p),
        [
            "libs-json-util: libs/json-util/build.gradle.kts",
            "shop: build.gradle.kts old/build.gradle.kts settings.gradle.kts",
            "core: core/build.gradle.kts core/src/Main.kt",
            "web: web/build.gradle.kts",
        ]
    );
    assert_eq!(task(&p, "web").depends_on, ["core"]);
    assert_eq!(task(&p, "core").depends_on, ["libs-json-util"]);
    assert_eq!(task(&p, "core").title, ":core");
}

#[test]
fn gradle_groovy_with_project_dir() {
    let t = MemTree::new(&[
        (
            "settings.gradle",
            "include 'app',\n        'lib'\nproject(':lib').projectDir = new File(settingsDir, 'libraries/lib')\n",
        ),
        ("app/build.gradle", "dependencies { implementation project(path: ':lib') }\n"),
        ("libraries/lib/build.gradle", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Gradle));
    assert_eq!(
        layout(&p),
        ["libraries-lib: libraries/lib/build.gradle", "root: settings.gradle", "app: app/build.gradle"]
    );
    assert_eq!(task(&p, "app").depends_on, ["libraries-lib"]);
}

#[test]
fn maven_without_aggregator_takes_every_pom() {
    let t = MemTree::new(&[
        ("a/pom.xml", "<project><groupId>g</groupId><artifactId>a</artifactId></project>"),
        (
            "b/pom.xml",
            "<project><groupId>g</groupId><artifactId>b</artifactId><dependencies><dependency><groupId>other</groupId><artifactId>a</artifactId></dependency><dependency><groupId>g</groupId><artifactId>c</artifactId></dependency></dependencies></project>",
        ),
        ("c/pom.xml", "<project><groupId>g</groupId><artifactId>c</artifactId></project>"),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Maven));
    assert_eq!(layout(&p), ["a: a/pom.xml", "c: c/pom.xml", "b: b/pom.xml"]);
    // Another group's `a` is not this repository's `a`.
    assert_eq!(task(&p, "b").depends_on, ["c"]);
}
