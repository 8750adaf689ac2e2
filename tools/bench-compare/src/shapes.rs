//! The load shapes a run measures: who drives the load (wrk, oha, `ab -k`), with how many
//! proxy workers, connections and body bytes, and what weir must reach against nginx there.
//!
//! The default run measures [`STANDARD`], the shapes of issue 13: 50 connections with 1 and 2
//! workers, 1 connection, 1,000 connections, 64 KiB bodies and HTTP/1.0 keep-alive. The older
//! flags (`--threads`, `--connections`, `--body`) describe [`Shape::custom`] shapes instead:
//! oha with a fixed-rate run, one shape per thread count.

/// The program that drives a shape's saturation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadTool {
    /// oha (crates.io): HTTP/1.1 keep-alive, JSON output.
    Oha,
    /// wrk (Debian): HTTP/1.1 keep-alive, an event loop per thread, lighter than oha.
    Wrk,
    /// ApacheBench `ab -k`: HTTP/1.0 requests with `Connection: Keep-Alive`.
    AbKeepAlive,
}

impl LoadTool {
    /// The program's name.
    pub fn program(self) -> &'static str {
        match self {
            LoadTool::Oha => "oha",
            LoadTool::Wrk => "wrk",
            LoadTool::AbKeepAlive => "ab",
        }
    }

    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            LoadTool::Oha => "oha",
            LoadTool::Wrk => "wrk",
            LoadTool::AbKeepAlive => "ab -k (HTTP/1.0 keep-alive)",
        }
    }
}

/// One load shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// The name `--shapes` takes and the JSON carries: `50c`, `1000c`, ...
    pub name: String,
    /// The heading of its table.
    pub title: String,
    /// Who drives the saturation run.
    pub tool: LoadTool,
    /// Proxy worker threads (nginx: processes).
    pub threads: u32,
    /// Concurrent client connections.
    pub connections: u32,
    /// Upstream response body, bytes.
    pub body_bytes: usize,
    /// Also an oha run at the fixed rate of `--rate` (latency against direct).
    pub fixed_rate: bool,
    /// weir's saturation throughput against nginx's that this shape asks for (issue 13).
    pub goal_vs_nginx: f64,
    /// Whether weir's peak RSS must be at or below nginx's here (the 1,000-connection shape).
    pub rss_vs_nginx: bool,
}

/// The shapes of a default run, in the order they run.
pub fn standard() -> Vec<Shape> {
    let wrk = |name: &str, title: &str, threads, connections, body_bytes, fixed_rate, goal| Shape {
        name: name.into(),
        title: title.into(),
        tool: LoadTool::Wrk,
        threads,
        connections,
        body_bytes,
        fixed_rate,
        goal_vs_nginx: goal,
        rss_vs_nginx: connections >= 1000,
    };
    vec![
        wrk("50c", "1 worker, 50 conns, 1 KiB", 1, 50, 1024, true, 1.2),
        wrk(
            "50c-2w",
            "2 workers, 50 conns, 1 KiB",
            2,
            50,
            1024,
            true,
            1.2,
        ),
        wrk("1c", "1 worker, 1 conn, 1 KiB", 1, 1, 1024, false, 1.0),
        wrk(
            "1000c",
            "1 worker, 1,000 conns, 1 KiB",
            1,
            1000,
            1024,
            false,
            1.0,
        ),
        wrk(
            "64k",
            "1 worker, 50 conns, 64 KiB",
            1,
            50,
            65536,
            false,
            1.0,
        ),
        Shape {
            tool: LoadTool::AbKeepAlive,
            ..wrk(
                "http10",
                "1 worker, 50 conns, 1 KiB, HTTP/1.0 keep-alive",
                1,
                50,
                1024,
                false,
                1.0,
            )
        },
    ]
}

/// The names of [`standard`], for `--help` and errors.
pub fn standard_names() -> Vec<String> {
    standard().into_iter().map(|s| s.name).collect()
}

impl Shape {
    /// A shape of the older flags: oha, `threads` workers, a fixed-rate run.
    pub fn custom(threads: u32, connections: u32, body_bytes: usize) -> Shape {
        Shape {
            name: format!("{threads}w-{connections}c-{body_bytes}b"),
            title: format!("{threads} thr"),
            tool: LoadTool::Oha,
            threads,
            connections,
            body_bytes,
            fixed_rate: true,
            goal_vs_nginx: 1.0,
            rss_vs_nginx: false,
        }
    }

    /// The standard shape called `name`.
    pub fn named(name: &str) -> Option<Shape> {
        standard().into_iter().find(|s| s.name == name)
    }
}
