//! The comparison harness's own logic, tested without running a load: option parsing, the
//! three proxies' configs, oha's JSON, /proc parsing, the split check and the table.
//! `cargo test -p bench-compare`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bench_compare::args::{self, Contender};
use bench_compare::configs::{self, Routing};
use bench_compare::oha::{self, LoadStats};
use bench_compare::report::{self, Report, Resources, Row, RunInfo, Split};
use bench_compare::shapes::{self, LoadTool, Shape};
use bench_compare::{ab, callgrind, h2load, machine, process, procfs, summary, upstream, wrk};

fn routing(threads: u32) -> Routing {
    Routing {
        listen: "127.0.0.1:40000".parse().unwrap(),
        v1: "127.0.0.1:40001".parse().unwrap(),
        v2: "127.0.0.1:40002".parse().unwrap(),
        v1_weight: 90,
        threads,
    }
}

fn lesson_yaml() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/payment-svc.yaml"),
    )
    .unwrap()
}

// === args ===

#[test]
fn args_defaults_and_cargo_bench_flag() {
    let o = args::parse(["--bench"]).unwrap();
    assert!(o.bench_mode);
    assert_eq!(o.duration, Duration::from_secs(10));
    assert_eq!(o.threads, vec![1, 2]);
    assert_eq!(o.contenders, Contender::ALL.to_vec());
    assert!(o.pin && o.install);

    let o = args::parse(Vec::<String>::new()).unwrap();
    assert!(
        !o.bench_mode,
        "without --bench (cargo test --benches) nothing runs"
    );
}

/// Command line -> what must hold of the options.
type ArgsRow = (&'static [&'static str], fn(&args::Options) -> bool);

#[test]
fn args_table() {
    let rows: &[ArgsRow] = &[
        (&["--duration", "3s"], |o| {
            o.duration == Duration::from_secs(3)
        }),
        (&["--duration=500ms"], |o| {
            o.duration == Duration::from_millis(500)
        }),
        (&["--duration", "2m"], |o| {
            o.duration == Duration::from_secs(120)
        }),
        (&["--duration", "7"], |o| {
            o.duration == Duration::from_secs(7)
        }),
        (&["--threads", "1,2,4"], |o| o.threads == vec![1, 2, 4]),
        (&["--rounds", "5"], |o| o.rounds == 5),
        (&["--settle", "0"], |o| o.settle == Duration::ZERO),
        (&["--settle", "5m"], |o| {
            o.settle == Duration::from_secs(300)
        }),
        (&["--only", "direct,weir"], |o| {
            o.contenders == vec![Contender::Direct, Contender::Weir]
        }),
        (&["--rate", "5000", "-c", "64"], |o| {
            o.rate == 5000 && o.connections == 64
        }),
        (&["--no-pin", "--no-install", "--no-out"], |o| {
            !o.pin && !o.install && o.out_dir.is_none()
        }),
        (&["--weir", "/x/weir", "--body", "2048"], |o| {
            o.weir_bin.as_deref() == Some(Path::new("/x/weir")) && o.body_bytes == 2048
        }),
    ];
    for (argv, check) in rows {
        let o = args::parse(argv.iter().copied()).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(check(&o), "{argv:?} parsed as {o:?}");
    }
}

#[test]
fn args_errors_say_what_is_wrong() {
    let rows: &[(&[&str], &str)] = &[
        (&["--duration", "10x"], "unknown unit"),
        (&["--duration", "0s"], "longer than zero"),
        (&["--duration"], "needs a value"),
        (&["--threads", "0"], "positive"),
        (&["--threads", ""], "empty"),
        (&["--only", "envoy"], "unknown contender `envoy`"),
        (&["--frobnicate"], "unknown option"),
    ];
    for (argv, want) in rows {
        let e = args::parse(argv.iter().copied()).unwrap_err();
        assert!(e.contains(want), "{argv:?}: `{e}` lacks `{want}`");
    }
}

// === configs ===

#[test]
fn weir_config_is_the_lesson_with_live_ports() {
    let yaml = configs::weir_config(&lesson_yaml(), &routing(1)).unwrap();
    assert!(yaml.contains("http: 40001") && yaml.contains("http: 40002"));
    assert!(!yaml.contains(": 18081") && !yaml.contains(": 18082"));
    assert!(
        yaml.contains("x-canary") && yaml.contains("weight: 90") && yaml.contains("weight: 10")
    );
    // v1's port stays on the v1 endpoint.
    let v1_port = yaml.find("http: 40001").unwrap();
    let v1_label = yaml[v1_port..].find("version: v1").unwrap();
    let v2_label = yaml[v1_port..].find("version: v2").unwrap();
    assert!(v1_label < v2_label);
}

#[test]
fn weir_config_refuses_a_lesson_it_cannot_rewrite() {
    let lesson = lesson_yaml();
    let no_ports = lesson.replace(": 18081", ": 9");
    assert!(
        configs::weir_config(&no_ports, &routing(1))
            .unwrap_err()
            .contains("18081")
    );
    let other_split = lesson.replace("weight: 90", "weight: 80");
    assert!(
        configs::weir_config(&other_split, &routing(1))
            .unwrap_err()
            .contains("90/10")
    );
    let mut far = routing(1);
    far.v1 = "10.0.0.1:1".parse().unwrap();
    assert!(configs::weir_config(&lesson, &far).is_err());
}

