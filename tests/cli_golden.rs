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
        if case.exit == 2 {
            // Usage and I/O errors go to stderr.
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
