//! The harness's command line: `cargo bench --bench compare -- [OPTIONS]`.
//!
//! Parsed by hand (no clap in the suite's dev-dependencies) so that the unknown flags cargo
//! passes to every bench binary (`--bench`) are tolerated.

use std::path::PathBuf;
use std::time::Duration;

use crate::shapes::{self, Shape};

/// A proxy (or the direct floor) the harness measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contender {
    /// The load tool straight to v1: the floor every proxy adds to.
    Direct,
    /// `weir serve` with the lesson's payment-svc config.
    Weir,
    /// nginx with `split_clients` + `map` for the header rule.
    Nginx,
    /// HAProxy with weighted servers + a header ACL.
    Haproxy,
    /// pingora-proxy (`tools/pingora-split`) with a random weighted pick + a header rule.
    Pingora,
}

impl Contender {
    /// Every contender, in the order they run and appear in the table.
    pub const ALL: [Contender; 5] = [
        Contender::Direct,
        Contender::Weir,
        Contender::Nginx,
        Contender::Haproxy,
        Contender::Pingora,
    ];

    /// The lower-case name used on the command line, in the table and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Direct => "direct",
            Contender::Weir => "weir",
            Contender::Nginx => "nginx",
            Contender::Haproxy => "haproxy",
            Contender::Pingora => "pingora",
        }
    }

    /// The inverse of [`Contender::name`].
    pub fn parse(s: &str) -> Option<Contender> {
        Contender::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Whether traffic goes through a routing proxy (the split is then checked).
    pub fn routes(self) -> bool {
        self != Contender::Direct
    }
}

/// Everything the harness can be told.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Length of each measured load run (saturation and fixed rate alike).
    pub duration: Duration,
    /// Length of the unmeasured warm-up run before them.
    pub warmup: Duration,
    /// Concurrent connections of the load tool, the same for every run.
    pub connections: u32,
    /// Requests per second of the fixed-rate (latency) run.
    pub rate: u32,
    /// Rounds over all contenders; the table shows each figure's median.
    pub rounds: u32,
    /// How long to wait, before each contender, for the machine to be quiet.
    pub settle: Duration,
    /// Worker threads (processes for nginx) to sweep with `--threads` (custom shapes).
    pub threads: Vec<u32>,
    /// The load shapes to measure: [`shapes::standard`] unless `--shapes` names some, or
    /// `--threads` / `--connections` / `--body` ask for custom oha shapes.
    pub shapes: Vec<Shape>,
    /// Which contenders to run, in order.
    pub contenders: Vec<Contender>,
    /// Pin the proxy to its own cores and the load tool + upstreams to the rest (`taskset`).
    pub pin: bool,
    /// Install a missing oha with cargo, missing nginx / haproxy with apt-get.
    pub install: bool,
    /// A prebuilt weir binary instead of `cargo build --release -p weir`.
    pub weir_bin: Option<PathBuf>,
    /// A prebuilt `pingora-split` instead of building `tools/pingora-split` in release.
    pub pingora_bin: Option<PathBuf>,
    /// Where the results go; `None` = print only.
    pub out_dir: Option<PathBuf>,
    /// Size of each upstream response body, bytes.
    pub body_bytes: usize,
    /// Count user-space instructions per request under callgrind instead of timing loads.
    pub callgrind: bool,
    /// After the timed shapes, the callgrind counts too (the default; `--no-callgrind`).
    pub with_callgrind: bool,
    /// Set by `cargo bench`; without it (`cargo test --benches`) the bench target does nothing
    /// (the `bench-compare` binary runs either way).
    pub bench_mode: bool,
    /// `--help` was asked for.
    pub help: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            connections: 50,
            rate: 5000,
            rounds: 3,
            settle: Duration::from_secs(60),
            threads: vec![1, 2],
            shapes: shapes::standard(),
            contenders: Contender::ALL.to_vec(),
            pin: true,
            install: true,
            weir_bin: None,
            pingora_bin: None,
            out_dir: Some(PathBuf::from("benches/results")),
            body_bytes: 1024,
            callgrind: false,
            with_callgrind: true,
            bench_mode: false,
            help: false,
        }
    }
}

/// The text `--help` prints.
pub const USAGE: &str = "\
weir proxy comparison: direct vs weir vs nginx vs HAProxy vs pingora, same split, same load.