#[test]
fn nginx_config_splits_by_request_and_honours_the_header() {
    let conf = configs::nginx_config(&routing(2), Path::new("/tmp/run"));
    for want in [
        "daemon off;",
        "worker_processes 2;",
        "pid /tmp/run/nginx.pid;",
        "error_log /tmp/run/error.log warn;",
        "proxy_temp_path /tmp/run/proxy;",
        "access_log off;",
        "server 127.0.0.1:40001;",
        "server 127.0.0.1:40002;",
        "keepalive 1024;",
        "split_clients \"${request_id}\" $split_pool {",
        "90% v1;",
        "* v2;",
        "map $http_x_canary $pool {",
        "\"true\" v2;",
        "default $split_pool;",
        "listen 127.0.0.1:40000",
        "proxy_pass http://$pool;",
        "proxy_http_version 1.1;",
        "proxy_set_header Connection \"\";",
    ] {
        assert!(conf.contains(want), "nginx.conf lacks `{want}`:\n{conf}");
    }
    assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    assert!(!conf.contains("/var/"), "nothing outside the run's dir");
}

#[test]
fn haproxy_config_weights_and_header_acl() {
    let conf = configs::haproxy_config(&routing(1));
    for want in [
        "nbthread 1",
        "httpclient.ssl.verify none",
        "mode http",
        "http-reuse always",
        "bind 127.0.0.1:40000",
        "use_backend canary if { req.hdr(x-canary) -m str true }",
        "default_backend split",
        "server v1 127.0.0.1:40001 weight 90",
        "server v2 127.0.0.1:40002 weight 10",
        "backend canary\n    server v2 127.0.0.1:40002\n",
    ] {
        assert!(conf.contains(want), "haproxy.cfg lacks `{want}`:\n{conf}");
    }
    assert!(!conf.contains("daemon"), "runs in the foreground");
}

#[test]
fn haproxy_config_is_accepted_by_haproxy_when_installed() {
    // A check of the real syntax where HAProxy is there; CI without it skips.
    let Ok(out) = std::process::Command::new("haproxy").arg("-v").output() else {
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, configs::haproxy_config(&routing(2))).unwrap();
    let check = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn nginx_config_is_accepted_by_nginx_when_installed() {
    let Ok(out) = std::process::Command::new("nginx").arg("-v").output() else {
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, configs::nginx_config(&routing(2), dir.path())).unwrap();
    let check = std::process::Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

// === oha ===

const OHA_JSON: &str = r#"{
  "summary": {"successRate": 1.0, "total": 2.0, "requestsPerSec": 5000.0},
  "latencyPercentiles": {"p10": 0.0001, "p50": 0.00025, "p90": 0.0004, "p99": 0.0012,
                         "p99.9": 0.0031, "p99.99": 0.005},
  "statusCodeDistribution": {"200": 9990, "502": 4},
  "errorDistribution": {"connection closed before message completed": 6}
}"#;

#[test]
fn oha_json_gives_rate_percentiles_and_errors() {
    let s = oha::parse(OHA_JSON).unwrap();
    assert_eq!(s.requests, 9990);
    assert_eq!(s.errors, 10, "a 502 and a transport error are both errors");
    assert!((s.rps - 4995.0).abs() < 1e-9, "2xx per second of wall time");
    assert!((s.p50_ms - 0.25).abs() < 1e-9);
    assert!((s.p99_ms - 1.2).abs() < 1e-9);
    assert!((s.p999_ms - 3.1).abs() < 1e-9);
    assert!((s.duration_s - 2.0).abs() < 1e-9);
}

#[test]
fn oha_json_without_responses_or_with_garbage() {
    let empty = r#"{"summary": {"total": 1.0}, "latencyPercentiles": {"p50": null},
                    "statusCodeDistribution": {}, "errorDistribution": {}}"#;
    let s = oha::parse(empty).unwrap();
    assert_eq!((s.requests, s.errors), (0, 0));
    assert!(s.p50_ms.is_nan());
    assert!(oha::parse("Error: connection refused").is_err());
    assert!(oha::parse("{}").unwrap_err().contains("summary.total"));
}

#[test]
fn oha_args_fixed_rate_and_saturation() {
    let base = oha::LoadRun {
        url: "http://127.0.0.1:1/pay".into(),
        connections: 50,
        duration: Some(Duration::from_secs(10)),
        requests: 0,
        rate: None,
        headers: vec![],
        threads: 1,
    };
    let sat = oha::args(&base).join(" ");
    assert!(
        sat.contains("-c 50") && sat.contains("-z 10000ms -w"),
        "{sat}"
    );
    assert!(sat.contains("--host payment-svc") && sat.contains("--output-format json"));
    assert!(sat.contains("--worker-threads 1"));
    assert!(!sat.contains("-q") && !sat.contains("--latency-correction"));
    assert!(sat.ends_with("http://127.0.0.1:1/pay"));

    let fixed = oha::args(&oha::LoadRun {
        rate: Some(2000),
        ..base.clone()
    })
    .join(" ");
    assert!(fixed.contains("-q 2000 --latency-correction"), "{fixed}");

    let probe = oha::args(&oha::LoadRun {
        duration: None,
        requests: 200,
        headers: vec!["x-canary: true".into()],
        ..base
    });
    let joined = probe.join(" ");
    assert!(joined.contains("-n 200") && !joined.contains("-z"));
    let h = probe.iter().position(|a| a == "-H").unwrap();
    assert_eq!(
        probe[h + 1],
        "x-canary: true",
        "one argument, space and all"
    );
}

