//! A whole comparison: tools checked, weir built, every contender measured round after round,
//! the table written. [`main`] is what both entry points call.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::args::{self, Contender, Options};
use crate::callgrind::Counts;
use crate::machine;
use crate::process::ProxyEnv;
use crate::report::{self, Report, Row, RunInfo};
use crate::{shapes, summary, upstream};

/// How the harness was started, which decides whether it runs and how it names itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The root package's `compare` bench target: runs only under `cargo bench` (which passes
    /// `--bench`), so that `cargo test --benches` and CI's build do not start a load.
    CargoBench,
    /// The `bench-compare` binary (`cargo run --release -p bench-compare -- ...`): always runs.
    Binary,
}

impl Entry {
    /// The command that reproduces a run, as written into the results.
    fn command(self, shown: &[&str]) -> String {
        let base = match self {
            Entry::CargoBench => "cargo bench --bench compare",
            Entry::Binary => "cargo run --release -p bench-compare",
        };
        if shown.is_empty() {
            base.to_string()
        } else {
            format!("{base} -- {}", shown.join(" "))
        }
    }
}

/// Runs the harness with the arguments after the program name; the exit code is the process's.
/// `upstreams THREADS BODY` as the first arguments runs the two upstream servers instead (the
/// harness starts itself again that way).
pub fn main(argv: Vec<String>, entry: Entry) -> ExitCode {
    if argv.first().map(String::as_str) == Some("upstreams") {
        let threads = argv.get(1).and_then(|t| t.parse().ok()).unwrap_or(1);
        let body = argv.get(2).and_then(|b| b.parse().ok()).unwrap_or(1024);
        upstream::run(threads, body);
    }
    let opts = match args::parse(argv.clone()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("compare: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    if entry == Entry::CargoBench && !opts.bench_mode {
        println!(
            "compare: not run outside `cargo bench` (try `cargo bench --bench compare`, or \
             `cargo run --release -p bench-compare`)"
        );
        return ExitCode::SUCCESS;
    }
    let shown: Vec<&str> = argv
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let command = entry.command(&shown);
    match run(&opts, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

mod callgrind;
mod measure;
mod tools;

/// Where results go: `--out`, relative to the workspace root.
fn out_dir(opts: &Options) -> Option<PathBuf> {
    opts.out_dir.as_ref().map(|dir| {
        if dir.is_absolute() {
            dir.clone()
        } else {
            tools::workspace_root().join(dir)
        }
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("compare: wrote {}", path.display());
    Ok(())
}

fn pinning_note(opts: &Options, cores: usize) -> String {
    if !(opts.pin && cores >= 2) {
        return "No pinning: all processes share every CPU.".into();
    }
    let mut threads: Vec<u32> = opts.shapes.iter().map(|s| s.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let t: Vec<String> = threads
        .into_iter()
        .map(|t| {
            let p = measure::placement(opts, t, cores);
            match (p.proxy, p.load) {
                (Some(proxy), Some(load)) => format!(
                    "{t} worker(s): proxy on CPU {proxy}, load tool + upstreams on CPU {load}"
                ),
                _ => format!("{t} worker(s): all processes share every CPU"),
            }
        })
        .collect();
    format!("Pinning (taskset): {}.", t.join("; "))
}

fn run(opts: &Options, command: String) -> Result<(), String> {
    tools::check(opts)?;
    let weir = if opts.contenders.contains(&Contender::Weir) {
        tools::weir_binary(opts)?
    } else {
        PathBuf::from("weir")
    };
    let pingora = if opts.contenders.contains(&Contender::Pingora) {
        tools::pingora_binary(opts)?
    } else {
        PathBuf::from("pingora-split")
    };
    let lesson_path = tools::workspace_root().join("config/payment-svc.yaml");
    let lesson_yaml = std::fs::read_to_string(&lesson_path)
        .map_err(|e| format!("{}: {e}", lesson_path.display()))?;
    let env = ProxyEnv {
        weir: &weir,
        pingora: &pingora,
        lesson_yaml: &lesson_yaml,
        cpus: None,
        callgrind_out: None,
    };
    if opts.callgrind {
        let counts = callgrind::run(opts, &env)?;
        return write_callgrind(opts, &counts, &command);
    }
    let scratch = tempfile::Builder::new()
        .prefix("weir-compare-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let wrk_script = scratch.path().join("summary.lua");
    std::fs::write(&wrk_script, crate::wrk::SCRIPT)
        .map_err(|e| format!("{}: {e}", wrk_script.display()))?;
    let bench = measure::Bench {
        opts,
        env,
        wrk_script: &wrk_script,
    };

    let machine = machine::Machine::current();
    let load_before = machine::loadavg();
    if load_before[0] > 0.5 {
        eprintln!(
            "compare: load average {:.2}: something else is running, figures will be noisy",
            load_before[0]
        );
    }
    let mut report = Report {
        run: RunInfo {
            command: command.clone(),
            duration_s: opts.duration.as_secs_f64(),
            connections: opts.connections,
            rate: opts.rate,
            rounds: opts.rounds,
            body_bytes: opts.body_bytes,
            pinning: pinning_note(opts, machine.cores),
            versions: tools::versions(opts),
            load_before,
            load_after: [0.0; 3],
        },
        machine,
        rows: Vec::new(),
    };
    let mut failures = Vec::new();
    let nginx = opts.contenders.iter().position(|&c| c == Contender::Nginx);
    for shape in &opts.shapes {
        let place = measure::placement(opts, shape.threads, report.machine.cores);
        // Rounds interleave the contenders, so that a burst of noise from another process
        // lands on one round of several contenders rather than on every round of one.
        let mut rounds: Vec<Vec<Option<Row>>> = vec![Vec::new(); opts.contenders.len()];
        for round in 1..=opts.rounds {
            for (i, &contender) in opts.contenders.iter().enumerate() {
                eprintln!(
                    "compare: {} in {} ({}), round {round}/{}",
                    contender.name(),
                    shape.name,
                    shape.title,
                    opts.rounds
                );
                measure::wait_for_quiet(opts.settle);
                match measure::measure(&bench, contender, shape, &place) {
                    Ok(row) => {
                        eprintln!(
                            "compare:   {:.0} req/s max{}, split {}, others' CPU {:.0}%",
                            row.saturation.rps,
                            row.fixed.map_or(String::new(), |f| format!(
                                ", p99 {:.3} ms at {} req/s",
                                f.p99_ms, opts.rate
                            )),
                            row.split.map_or("v1 only".into(), |s| s.render()),
                            row.others_cpu_percent[0].max(row.others_cpu_percent[1]),
                        );
                        rounds[i].push(Some(row));
                    }
                    Err(e) => {
                        eprintln!("compare:   FAILED: {e}");
                        failures.push(format!(
                            "{} ({}, round {round}): {e}",
                            contender.name(),
                            shape.name
                        ));
                        rounds[i].push(None);
                    }
                }
            }
        }
        let ratios = nginx.map(|n| report::ratios_by_round(&rounds, n));
        for (i, runs) in rounds.iter().enumerate() {
            let ok: Vec<Row> = runs.iter().flatten().cloned().collect();
            if let Some(mut row) = report::median_row(&ok) {
                if let Some(r) = &ratios {
                    row.rounds_vs_nginx = r[i].clone();
                }
                report.rows.push(row);
            }
        }
    }
    report.run.load_after = machine::loadavg();
    let counts = if opts.with_callgrind {
        match callgrind::run(opts, &bench.env) {
            Ok(c) => Some(c),
            Err(e) => {
                failures.push(format!("callgrind: {e}"));
                None
            }
        }
    } else {
        None
    };
    let mut md = report::render_markdown(&report);
    if !failures.is_empty() {
        md.push_str("\nNot measured:\n\n");
        for f in &failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    let summary = summary::render(&report, counts.as_ref());
    println!("{md}\n{summary}");
    if let Some(dir) = out_dir(opts) {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut json = report::render_json(&report);
        json["not_measured"] = serde_json::json!(failures);
        if let Some(c) = &counts {
            json["callgrind"] = callgrind_json(c);
        }
        let date = &report.machine.date;
        write_file(&dir.join(format!("{date}.md")), &md)?;
        write_file(
            &dir.join(format!("{date}.json")),
            &(serde_json::to_string_pretty(&json).unwrap_or_default() + "\n"),
        )?;
        write_file(&dir.join("latest.md"), &md)?;
        write_file(&dir.join("summary.md"), &summary)?;
        if let Some(c) = &counts {
            write_callgrind(opts, c, &command)?;
        }
        let full = opts.shapes == shapes::standard()
            && opts.contenders == Contender::ALL
            && counts.is_some()
            && opts.out_dir == Options::default().out_dir;
        if full {
            let path = tools::workspace_root().join("README.md");
            let readme =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            write_file(&path, &summary::replace_block(&readme, &summary)?)?;
        } else {
            eprintln!(
                "compare: README.md left alone (not a full run: every shape, every contender, \
                 the callgrind counts, into benches/results)"
            );
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} run(s) failed", failures.len()))
    }
}

fn callgrind_json(c: &Counts) -> serde_json::Value {
    serde_json::json!({
        "requests": c.requests,
        "connections": c.connections,
        "load_tool": "h2load",
        "instructions_per_request": c
            .per_request
            .iter()
            .map(|(p, n)| (p.name().to_string(), serde_json::json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "notes": c.notes,
    })
}

fn write_callgrind(opts: &Options, counts: &Counts, command: &str) -> Result<(), String> {
    let md = crate::callgrind::render_markdown(counts, &machine::Machine::current(), command);
    println!("{md}");
    if let Some(dir) = out_dir(opts) {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write_file(&dir.join("callgrind-latest.md"), &md)?;
    }
    Ok(())
}
