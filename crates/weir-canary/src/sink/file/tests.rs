use super::*;
use crate::spec::CanarySpec;

const CONFIG: &str = r#"# payment-svc, as in the lesson
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: payment-svc
spec:
  host: payment-svc
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: payment-svc
  namespace: production
spec:
  hosts:
  - payment-svc
  http:
  # Step 1: header-based routing for internal testing (0% to production)
  - match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: payment-svc
        subset: v2
  # Step 2: weight-based canary (increment over time)
  - route:
    - destination:
        host: payment-svc
        subset: v1
      weight: 90 # ALWAYS verify: v1 + v2 weights = 100
    - destination:
        host: payment-svc
        subset: v2
      weight:   10   # weights must sum to 100
"#;

fn target(extra: &str) -> Target {
    let text = format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: payment-svc}}\nspec:\n  analysis: {{interval: 1m, threshold: 1, stepWeight: 10}}\n  weir: {{{extra}}}\n"
    );
    CanarySpec::from_yaml("c.yaml", &text).unwrap().target
}

/// A file in a fresh directory of its own, removed at the end of the test.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weir-canary-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("payment-svc.yaml");
        std::fs::write(&path, text).unwrap();
        TempFile { dir, path }
    }

    fn read(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn rewrites_only_the_weights() {
    let file = TempFile::new("weights", CONFIG);
    let mut sink = FileSink::new(&file.path);
    let t = target("");
    sink.set_weights(&t, Split::canary(20)).unwrap();
    let want = CONFIG
        .replace("weight: 90 #", "weight: 80 #")
        .replace("weight:   10   #", "weight:   20   #");
    assert_eq!(file.read(), want);

    sink.rollback(&t).unwrap();
    let want = CONFIG
        .replace("weight: 90 #", "weight: 100 #")
        .replace("weight:   10   #", "weight:   0   #");
    assert_eq!(file.read(), want);
    assert!(sink.release(&t).is_ok(), "a file has no latch");
    // Nothing is left behind in the directory but the file itself.
    assert_eq!(std::fs::read_dir(&file.dir).unwrap().count(), 1);
}

#[test]
fn promotion_names_the_canary_stable() {
    let file = TempFile::new("promote", CONFIG);
    let mut sink = FileSink::new(&file.path);
    let t = target("");
    sink.promote(&t).unwrap();
    let want = CONFIG
        .replace(
            "  name: payment-svc\n  namespace: production\n",
            "  annotations:\n    weir.dev/stable-subset: v2\n  name: payment-svc\n  namespace: production\n",
        )
        .replace("weight: 90 #", "weight: 0 #")
        .replace("weight:   10   #", "weight:   100   #");
    assert_eq!(file.read(), want);
    // Promoting again changes nothing: the annotation is now rewritten in place.
    sink.promote(&t).unwrap();
    assert_eq!(file.read(), want);

    // An existing annotation block gets one more line; an existing annotation is rewritten.
    let annotated = CONFIG.replace(
        "  name: payment-svc\n  namespace: production\n",
        "  name: payment-svc\n  namespace: production\n  annotations:\n    weir.dev/max-step: \"50\" # keep\n",
    );
    let file = TempFile::new("annotated", &annotated);
    let mut sink = FileSink::new(&file.path);
    sink.promote(&t).unwrap();
    assert!(
        file.read().contains(
            "  annotations:\n    weir.dev/stable-subset: v2\n    weir.dev/max-step: \"50\" # keep\n"
        ),
        "{}",
        file.read()
    );
    let stable = annotated.replace(
        "# keep\n",
        "# keep\n    weir.dev/stable-subset: \"v1\" # was\n",
    );
    let file = TempFile::new("stable", &stable);
    FileSink::new(&file.path).promote(&t).unwrap();
    assert!(
        file.read().contains("weir.dev/stable-subset: v2 # was\n"),
        "{}",
        file.read()
    );
}

#[test]
fn refuses_what_it_cannot_rewrite_and_leaves_the_file_alone() {
    let rows: [(&str, String, &str); 4] = [
        (
            "virtualService: nope",
            CONFIG.to_string(),
            "no VirtualService named \"nope\"",
        ),
        (
            "rule: canary",
            CONFIG.to_string(),
            "no http rule named \"canary\"",
        ),
        (
            "canarySubset: v3",
            CONFIG.to_string(),
            "no http rule routing to both",
        ),
        (
            "",
            CONFIG.replace(
                "      weight: 90 # ALWAYS verify: v1 + v2 weights = 100\n",
                "",
            ),
            "no `weight:`",
        ),
    ];
    for (weir, text, want) in rows {
        let file = TempFile::new("refuse", &text);
        let err = FileSink::new(&file.path)
            .set_weights(&target(weir), Split::canary(20))
            .unwrap_err();
        assert!(err.to_string().contains(want), "{weir}: {err}");
        assert_eq!(file.read(), text, "{weir}: the file is unchanged");
    }
    let err = FileSink::new("/nonexistent/weir/vs.yaml")
        .rollback(&target(""))
        .unwrap_err();
    assert!(!err.is_refused(), "{err}");
}

#[test]
fn a_named_rule_in_flow_style() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: payment-svc\nspec:\n  http:\n  - name: split\n    route: [{destination: {host: p, subset: v1}, weight: 50}, {destination: {host: p, subset: v2}, weight: 50}]\n";
    let file = TempFile::new("flow", text);
    FileSink::new(&file.path)
        .set_weights(&target("rule: split"), Split::canary(10))
        .unwrap();
    assert_eq!(
        file.read(),
        text.replace("weight: 50}, {", "weight: 90}, {")
            .replace("weight: 50}]", "weight: 10}]")
    );
}