// === /proc ===

#[test]
fn proc_stat_fields_counted_from_the_last_paren() {
    // utime 1500, stime 250; the name holds a space and a paren.
    let line = "4242 (nginx: wor) ker) S 4240 4240 4240 0 -1 4194624 120 0 0 0 1500 250 0 0 20 0 1 0 \
                100 12345678 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    let s = procfs::parse_stat(line).unwrap();
    assert_eq!(s.ppid, 4240);
    assert_eq!(s.cpu_ticks, 1750);
    assert_eq!(s.user_ticks, 1500);
    assert_eq!(s.waited_children_ticks, 0);
    let waited = line.replace(" 1500 250 0 0 ", " 1500 250 70 30 ");
    assert_eq!(
        procfs::parse_stat(&waited).unwrap().waited_children_ticks,
        100
    );
    assert!(procfs::parse_stat("garbage").is_none());
}

#[test]
fn machine_ticks_busy_and_total() {
    // user nice system idle iowait irq softirq steal guest guest_nice
    let stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 0 0\n";
    assert_eq!(procfs::parse_machine_ticks(stat), Some((170, 990)));
    assert_eq!(procfs::parse_machine_ticks("intr 1 2 3\n"), None);
    let (busy, total) = procfs::machine_ticks();
    assert!(total > 0 && busy <= total);
}

#[test]
fn proc_status_peak_rss() {
    let status = "Name:\tweir\nVmPeak:\t  100000 kB\nVmHWM:\t    8123 kB\nVmRSS:\t    7000 kB\n";
    assert_eq!(procfs::parse_status_kib(status, "VmHWM"), Some(8123));
    assert_eq!(procfs::parse_status_kib(status, "VmRSS"), Some(7000));
    assert_eq!(procfs::parse_status_kib(status, "VmSwap"), None);
}

#[test]
fn process_tree_includes_grandchildren_only() {
    // 10 = nginx master; 11, 12 workers; 13 a worker's child; 20 an unrelated process.
    let parents: BTreeMap<u32, u32> = [(10, 1), (11, 10), (12, 10), (13, 12), (20, 1), (21, 20)]
        .into_iter()
        .collect();
    let mut t = procfs::descendants(10, &parents);
    t.sort();
    assert_eq!(t, vec![10, 11, 12, 13]);
    assert_eq!(procfs::descendants(99, &parents), vec![99]);
}

#[test]
fn this_process_has_usage() {
    let u = procfs::usage(std::process::id());
    assert!(u.processes >= 1 && u.peak_rss_kib > 0);
}

// === machine ===

#[test]
fn dates_from_epoch_seconds() {
    let rows = [
        (0, "1970-01-01", "00:00:00"),
        (951_782_400, "2000-02-29", "00:00:00"),
        (1_709_251_199, "2024-02-29", "23:59:59"),
        (1_798_761_600, "2027-01-01", "00:00:00"),
        (4_107_542_400, "2100-03-01", "00:00:00"),
    ];
    for (secs, date, time) in rows {
        assert_eq!(
            machine::utc_date_time(secs),
            (date.to_string(), time.to_string()),
            "{secs}"
        );
    }
}

#[test]
fn cpu_model_and_load_average() {
    let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
    assert_eq!(
        machine::cpu_model(cpuinfo).as_deref(),
        Some("AMD EPYC 7B13")
    );
    assert_eq!(machine::cpu_model("processor: 0\n"), None);
    assert_eq!(
        machine::parse_loadavg("0.27 0.19 0.09 1/85 10147\n"),
        Some([0.27, 0.19, 0.09])
    );
    assert_eq!(machine::parse_loadavg("x"), None);
}

// === upstreams and weir's ready line ===

#[test]
fn control_lines() {
    let v1: SocketAddr = "127.0.0.1:5001".parse().unwrap();
    let v2: SocketAddr = "127.0.0.1:5002".parse().unwrap();
    assert_eq!(
        upstream::parse_ready("upstreams v1=127.0.0.1:5001 v2=127.0.0.1:5002\n"),
        Some((v1, v2))
    );
    assert_eq!(
        upstream::parse_counts("counts v1=900 v2=100\n"),
        Some((900, 100))
    );
    assert_eq!(upstream::parse_counts("counts v1=x v2=1"), None);
    assert_eq!(
        process::parse_weir_ready("weir: ready proxy=127.0.0.1:4000 admin=127.0.0.1:4001\n"),
        Some("127.0.0.1:4000".parse().unwrap())
    );
    assert_eq!(process::parse_weir_ready("weir: starting"), None);
}

#[test]
fn taskset_wraps_only_when_pinned() {
    let c = process::pinned(Some("0"), "nginx");
    assert_eq!(c.get_program(), "taskset");
    let a: Vec<_> = c.get_args().collect();
    assert_eq!(a, ["-c", "0", "nginx"]);
    assert_eq!(process::pinned(None, "nginx").get_program(), "nginx");
}

// === split and report ===

#[test]
fn split_tolerance_is_one_point_of_90_10() {
    let rows = [
        (9000, 1000, true),
        (9100, 900, true),
        (8900, 1100, true),
        (9101, 899, false),
        (8899, 1101, false),
        (1000, 9000, false), // the 99/1 typo's cousin: reversed
        (10000, 0, false),
        (0, 0, false),
    ];
    for (v1, v2, ok) in rows {
        assert_eq!(Split { v1, v2 }.is_within_tolerance(), ok, "{v1}/{v2}");
    }
    assert_eq!(Split { v1: 9003, v2: 997 }.render(), "90.03/9.97");
}

