//! For the tests that build network namespaces (`tests/capture.rs`, `tests/pod.rs`): who may,
//! and running the commands that build them.

use super::*;

/// Whether this process may create namespaces and nat rules: root. Without root, `tests`
/// (what needs it) says so and the caller skips, except under CI (`CI` set), where it fails
/// instead.
pub fn privileged(tests: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tests} need root (network namespaces, iptables); CI runs as root"
        );
        eprintln!("skipping: {tests} need root (network namespaces, iptables)");
    }
    root
}

/// Runs a command to success (stdin closed): its stdout; a failure panics with its output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
