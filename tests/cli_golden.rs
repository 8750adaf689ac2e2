//! Golden tests of `weir validate` and `weir explain` on the files in `config/`. The expected
//! output lives in `tests/golden/`; `UPDATE_GOLDEN=1 cargo test --test cli_golden` rewrites it
//! after a deliberate change (review the diff).

mod support;

use std::path::Path;

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    exit: i32,
}

const CASES: &[Case] = &[
    Case {
        name: "validate-payment-svc",
        args: &["validate", "config/payment-svc.yaml"],
        exit: 0,
    },
    Case {
        name: "validate-typo",
        args: &["validate", "config/examples/typo-99-1.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-typo-against-running",
        args: &[
            "validate",
            "config/examples/typo-99-1.yaml",
            "--against",
            "config/payment-svc.yaml",
        ],
        exit: 1,
    },
    Case {
        name: "validate-typo-json",
        args: &[
            "validate",
            "config/examples/typo-99-1.yaml",
            "--format",
            "json",
        ],
        exit: 1,
    },
    Case {
        name: "validate-weights-not-100",
        args: &["validate", "config/examples/weights-not-100.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-undefined-subset",
        args: &["validate", "config/examples/undefined-subset.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-unreachable-rule",
        args: &["validate", "config/examples/unreachable-rule.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-bad-regex",
        args: &["validate", "config/examples/bad-regex.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-negative-weight",
        args: &["validate", "config/examples/negative-weight.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-yaml-error",
        args: &["validate", "config/examples/yaml-error.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-missing-file",
        args: &["validate", "config/no-such-file.yaml"],
        exit: 2,
    },
    // The lesson's manifests as teams apply them (issue 9): no ServiceEntry, cluster mode.
    Case {
        name: "validate-lesson-vs-typo",
        args: &["validate", "config/examples/lesson/vs-typo.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-lesson-vs-dr-typo",
        args: &[
            "validate",
            "config/examples/lesson/vs-typo.yaml",
            "config/examples/lesson/dr.yaml",
        ],
        exit: 1,
    },
    Case {
        name: "validate-lesson-kubectl-list-typo",
        args: &["validate", "config/examples/lesson/kubectl-get-typo.yaml"],
        exit: 1,
    },
    Case {
        name: "validate-lesson-vs",
        args: &["validate", "config/examples/lesson/vs.yaml"],
        exit: 0,
    },
    Case {
        name: "validate-lesson-vs-dr",
        args: &[
            "validate",
            "config/examples/lesson/vs.yaml",
            "config/examples/lesson/dr.yaml",
        ],
        exit: 0,
    },
    Case {
        name: "validate-lesson-vs-strict-hosts",
        args: &[
            "validate",
            "--strict-hosts",
            "config/examples/lesson/vs.yaml",
        ],
        exit: 1,
    },
    Case {
        name: "explain-unknown-host",
        args: &[
            "explain",
            "--config",
            "config/payment-svc.yaml",
            "--url",
            "http://checkout/pay",
        ],
        exit: 1,
    },
    Case {
        name: "explain-refused-config",
        args: &[
            "explain",
            "--config",
            "config/examples/typo-99-1.yaml",
            "--url",
            "http://payment-svc/pay",
        ],
        exit: 1,
    },
    Case {
        name: "explain-split",
        args: &[
            "explain",
            "--config",
            "config/payment-svc.yaml",
            "--url",
            "http://payment-svc/pay",
            "--samples",
            "10000",
            "--seed",
            "7",
        ],
        exit: 0,
    },
    Case {
        name: "explain-dark-launch",
        args: &[
            "explain",
            "--config",
            "config/payment-svc.yaml",
            "--url",
            "http://payment-svc.production/pay",
            "-H",
            "x-canary: true",
        ],
        exit: 0,
    },
    Case {
        name: "explain-split-json",
        args: &[
            "explain",
            "--config",
            "config/payment-svc.yaml",
            "--url",
            "http://payment-svc/pay",
            "--samples",
            "1000",
            "--seed",
            "7",
            "--format",
            "json",
        ],
        exit: 0,
    },
];

#[test]
fn golden_outputs() {
    let root = support::root();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in CASES {
        let out = support::weir_command()
            .args(case.args)
            .current_dir(&root)
            .output()
            .expect("run weir");
        let mut got = String::from_utf8(out.stdout).unwrap();
        if case.exit == 2 || case.name == "explain-unknown-host" {
            // Usage and I/O errors, and explain's "no route", go to stderr.
            got.push_str(&String::from_utf8(out.stderr).unwrap());
        }
        let path = root.join("tests/golden").join(format!("{}.txt", case.name));
        if out.status.code() != Some(case.exit) {
            failures.push(format!(
                "{}: exit {:?}, expected {}\n{got}",
                case.name,
                out.status.code(),
                case.exit
            ));
            continue;
        }
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = read_or_empty(&path);
        if want != got {
            failures.push(format!(
                "{}: output differs from {}\n--- want\n{want}\n--- got\n{got}",
                case.name,
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Issue 9's acceptance: the lesson's bare VirtualService, VirtualService + DestinationRule and
/// a `kubectl get -o yaml` List all refuse the 99/1 typo with WEIR004 naming v1, v2 and the
/// weights, with no noise from server-filled fields.
#[test]
fn lesson_manifests_refuse_the_typo_with_weir004() {
    let root = support::root();
    for name in [
        "validate-lesson-vs-typo",
        "validate-lesson-vs-dr-typo",
        "validate-lesson-kubectl-list-typo",
    ] {
        let golden = read_or_empty(&root.join("tests/golden").join(format!("{name}.txt")));
        let weir004 = golden
            .lines()
            .find(|l| l.contains("error[WEIR004]"))
            .unwrap_or_else(|| panic!("{name}: no WEIR004:\n{golden}"));
        for needle in [
            "canary subset v2",
            "stable subset v1",
            "(v1: 1, v2: 99)",
            "99%",
            "1%",
        ] {
            assert!(
                weir004.contains(needle),
                "{name}: {needle:?} missing in {weir004}"
            );
        }
        assert!(
            !golden.contains("WEIR010"),
            "{name}: server-filled fields are noise:\n{golden}"
        );
        assert!(!golden.contains("IST0101"), "{name}: {golden}");
        assert!(golden.contains("REFUSED (1 error"), "{name}: {golden}");
    }
}

#[test]
fn validate_reads_a_directory_recursively() {
    let root = support::root();
    let dir = std::env::temp_dir().join(format!("weir-validate-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("vs")).unwrap();
    std::fs::create_dir_all(dir.join("rules/nested")).unwrap();
    let lesson = root.join("config/examples/lesson");
    std::fs::copy(lesson.join("vs-typo.yaml"), dir.join("vs/payment-svc.yaml")).unwrap();
    std::fs::copy(
        lesson.join("dr.yaml"),
        dir.join("rules/nested/payment-svc.yml"),
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not yaml: {{{").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "not: [yaml").unwrap();
    let out = support::weir_command()
        .arg("validate")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("payment-svc.yaml:31:7: error[WEIR004]"),
        "{stdout}"
    );
    // The DestinationRule was read from the nested .yml file: subsets are checked, so there is
    // no cluster-mode host warning; the README and the hidden file were not read.
    assert!(!stdout.contains("WEIR006"), "{stdout}");
    assert!(!stdout.contains("WEIR009"), "{stdout}");
    assert!(stdout.contains("REFUSED (1 error, 1 warning)"), "{stdout}");
}

#[test]
fn validate_reads_stdin() {
    use std::io::Write;
    use std::process::Stdio;
    let root = support::root();
    for (file, exit) in [("vs-typo.yaml", 1), ("vs.yaml", 0)] {
        let text = std::fs::read(root.join("config/examples/lesson").join(file)).unwrap();
        let mut child = support::weir_command()
            .args(["validate", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&text).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(exit), "{file}: {stdout}");
        assert!(stdout.contains("<stdin>"), "{stdout}");
        assert_eq!(stdout.contains("WEIR004"), exit == 1, "{stdout}");
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn every_example_is_refused_and_the_lesson_is_accepted() {
    let root = support::root();
    let mut examples: Vec<_> = std::fs::read_dir(root.join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 5);
    for path in examples {
        let out = support::weir_command()
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} must be refused",
            path.display()
        );
    }
    let out = support::weir_command()
        .args(["validate", "config/payment-svc.yaml"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}