fn stats(rps: f64, p99_ms: f64) -> LoadStats {
    LoadStats {
        requests: (rps * 10.0) as u64,
        errors: 0,
        rps,
        p50_ms: p99_ms / 3.0,
        p99_ms,
        p999_ms: p99_ms * 2.0,
        duration_s: 10.0,
    }
}

fn row(contender: Contender, threads: u32, rps: f64, p99_ms: f64) -> Row {
    Row {
        contender,
        shape: Shape::custom(threads, 50, 1024),
        threads,
        saturation: stats(rps, p99_ms * 5.0),
        fixed: Some(stats(2000.0, p99_ms)),
        keep_alive_percent: None,
        resources: contender.routes().then_some(Resources {
            cpu_s_per_10k: 1.5,
            saturation_cpu_percent: 99.0,
            user_us_per_request: 5.25,
            peak_rss_kib: 12 * 1024,
            processes: 1,
        }),
        others_cpu_percent: [3.0, 1.0],
        split: contender.routes().then_some(Split { v1: 9000, v2: 1000 }),
        header_rule_ok: contender.routes().then_some(true),
        rounds_rps: Vec::new(),
        rounds_vs_nginx: Vec::new(),
    }
}

fn sample_report() -> Report {
    Report {
        machine: machine::Machine {
            date: "2026-11-02".into(),
            time: "10:00:00".into(),
            cores: 2,
            kernel: "6.1.0".into(),
            cpu_model: "AMD EPYC".into(),
        },
        run: RunInfo {
            command: "cargo bench --bench compare -- --duration 10s".into(),
            duration_s: 10.0,
            connections: 50,
            rate: 5000,
            rounds: 1,
            body_bytes: 1024,
            pinning: "Pinning (taskset): 1 thread(s): proxy on CPU 0.".into(),
            versions: vec![("nginx".into(), "1.22.1".into())],
            load_before: [0.1, 0.2, 0.3],
            load_after: [1.0, 0.5, 0.3],
        },
        rows: vec![
            row(Contender::Direct, 1, 40000.0, 0.20),
            row(Contender::Weir, 1, 24000.0, 0.45),
            row(Contender::Nginx, 1, 20000.0, 0.50),
            row(Contender::Haproxy, 1, 22000.0, 0.48),
        ],
    }
}

#[test]
fn ratios_and_added_latency() {
    let r = sample_report();
    let weir = &r.rows[1];
    assert!((r.rps_ratio(weir, Contender::Direct).unwrap() - 0.6).abs() < 1e-9);
    assert!((r.rps_ratio(weir, Contender::Nginx).unwrap() - 1.2).abs() < 1e-9);
    assert!((r.added_p99_ms(weir).unwrap() - 0.25).abs() < 1e-9);
    let mut other_threads = weir.clone();
    other_threads.threads = 2;
    assert_eq!(
        r.rps_ratio(&other_threads, Contender::Nginx),
        None,
        "same threads only"
    );
}

#[test]
fn verdicts_against_design_targets() {
    let mut r = sample_report();
    let v = r.verdicts();
    assert_eq!(v.len(), 4);
    assert!(v.iter().all(|v| v.met == Some(true)), "{v:?}");

    r.rows[1].saturation.rps = 19000.0; // below nginx
    r.rows[1].fixed.as_mut().unwrap().p99_ms = 0.6; // +0.4 ms over direct
    r.rows[1].resources.as_mut().unwrap().peak_rss_kib = 30 * 1024;
    r.rows[3].split = Some(Split { v1: 5000, v2: 5000 });
    let v = r.verdicts();
    assert!(v.iter().all(|v| v.met == Some(false)), "{v:?}");
    assert!(v[3].measured.contains("haproxy (1 thr)"));
}

#[test]
fn markdown_table_has_every_row_and_the_machine() {
    let md = report::render_markdown(&sample_report());
    for want in [
        "2026-11-02",
        "2 cores (AMD EPYC), Linux 6.1.0",
        "Load average before: 0.10 0.20 0.30; after: 1.00 0.50 0.30",
        "`cargo bench --bench compare -- --duration 10s`",
        "| weir | 1 | 24000 | 0.60x | 1.20x | 0.150 | 0.450 | 0.900 | +0.250 | 1.500 | 99% | 5.25 | 12.0 | 0 | 90.00/10.00 | 3/1 | ok |",
        "| direct | 1 | 40000 | 1.00x | 2.00x | 0.067 | 0.200 | 0.400 | – | – | – | – | – | 0 | 100/0 (v1 only) | 3/1 | ok |",
        "100/0 (v1 only)",
        "| nginx | 1 | 20000 | 0.50x | 1.00x |",
        "weir throughput >= nginx (goal 1.2x): 1.20x — met",
        "nginx 1.22.1",
    ] {
        assert!(md.contains(want), "markdown lacks `{want}`:\n{md}");
    }
    let table_rows = md.lines().filter(|l| l.starts_with("| ")).count();
    assert!(
        !md.lines()
            .any(|l| l.starts_with("| ") && l.contains("(noisy)"))
    );
    assert_eq!(table_rows, 1 + 4, "header + one row per contender");
}