usage: cargo bench --bench compare -- [OPTIONS]
       cargo run --release -p bench-compare -- [OPTIONS]

  --shapes LIST      load shapes (default all: 50c,50c-2w,1c,1000c,64k,http10):
                       50c     1 worker, 50 connections, 1 KiB, wrk + oha at a fixed rate
                       50c-2w  the same with 2 workers
                       1c      1 worker, 1 connection, wrk
                       1000c   1 worker, 1,000 connections, wrk
                       64k     1 worker, 50 connections, 64 KiB bodies, wrk
                       http10  1 worker, 50 connections, HTTP/1.0 keep-alive (ab -k)
  --duration D       each measured run, e.g. 10s, 500ms (default 10s)
  --warmup D         unmeasured warm-up before them (default 2s)
  --rate N           requests/s of the fixed-rate latency run (default 5000)
  --rounds N         rounds over all contenders, medians reported (default 3)
  --settle D         before each contender, wait up to D for the machine to be quiet
                     (under 10% busy), e.g. 0s, 5m (default 60s)
  --only LIST        contenders, e.g. direct,weir (default direct,weir,nginx,haproxy,pingora)
  --no-pin           do not pin the proxy and the load to separate cores
  --no-install       never install the load tools (oha: cargo; wrk, ab, h2load: apt-get)
                     or nginx / haproxy (apt-get)
  --weir PATH        use this weir binary instead of building it in release
  --pingora PATH     use this pingora-split binary instead of building tools/pingora-split
  --out DIR          results directory (default benches/results); --no-out to print only
  --no-callgrind     skip the callgrind counts that follow the timed shapes
  --callgrind        only the callgrind counts: user-space instructions per request of
                     each proxy under valgrind's callgrind (h2load, 20,000 requests over 10
                     keep-alive connections), steady on a busy machine, and weir's costliest
                     functions (results/callgrind-latest.md)

  custom shapes instead of --shapes (oha, a fixed-rate run each):
  --threads LIST     worker threads to sweep, e.g. 1,2 (default 1,2)
  --connections N    load tool connections (default 50)
  --body N           upstream response body in bytes (default 1024)
";

/// Parses a duration such as `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 10s or 500ms)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be longer than zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_list<T>(s: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(item)
        .collect::<Result<Vec<T>, String>>()?;
    if items.is_empty() {
        return Err(format!("`{s}` is an empty list"));
    }
    Ok(items)
}

fn parse_positive(flag: &str, s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: `{s}` is not a positive integer")),
    }
}

/// Parses the arguments after the program name. `--flag value` and `--flag=value` both work;
/// unknown flags are an error except cargo's `--bench`.
pub fn parse<I, S>(args: I) -> Result<Options, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut opts = Options::default();
    let (mut named_shapes, mut custom) = (false, false);
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--bench" => opts.bench_mode = true,
            "-h" | "--help" => opts.help = true,
            "--duration" => opts.duration = parse_duration(&value()?)?,
            "--warmup" => opts.warmup = parse_duration(&value()?)?,
            "--connections" | "-c" => {
                opts.connections = parse_positive(&flag, &value()?)?;
                custom = true;
            }
            "--rate" | "-q" => opts.rate = parse_positive(&flag, &value()?)?,
            "--settle" => {
                let v = value()?;
                opts.settle = if v.trim() == "0" || v.trim() == "0s" {
                    Duration::ZERO
                } else {
                    parse_duration(&v)?
                }
            }
            "--rounds" => opts.rounds = parse_positive(&flag, &value()?)?,
            "--threads" => {
                opts.threads = parse_list(&value()?, |t| parse_positive("--threads", t))?;
                custom = true;
            }
            "--shapes" => {
                opts.shapes = parse_list(&value()?, |name| {
                    Shape::named(name).ok_or_else(|| {
                        format!(
                            "--shapes: unknown shape `{name}` ({})",
                            shapes::standard_names().join(", ")
                        )
                    })
                })?;
                named_shapes = true;
            }
            "--only" => {
                opts.contenders = parse_list(&value()?, |c| {
                    Contender::parse(c).ok_or_else(|| {
                        format!(
                            "--only: unknown contender `{c}` (direct, weir, nginx, haproxy, \
                             pingora)"
                        )
                    })
                })?
            }
            "--no-pin" => opts.pin = false,
            "--callgrind" => opts.callgrind = true,
            "--no-callgrind" => opts.with_callgrind = false,
            "--pingora" => opts.pingora_bin = Some(PathBuf::from(value()?)),
            "--no-install" => opts.install = false,
            "--weir" => opts.weir_bin = Some(PathBuf::from(value()?)),
            "--out" => opts.out_dir = Some(PathBuf::from(value()?)),
            "--no-out" => opts.out_dir = None,
            "--body" => {
                opts.body_bytes = parse_positive(&flag, &value()?)? as usize;
                custom = true;
            }
            other => return Err(format!("unknown option `{other}`\n\n{USAGE}")),
        }
    }
    if custom && named_shapes {
        return Err(
            "--shapes names standard shapes; --threads, --connections and --body describe \
             custom ones: use one or the other"
                .into(),
        );
    }
    if custom {
        opts.shapes = opts
            .threads
            .iter()
            .map(|&t| Shape::custom(t, opts.connections, opts.body_bytes))
            .collect();
    }
    Ok(opts)
}
