//! The Kubernetes manifests of `config/k8s/`, checked offline: every object against the
//! Kubernetes schemas with `kubernetes-validate --strict` (PyPI, pinned, installed into
//! `.test-venv` by `scripts/install-test-deps.sh`), run in a network namespace of its own with
//! no interface up when the test is root, so that a validator reaching for the network fails;
//! and every `weir` command line in them accepted by the real binary, so that a manifest never
//! passes a flag weir does not have.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::*;

/// The Kubernetes version the manifests are written for (native sidecars need >= 1.29).
const KUBERNETES: &str = "1.33.0";

fn venv() -> PathBuf {
    let venv = std::env::var_os("WEIR_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".test-venv"));
    assert!(
        venv.join("bin/kubernetes-validate").exists(),
        "{} has no kubernetes-validate: run `bash scripts/install-test-deps.sh` (it installs the \
         version pinned in scripts/k8s-validate-requirements.txt from PyPI into .test-venv), \
         or point WEIR_TEST_VENV at a virtualenv that has it",
        venv.display()
    );
    venv
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("config/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    files
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs the validator on `files`; as root, in a fresh network namespace (no network at all).
fn validate(files: &[PathBuf]) -> Output {
    let validator = venv().join("bin/kubernetes-validate");
    let mut cmd = if is_root() {
        let mut cmd = Command::new("unshare");
        cmd.arg("--net").arg(&validator);
        cmd
    } else {
        Command::new(&validator)
    };
    cmd.args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("run kubernetes-validate")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The containers of every object in `file`, as JSON: `{kind, name, container, command, args}`,
/// read with the PyYAML of the same virtualenv.
fn containers(file: &Path) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys, yaml
out = []
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc:
        continue
    spec = doc.get("spec", {})
    template = spec.get("template", {}) if doc["kind"] != "Pod" else doc
    pod = template.get("spec", spec)
    annotations = template.get("metadata", {}).get("annotations", {})
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        out.append({"kind": doc["kind"], "name": doc["metadata"]["name"], "container": c["name"],
                    "image": c.get("image", ""), "command": c.get("command", []), "args": c.get("args", []),
                    "restartPolicy": c.get("restartPolicy"), "securityContext": c.get("securityContext", {}),
                    "env": c.get("env", []), "ports": c.get("ports", []), "annotations": annotations})
print(json.dumps(out))
"#;
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", SCRIPT])
        .arg(file)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// A container's weir arguments: its `args`, or the `weir ...` line of a `sh -c` script (the
/// token read from its file replaced by a placeholder).
fn weir_args(c: &Value) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let command = strings(&c["command"]);
    let args = strings(&c["args"]);
    if command.first().is_some_and(|c| c.ends_with("sh")) {
        let script = args.join(" ").replace("$(cat /var/run/weir/token)", "t");
        let words: Vec<String> = script
            .split_whitespace()
            .map(|w| w.trim_matches('"').to_string())
            .collect();
        let at = words
            .iter()
            .position(|w| w == "weir")
            .unwrap_or_else(|| panic!("no weir command in {script:?}"));
        return words[at + 1..].to_vec();
    }
    args
}

#[test]
fn every_manifest_is_valid_kubernetes_offline() {
    let files = manifests();
    let out = validate(&files);
    let said = text(&out);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{said}"
    );
    // One "passed" line per object, and every file has some.
    for file in &files {
        let name = file.display().to_string();
        assert!(
            said.lines()
                .any(|l| l.contains(&name) && l.contains("passed")),
            "{name} not validated:\n{said}"
        );
    }
    assert!(!said.contains("failed"), "{said}");

    // The validator is strict: an unknown field (a typo) fails.
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        read(root().join("config/k8s/deployment.yaml")).replace(
            "        restartPolicy: Always\n",
            "        restartPolicyy: Always\n",
        ),
    )
    .unwrap();
    let out = validate(&[typo]);
    assert!(!out.status.success(), "a typo passed:\n{}", text(&out));
    assert!(text(&out).contains("restartPolicyy"), "{}", text(&out));
}

#[test]
fn every_weir_command_line_in_the_manifests_is_one_weir_accepts() {
    let mut checked = 0;
    for file in manifests() {
        for c in containers(&file) {
            if !c["image"].as_str().unwrap().starts_with("weir:") {
                continue;
            }
            let args = weir_args(&c);
            // Parsed by the real command line; `--help` at the end stops before anything runs.
            let out = Command::new(weir_bin())
                .args(&args)
                .arg("--help")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} {}/{} container {}: `weir {}` is refused:\n{}",
                file.display(),
                c["kind"],
                c["name"],
                c["container"],
                args.join(" "),
                text(&out)
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} weir containers found");
}

#[test]
fn the_sidecar_runs_as_the_uid_weir_init_exempts() {
    let pods = containers(&root().join("config/k8s/deployment.yaml"));
    let find = |name: &str| {
        pods.iter()
            .find(|c| c["container"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    let init = find("weir-init");
    let init_args = weir_args(init);
    assert_eq!(init_args[0], "init");
    let uid: u64 = init_args
        .windows(2)
        .find(|w| w[0] == "--proxy-uid")
        .map_or(1337, |w| w[1].parse().unwrap());
    let caps = &init["securityContext"]["capabilities"]["add"];
    assert_eq!(caps, &serde_json::json!(["NET_ADMIN", "NET_RAW"]));
    let weir = find("weir");
    // A native sidecar: an init container that keeps running.
    assert_eq!(weir["restartPolicy"], "Always");
    assert_eq!(weir["securityContext"]["runAsUser"].as_u64(), Some(uid));
    // The app is any other uid, so that its connections are captured.
    let app = find("app");
    assert_ne!(app["securityContext"]["runAsUser"].as_u64(), Some(uid));
}

/// The value after `flag` in a weir command line.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

#[test]
fn payment_svc_pods_run_weirs_inbound_side_with_the_labels_flaggers_queries_select() {
    let all = containers(&root().join("config/k8s/versions.yaml"));
    for deployment in ["payment-svc-v1", "payment-svc-v2"] {
        let pod: Vec<&Value> = all.iter().filter(|c| c["name"] == deployment).collect();
        let find = |name: &str| {
            *pod.iter()
                .find(|c| c["container"] == name)
                .unwrap_or_else(|| panic!("{deployment}: no container {name}"))
        };
        let (init, weir, app) = (find("weir-init"), find("weir"), find("payment-svc"));
        // The app's port, by the port the app serves on.
        let app_port = app["ports"][0]["containerPort"]
            .as_u64()
            .unwrap()
            .to_string();
        let init_args = weir_args(init);
        assert_eq!(init_args[0], "init");
        assert_eq!(flag(&init_args, "--inbound-ports"), Some(app_port.as_str()));
        let uid: u64 = flag(&init_args, "--proxy-uid").map_or(1337, |u| u.parse().unwrap());
        assert_eq!(
            init["securityContext"]["capabilities"]["add"],
            serde_json::json!(["NET_ADMIN", "NET_RAW"])
        );
        // The inbound sidecar: native, as the exempted uid, on the port `weir init` redirects
        // to, named as Flagger's `destination_workload=~"<targetRef.name>"` expects.
        assert_eq!(weir["restartPolicy"], "Always");
        assert_eq!(weir["securityContext"]["runAsUser"].as_u64(), Some(uid));
        assert_ne!(app["securityContext"]["runAsUser"].as_u64(), Some(uid));
        let args = weir_args(weir);
        assert_eq!(args[0], "serve");
        let inbound = flag(&args, "--inbound").expect("--inbound");
        let inbound_port = flag(&init_args, "--inbound-port").unwrap_or("15006");
        assert!(inbound.ends_with(&format!(":{inbound_port}")), "{inbound}");
        assert_eq!(flag(&args, "--workload"), Some(deployment));
        // The namespace from the downward API, through the container's environment.
        assert_eq!(flag(&args, "--namespace"), Some("$(POD_NAMESPACE)"));
        let env = weir["env"].as_array().unwrap();
        assert!(
            env.iter().any(|e| e["name"] == "POD_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
            "{env:?}"
        );
        assert!(flag(&args, "--pod-labels").is_some());
        // Scraped by prometheus.yaml's job, on the admin port.
        let notes = &weir["annotations"];
        assert_eq!(notes["prometheus.io/scrape"], "true");
        let admin = flag(&args, "--admin").unwrap();
        let port = notes["prometheus.io/port"].as_str().unwrap();
        assert!(admin.ends_with(&format!(":{port}")), "{admin} vs {port}");
    }
}