#[test]
fn a_broken_proxy_is_marked_broken_not_fast() {
    let mut r = sample_report();
    r.rows[2].split = Some(Split { v1: 9500, v2: 500 });
    r.rows[2].header_rule_ok = Some(false);
    r.rows[2].fixed.as_mut().unwrap().errors = 3;
    let md = report::render_markdown(&r);
    let line = md.lines().find(|l| l.starts_with("| nginx")).unwrap();
    assert!(line.contains("**BROKEN**"), "{line}");
    assert!(line.contains("3 errors") && line.contains("95.00/5.00 is off 90/10"));
    assert!(line.contains("x-canary rule broken"));
}

#[test]
fn json_mirrors_the_table() {
    let j = report::render_json(&sample_report());
    assert_eq!(j["date"], "2026-11-02");
    assert_eq!(j["machine"]["cores"], 2);
    assert_eq!(j["run"]["fixed_rate_rps"], 5000);
    assert_eq!(j["run"]["load_average_before"][0], 0.1);
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["contender"], "direct");
    assert!(rows[0]["split"].is_null() && rows[0]["p99_added_ms"].is_null());
    assert!(
        rows[0]["peak_rss_kib"].is_null(),
        "direct has no proxy to measure"
    );
    assert_eq!(rows[1]["peak_rss_kib"], 12 * 1024);
    assert_eq!(rows[1]["user_us_per_request_at_saturation"], 5.25);
    assert_eq!(rows[1]["others_cpu_percent"]["saturation"], 3.0);
    assert_eq!(rows[1]["split"]["v2_percent"], 10.0);
    assert_eq!(rows[1]["saturation"]["requests_per_second"], 24000.0);
    assert!((rows[1]["rps_vs_nginx"].as_f64().unwrap() - 1.2).abs() < 1e-9);
    assert_eq!(j["targets"].as_array().unwrap().len(), 4);
}

#[test]
fn rounds_fold_into_medians() {
    let mut a = row(Contender::Weir, 1, 60000.0, 0.20);
    let mut b = row(Contender::Weir, 1, 30000.0, 0.90); // a noisy round
    let c = row(Contender::Weir, 1, 62000.0, 0.25);
    a.others_cpu_percent = [2.0, 1.0];
    b.others_cpu_percent = [40.0, 9.0];
    b.resources.as_mut().unwrap().peak_rss_kib = 14 * 1024;
    b.split = Some(Split { v1: 900, v2: 100 });
    b.saturation.errors = 2;
    let m = report::median_row(&[a, b, c]).unwrap();
    assert_eq!(m.saturation.rps, 60000.0, "the outlier round is ignored");
    assert_eq!(m.fixed.unwrap().p99_ms, 0.25);
    assert_eq!(
        m.resources.unwrap().peak_rss_kib,
        14 * 1024,
        "the largest peak"
    );
    assert_eq!(m.others_cpu_percent, [40.0, 9.0], "the worst noise");
    assert_eq!(
        m.split,
        Some(Split {
            v1: 18900,
            v2: 2100
        }),
        "counts add up"
    );
    assert_eq!(m.saturation.errors, 2);
    assert_eq!(m.header_rule_ok, Some(true));
    assert_eq!(m.rounds_rps, vec![60000.0, 30000.0, 62000.0]);

    let mut r = sample_report();
    r.rows[1] = m;
    r.rows[1].saturation.errors = 0;
    let md = report::render_markdown(&r);
    assert!(md.contains("| weir | 1 | 60000 ±27% |"), "{md}");
    let weir = md.lines().find(|l| l.starts_with("| weir")).unwrap();
    assert!(weir.ends_with("| 40/9 | ok (noisy) |"), "{weir}");

    let mut broken = row(Contender::Nginx, 1, 1.0, 1.0);
    broken.header_rule_ok = Some(false);
    let m = report::median_row(&[row(Contender::Nginx, 1, 1.0, 1.0), broken]).unwrap();
    assert_eq!(m.header_rule_ok, Some(false), "broken once is broken");
    assert!(report::median_row(&[]).is_none());
}

// === callgrind ===

const ANNOTATE: &str = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
563,087,394 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
45,391,572 ( 8.06%)  ./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
16,769,047 ( 2.98%)  /rustc/5980/library/core/src/hash/sip.rs:<core::hash::sip::Hasher<S> as core::hash::Hasher>::write [/work/main/target/release/weir]
 1,000 ( 0.00%)  /a/headers.rs:weir::proxy::headers::set_forwarded [/work/main/target/release/weir]
 2,000 ( 0.00%)  /b/headers.rs:weir::proxy::headers::set_forwarded [/work/main/target/release/weir]
   512 ( 0.00%)  ???:0x0000000000012345 [/usr/lib/ld.so]
";

#[test]
fn callgrind_annotate_output_by_function() {
    let a = callgrind::parse_annotate(ANNOTATE);
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a["__memcpy_avx_unaligned_erms"], 45_391_572);
    assert_eq!(
        a["<core::hash::sip::Hasher<S> as core::hash::Hasher>::write"],
        16_769_047
    );
    assert_eq!(
        a["weir::proxy::headers::set_forwarded"], 3_000,
        "the same function from two files adds up"
    );
    assert!(!a.keys().any(|k| k.contains("PROGRAM TOTALS")));
    assert!(a.contains_key("0x0000000000012345"));
}

