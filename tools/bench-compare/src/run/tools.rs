//! What a run needs on the machine: the load tools and proxies (installed when allowed), weir
//! and pingora-split built in release, and the versions of everything for the results.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::args::{Contender, Options};
use crate::shapes::LoadTool;

pub(super) fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Debian packages missing for this run: load tools and proxies.
fn missing_packages(opts: &Options) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let timed = !opts.callgrind;
    let uses = |tool: LoadTool| timed && opts.shapes.iter().any(|s| s.tool == tool);
    if uses(LoadTool::Wrk) && !have("wrk") {
        missing.push("wrk");
    }
    if uses(LoadTool::AbKeepAlive) && !have("ab") {
        missing.push("apache2-utils");
    }
    if (opts.callgrind || opts.with_callgrind) && !have("h2load") {
        missing.push("nghttp2-client");
    }
    if (opts.callgrind || opts.with_callgrind) && !have("valgrind") {
        missing.push("valgrind");
    }
    if opts.contenders.contains(&Contender::Nginx) && !have("nginx") {
        missing.push("nginx-light");
    }
    if opts.contenders.contains(&Contender::Haproxy) && !have("haproxy") {
        missing.push("haproxy");
    }
    if opts.contenders.contains(&Contender::Pingora) && opts.pingora_bin.is_none() {
        // libz-ng-sys, under pingora-core's flate2, builds zlib-ng with cmake.
        if !have("cmake") {
            missing.push("cmake");
        }
    }
    missing
}

/// Makes sure oha, taskset, the other load tools and the proxies are there, installing them
/// when allowed (oha with cargo, the rest from Debian's packages), or saying what to install.
pub(super) fn check(opts: &Options) -> Result<(), String> {
    if !have("oha") {
        if !opts.install {
            return Err("the load tool is missing: cargo install oha --locked".into());
        }
        eprintln!("compare: installing the load tool (cargo install oha --locked)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["install", "oha", "--locked"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !have("oha") {
            return Err(
                "could not install oha: run `cargo install oha --locked` and put \
                 ~/.cargo/bin on PATH"
                    .into(),
            );
        }
    }
    if opts.pin && !have("taskset") {
        return Err("taskset is missing: apt-get install -y util-linux (or pass --no-pin)".into());
    }
    let missing = missing_packages(opts);
    if missing.is_empty() {
        return Ok(());
    }
    let what = format!("apt-get install -y {}", missing.join(" "));
    if !opts.install {
        return Err(format!(
            "missing: {what} (or bash scripts/install-bench-deps.sh; or leave contenders out \
             with --only)"
        ));
    }
    eprintln!("compare: installing {} ({what})", missing.join(", "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(format!(
            "could not install them; as root: apt-get update && {what} (or --only direct,weir)"
        ));
    }
    Ok(())
}

/// The workspace this crate sits in (`tools/bench-compare` -> `.`): where the lesson's config,
/// `target/` and `benches/results/` are.
pub(super) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tools/bench-compare sits two levels below the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo_build(what: &str, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("compare: building {what} in release");
    let ok = Command::new(cargo)
        .arg("build")
        .args(args)
        .current_dir(workspace_root())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!("cargo build {} failed", args.join(" ")))
    }
}

/// `cargo build --release -p weir`, unless a binary was given.
pub(super) fn weir_binary(opts: &Options) -> Result<PathBuf, String> {
    if let Some(bin) = &opts.weir_bin {
        return Ok(bin.clone());
    }
    cargo_build("weir", &["--release", "-p", "weir", "--bin", "weir"])?;
    Ok(target_dir().join("release").join("weir"))
}

/// `tools/pingora-split` in release, unless a binary was given. It is its own workspace (its
/// ~200 crates stay out of the main build), built into `target/pingora-split/`.
pub(super) fn pingora_binary(opts: &Options) -> Result<PathBuf, String> {
    if let Some(bin) = &opts.pingora_bin {
        return Ok(bin.clone());
    }
    let target = target_dir().join("pingora-split");
    let manifest = workspace_root().join("tools/pingora-split/Cargo.toml");
    cargo_build(
        "pingora-split",
        &[
            "--release",
            "--locked",
            "--manifest-path",
            &manifest.display().to_string(),
            "--target-dir",
            &target.display().to_string(),
        ],
    )?;
    Ok(target.join("release").join("pingora-split"))
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// The pingora-proxy version `tools/pingora-split/Cargo.lock` pins.
fn pingora_version() -> String {
    let lock = std::fs::read_to_string(workspace_root().join("tools/pingora-split/Cargo.lock"))
        .unwrap_or_default();
    lock.split("[[package]]")
        .find(|p| p.contains("name = \"pingora-proxy\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or("unknown".into(), |v| v.trim_matches('"').to_string())
}

/// `(tool, version)` of everything the run used.
pub(super) fn versions(opts: &Options) -> Vec<(String, String)> {
    let mut v = vec![(
        "oha".to_string(),
        first_line("oha", &["--version"]).replace("oha ", ""),
    )];
    let uses = |tool: LoadTool| opts.shapes.iter().any(|s| s.tool == tool);
    if uses(LoadTool::Wrk) {
        let line = first_line("wrk", &["-v"]);
        let version = line.split_whitespace().nth(1).unwrap_or(&line).to_string();
        v.push(("wrk".into(), version));
    }
    if uses(LoadTool::AbKeepAlive) {
        let line = first_line("ab", &["-V"]);
        let version = line
            .split("Version ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or(&line)
            .to_string();
        v.push(("ab".into(), version));
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let rev = first_line("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
    let dirty = !first_line(
        "git",
        &["-C", dir, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    v.push((
        "weir".into(),
        format!("{rev}{}", if dirty { "+dirty" } else { "" }),
    ));
    if opts.contenders.contains(&Contender::Nginx) {
        v.push((
            "nginx".into(),
            first_line("nginx", &["-v"]).replace("nginx version: nginx/", ""),
        ));
    }
    if opts.contenders.contains(&Contender::Haproxy) {
        let line = first_line("haproxy", &["-v"]);
        let version = line.split_whitespace().nth(2).unwrap_or(&line).to_string();
        v.push(("haproxy".into(), version));
    }
    if opts.contenders.contains(&Contender::Pingora) {
        v.push(("pingora-proxy".into(), pingora_version()));
    }
    v
}