#[test]
fn callgrind_totals_and_per_request_costs() {
    let out = "events: Ir\nfn=main\n0 5\nsummary: 132319939\ntotals: 132320117\n";
    assert_eq!(callgrind::parse_totals(out), Some(132_320_117));
    assert_eq!(callgrind::parse_totals("summary: 7\n"), Some(7));
    assert_eq!(callgrind::parse_totals("events: Ir\n"), None);

    let short: BTreeMap<String, u64> = [("a".to_string(), 1_000), ("b".to_string(), 500)].into();
    let long: BTreeMap<String, u64> = [
        ("a".to_string(), 21_000),
        ("b".to_string(), 500),
        ("c".to_string(), 40_000),
    ]
    .into();
    let top = callgrind::per_request_top(&short, &long, 10, 5);
    assert_eq!(
        top,
        vec![(4_000.0, "c".to_string()), (2_000.0, "a".to_string())],
        "start-up only costs (b) are not per request"
    );
    assert_eq!(callgrind::per_request_top(&short, &long, 10, 1).len(), 1);
}

// === shapes ===

#[test]
fn standard_shapes_are_issue_13s() {
    let s = shapes::standard();
    let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["50c", "50c-2w", "1c", "1000c", "64k", "http10"]);
    let by = |n: &str| s.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!((by("50c").threads, by("50c").connections), (1, 50));
    assert_eq!(by("50c-2w").threads, 2);
    assert_eq!(by("1c").connections, 1);
    assert_eq!(by("1000c").connections, 1000);
    assert!(by("1000c").rss_vs_nginx && !by("50c").rss_vs_nginx);
    assert_eq!(by("64k").body_bytes, 65536);
    assert_eq!(by("http10").tool, LoadTool::AbKeepAlive);
    assert!(
        s.iter()
            .filter(|s| s.name != "http10")
            .all(|s| s.tool == LoadTool::Wrk)
    );
    assert!(by("50c").fixed_rate && by("50c-2w").fixed_rate && !by("1000c").fixed_rate);
    assert_eq!(
        (by("50c").goal_vs_nginx, by("1000c").goal_vs_nginx),
        (1.2, 1.0)
    );
}

#[test]
fn args_shapes_named_or_custom() {
    let o = args::parse(["--shapes", "1000c,http10"]).unwrap();
    let names: Vec<&str> = o.shapes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["1000c", "http10"]);
    assert_eq!(args::parse(["--bench"]).unwrap().shapes, shapes::standard());

    let o = args::parse(["--threads", "1,2", "-c", "64", "--body", "2048"]).unwrap();
    assert_eq!(o.shapes.len(), 2);
    assert!(o.shapes.iter().all(|s| s.tool == LoadTool::Oha
        && s.connections == 64
        && s.body_bytes == 2048
        && s.fixed_rate));
    assert_eq!(o.shapes[1].threads, 2);

    let e = args::parse(["--shapes", "9c"]).unwrap_err();
    assert!(
        e.contains("unknown shape `9c`") && e.contains("1000c"),
        "{e}"
    );
    let e = args::parse(["--shapes", "1c", "--threads", "2"]).unwrap_err();
    assert!(e.contains("one or the other"), "{e}");

    let o = args::parse(["--only", "pingora", "--pingora", "/x/p", "--no-callgrind"]).unwrap();
    assert_eq!(o.contenders, [Contender::Pingora]);
    assert_eq!(o.pingora_bin.as_deref(), Some(Path::new("/x/p")));
    assert!(!o.with_callgrind && args::Options::default().with_callgrind);
    assert_eq!(Contender::parse("pingora"), Some(Contender::Pingora));
    assert!(Contender::Pingora.routes());
}

// === wrk, ab, h2load ===

fn load_run(connections: u32, threads: u32) -> oha::LoadRun {
    oha::LoadRun {
        url: "http://127.0.0.1:40000/pay".into(),
        connections,
        duration: Some(Duration::from_secs(4)),
        requests: 0,
        rate: None,
        headers: vec!["x-canary: true".into()],
        threads,
    }
}

#[test]
fn wrk_args_and_summary_line() {
    let a = wrk::args(&load_run(1000, 1), "/tmp/s.lua");
    let joined = a.join(" ");
    assert!(
        joined.starts_with("-t 1 -c 1000 -d 4s --timeout 10s -s /tmp/s.lua -H Host: payment-svc"),
        "{joined}"
    );
    assert!(joined.ends_with("-H x-canary: true http://127.0.0.1:40000/pay"));
    let a = wrk::args(&load_run(1, 4), "/tmp/s.lua");
    assert_eq!(a[1], "1", "no more wrk threads than connections");
    assert!(wrk::SCRIPT.contains("done = function(summary, latency, requests)"));

    let out = "Running 4s test @ http://127.0.0.1:40000/pay\n  1 threads and 50 connections\n\
               WRK {\"requests\":200000,\"duration_us\":4000000,\"connect\":0,\"read\":3,\
               \"write\":0,\"status\":7,\"timeout\":2,\"p50_us\":610,\"p99_us\":1500,\
               \"p999_us\":4100}\n";
    let s = wrk::parse(out).unwrap();
    assert_eq!(s.requests, 199_993, "non-2xx responses are not throughput");
    assert_eq!(s.errors, 3 + 7 + 2);
    assert!((s.rps - 49_998.25).abs() < 1e-6);
    assert_eq!((s.p50_ms, s.p99_ms, s.p999_ms), (0.61, 1.5, 4.1));
    assert_eq!(s.duration_s, 4.0);
    assert!(
        wrk::parse("unable to connect")
            .unwrap_err()
            .contains("no summary line")
    );
    assert!(
        wrk::parse("WRK {\"requests\":1}")
            .unwrap_err()
            .contains("lacks")
    );
}

const AB: &str = "\
Server Software:        nginx/1.22.1
Concurrency Level:      50
Time taken for tests:   4.001 seconds
Complete requests:      80020
Failed requests:        0
Non-2xx responses:      20
Keep-Alive requests:    79000
Requests per second:    20000.00 [#/sec] (mean)

Percentage of the requests served within a certain time (ms)
  50%      2
  66%      2
  99%      6
 100%     12 (longest request)
";

#[test]
fn ab_keep_alive_args_and_report() {
    let a = ab::args(&load_run(50, 1));
    let joined = a.join(" ");
    assert!(joined.starts_with("-k -q -c 50 -t 4 -n 100000000 -H Host: payment-svc"));
    let t = a.iter().position(|x| x == "-t").unwrap();
    let n = a.iter().position(|x| x == "-n").unwrap();
    assert!(n > t, "-n after -t, or -t caps the run at 50,000 requests");

    let s = ab::parse(AB).unwrap();
    assert_eq!(s.keep_alive, 79_000);
    assert_eq!(s.load.requests, 80_000);
    assert_eq!(s.load.errors, 20);
    assert!((s.load.rps - 80_000.0 / 4.001).abs() < 1e-6);
    assert_eq!((s.load.p50_ms, s.load.p99_ms), (2.0, 6.0));
    assert!(s.load.p999_ms.is_nan(), "ab has no p99.9");
    let e = ab::parse("apr_socket_recv: Connection refused (111)").unwrap_err();
    assert!(e.contains("Complete requests:"), "{e}");
}

#[test]
fn h2load_fixed_count_args_and_report() {
    let a = h2load::args("http://127.0.0.1:1/pay", 20_000, 10).join(" ");
    assert_eq!(
        a,
        "--h1 -n 20000 -c 10 -t 1 -H :authority: payment-svc http://127.0.0.1:1/pay"
    );
    let out = "finished in 2.20s, 91.04 req/s, 101.17KB/s\n\
               requests: 200 total, 200 started, 200 done, 198 succeeded, 2 failed, 0 errored, 0 timeout\n\
               status codes: 197 2xx, 0 3xx, 1 4xx, 0 5xx\n";
    assert_eq!(h2load::parse(out), Ok((198, 197)));
    assert!(
        h2load::parse("connect error")
            .unwrap_err()
            .contains("succeeded")
    );
}

#[test]
fn pingora_gets_the_same_routing() {
    let a = configs::pingora_args(&routing(2), Path::new("/tmp/run")).join(" ");
    assert_eq!(
        a,
        "--listen 127.0.0.1:40000 --v1 127.0.0.1:40001 --v2 127.0.0.1:40002 --v1-weight 90 \
         --threads 2 --dir /tmp/run"
    );
}

// === shapes in the report ===

fn shaped(contender: Contender, shape: &str, rps: f64, rss_mib: u64) -> Row {
    let shape = Shape::named(shape).unwrap();
    let mut r = row(contender, shape.threads, rps, 0.3);
    if !shape.fixed_rate {
        r.fixed = None;
    }
    if let Some(res) = r.resources.as_mut() {
        res.peak_rss_kib = rss_mib * 1024;
    }
    if shape.tool == LoadTool::AbKeepAlive {
        r.keep_alive_percent = Some(if contender == Contender::Weir {
            0.0
        } else {
            100.0
        });
    }
    r.shape = shape;
    r
}

fn shaped_report() -> Report {
    let mut r = sample_report();
    r.rows = vec![
        shaped(Contender::Direct, "1000c", 90_000.0, 0),
        shaped(Contender::Weir, "1000c", 30_000.0, 81),
        shaped(Contender::Nginx, "1000c", 40_000.0, 27),
        shaped(Contender::Pingora, "1000c", 20_000.0, 30),
        shaped(Contender::Weir, "http10", 20_000.0, 12),
        shaped(Contender::Nginx, "http10", 25_000.0, 18),
        shaped(Contender::Weir, "50c", 60_000.0, 12),
        shaped(Contender::Nginx, "50c", 40_000.0, 18),
        shaped(Contender::Direct, "50c", 90_000.0, 0),
    ];
    r.rows[1].rounds_vs_nginx = vec![0.53, 0.77, 0.74];
    r
}

#[test]
fn ratios_by_round_pair_the_same_round() {
    let weir = |rps| Some(row(Contender::Weir, 1, rps, 0.3));
    let nginx = |rps| Some(row(Contender::Nginx, 1, rps, 0.3));
    let rounds = vec![
        vec![weir(30.0), weir(40.0), weir(50.0)],
        vec![nginx(60.0), None, nginx(25.0)],
    ];
    let r = report::ratios_by_round(&rounds, 1);
    assert_eq!(
        r[0],
        vec![0.5, 2.0],
        "round 2 has no nginx: no ratio, not a shifted one"
    );
    assert_eq!(r[1], vec![1.0, 1.0]);
}

#[test]
fn shape_verdicts_rss_keep_alive_and_goals() {
    let r = shaped_report();
    let v = r.verdicts();
    let get = |s: &str| {
        v.iter()
            .find(|x| x.target.contains(s))
            .unwrap_or_else(|| panic!("no verdict `{s}` in {v:?}"))
    };
    let t = get("1 worker, 1,000 conns, 1 KiB: weir throughput >= nginx");
    assert_eq!((t.measured.as_str(), t.met), ("0.75x", Some(false)));
    let rss = get("1,000 conns, 1 KiB: weir peak RSS <= nginx's");
    assert_eq!(
        (rss.measured.as_str(), rss.met),
        ("81.0 MB vs 27.0 MB", Some(false))
    );
    let ka = get("weir keeps HTTP/1.0 keep-alive connections open");
    assert_eq!(ka.met, Some(false));
    let goal = get("1 worker, 50 conns, 1 KiB: weir throughput >= 1.2x nginx");
    assert_eq!((goal.measured.as_str(), goal.met), ("1.50x", Some(true)));
    assert!(
        v.iter()
            .any(|x| x.target.contains("50 conns, 1 KiB: weir added p99"))
    );
    assert!(
        !v.iter()
            .any(|x| x.target.contains("1,000 conns, 1 KiB: weir added p99")),
        "no fixed-rate run there, no latency verdict"
    );
}

#[test]
fn markdown_has_a_table_per_shape_with_round_ranges() {
    let md = report::render_markdown(&shaped_report());
    for want in [
        "### 1 worker, 1,000 conns, 1 KiB\n\nwrk, 1000 connection(s), 1024 B bodies.",
        "### 1 worker, 50 conns, 1 KiB, HTTP/1.0 keep-alive\n\nab -k (HTTP/1.0 keep-alive), 50",
        "### 1 worker, 50 conns, 1 KiB\n\nwrk, 50 connection(s), 1024 B bodies; latency: oha at 5000 req/s.",
        "| weir | 1 | 30000 | 0.33x | 0.74x (0.53–0.77) | – | – | – | – | – | 99% | 5.25 | 81.0 |",
        "keep-alive connection stayed open: weir 0.0%, nginx 100.0%.",
    ] {
        assert!(md.contains(want), "markdown lacks `{want}`:\n{md}");
    }
    assert_eq!(md.matches("| contender | threads |").count(), 3);
    let j = report::render_json(&shaped_report());
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows[1]["shape"], "1000c");
    assert_eq!(rows[1]["connections"], 1000);
    assert_eq!(rows[1]["load_tool"], "wrk");
    assert!(rows[1]["fixed_rate"].is_null());
    assert_eq!(rows[1]["rps_vs_nginx_by_round"][0], 0.53);
    assert_eq!(rows[1]["rps_vs_nginx"], 0.75, "the ratio of the medians");
    assert_eq!(rows[4]["keep_alive_percent"], 0.0);
    assert_eq!(j["run"]["shapes"].as_array().unwrap().len(), 3);
    assert_eq!(j["run"]["shapes"][1]["load_tool"], "ab");
}

#[test]
fn readme_summary_from_a_run() {
    let counts = callgrind::Counts {
        per_request: vec![(Contender::Weir, 43_400.0), (Contender::Nginx, 33_000.0)],
        notes: vec!["haproxy: not measured (stalls)".into()],
        requests: 20_000,
        connections: 10,
        body_bytes: 1024,
        ..Default::default()
    };
    let s = summary::render(&shaped_report(), Some(&counts));
    for want in [
        "| 1 worker, 1,000 conns, 1 KiB (wrk) | 30000 | 0.74x (0.53–0.77) | – | 0.50x | 5.25 | 5.25 | 81.0 | 27.0 | all within 1 point |",
        "p99 added over direct at 5000 req/s (oha), 1 worker, 50 conns, 1 KiB: weir",
        "responses that kept the connection: weir 0%, nginx 100%.",
        "(20000 requests over 10 keep-alive connections, h2load): weir 43400, nginx 33000",
        "- callgrind: haproxy: not measured (stalls).",
        "full tables in `benches/results/2026-11-02.md`",
    ] {
        assert!(s.contains(want), "summary lacks `{want}`:\n{s}");
    }

    let readme = format!(
        "# x\n\nbefore\n{}\nold table\n{}\nafter\n",
        summary::BEGIN,
        summary::END
    );
    let new = summary::replace_block(&readme, "| new |\n").unwrap();
    assert_eq!(
        new,
        format!(
            "# x\n\nbefore\n{}\n| new |\n{}\nafter\n",
            summary::BEGIN,
            summary::END
        )
    );
    assert_eq!(
        summary::replace_block(&new, "| new |").unwrap(),
        new,
        "idempotent"
    );
    assert!(
        summary::replace_block("# no markers", "x")
            .unwrap_err()
            .contains("README.md")
    );

    let md = callgrind::render_markdown(&counts, &sample_report().machine, "cargo bench");
    assert!(md.contains("| weir | 43400 | 1.32x |"), "{md}");
    assert!(md.contains("h2load over HTTP/1.1 (10 keep-alive connections"));
    assert!(md.contains("the difference over 20000 requests"));
    assert_eq!(callgrind::REQUESTS.1 - callgrind::REQUESTS.0, 20_000);
}

#[test]
fn the_readme_has_the_block_a_full_run_rewrites() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let new = summary::replace_block(&readme, "| regenerated |").unwrap();
    let (before, _) = readme.split_once(summary::BEGIN).unwrap();
    let (_, after) = readme.split_once(summary::END).unwrap();
    assert_eq!(
        new,
        format!(
            "{before}{}\n| regenerated |\n{}{after}",
            summary::BEGIN,
            summary::END
        ),
        "only the block between the markers changes"
    );
}
