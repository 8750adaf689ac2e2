//! `pingora-split --listen ADDR --v1 ADDR --v2 ADDR [--v1-weight 90] [--threads N] [--dir DIR]`
//!
//! Cloudflare's pingora-proxy doing the job every contender of `tools/bench-compare` does:
//! a request carrying `x-canary: true` goes to v2, every other request to v1 or v2 at random,
//! `--v1-weight` percent to v1, over pooled keep-alive upstream connections, plain HTTP/1.1.
//! It runs in the foreground until SIGTERM (graceful, a second) or SIGINT (at once).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use pingora_core::Result;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    listen: SocketAddr,
    v1: SocketAddr,
    v2: SocketAddr,
    v1_weight: u32,
    threads: usize,
    dir: String,
}

const USAGE: &str = "usage: pingora-split --listen ADDR --v1 ADDR --v2 ADDR \
                     [--v1-weight 0-100 (default 90)] [--threads N (default 1)] \
                     [--dir DIR for the pid file and upgrade socket (default /tmp)]";

fn parse_args(argv: &[String]) -> std::result::Result<Args, String> {
    let (mut listen, mut v1, mut v2) = (None, None, None);
    let (mut v1_weight, mut threads, mut dir) = (90, 1, "/tmp".to_string());
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let addr = || {
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{flag} {value}: {e} (want IP:PORT)"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr()?),
            "--v1" => v1 = Some(addr()?),
            "--v2" => v2 = Some(addr()?),
            "--v1-weight" => {
                v1_weight = value
                    .parse()
                    .ok()
                    .filter(|w| *w <= 100)
                    .ok_or_else(|| format!("--v1-weight {value}: want 0 to 100"))?
            }
            "--threads" => {
                threads = value
                    .parse()
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| format!("--threads {value}: want a positive integer"))?
            }
            "--dir" => dir = value.clone(),
            other => return Err(format!("unknown option `{other}`\n{USAGE}")),
        }
    }
    let missing = |name: &str| format!("{name} is required\n{USAGE}");
    Ok(Args {
        listen: listen.ok_or_else(|| missing("--listen"))?,
        v1: v1.ok_or_else(|| missing("--v1"))?,
        v2: v2.ok_or_else(|| missing("--v2"))?,
        v1_weight,
        threads,
        dir,
    })
}

thread_local! {
    /// One small fast generator per worker thread, as Envoy and weir pick.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_entropy());
}

/// The routing: header rule first, then the weighted pick.
struct Split {
    v1: SocketAddr,
    v2: SocketAddr,
    v1_weight: u32,
}

impl Split {
    /// Whether a request with this `x-canary` value goes to v2; `roll` is uniform in 0..100.
    fn to_v2(&self, canary: Option<&[u8]>, roll: u32) -> bool {
        canary == Some(b"true") || roll >= self.v1_weight
    }
}

#[async_trait]
impl ProxyHttp for Split {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let canary = session
            .req_header()
            .headers
            .get("x-canary")
            .map(|v| v.as_bytes());
        let roll = RNG.with(|r| r.borrow_mut().gen_range(0..100));
        let addr = if self.to_v2(canary, roll) {
            self.v2
        } else {
            self.v1
        };
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pingora-split: {e}");
            return ExitCode::from(2);
        }
    };
    let conf = ServerConf {
        threads: args.threads,
        pid_file: format!("{}/pingora-split.pid", args.dir),
        upgrade_sock: format!("{}/pingora-split-upgrade.sock", args.dir),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Split {
            v1: args.v1,
            v2: args.v2,
            v1_weight: args.v1_weight,
        },
    );
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    eprintln!("pingora-split: listening on {}", args.listen);
    server.run_forever()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_need_the_three_addresses() {
        let a = parse_args(&strings(&[
            "--listen",
            "127.0.0.1:1",
            "--v1",
            "127.0.0.1:2",
            "--v2",
            "127.0.0.1:3",
            "--threads",
            "2",
        ]))
        .unwrap();
        assert_eq!((a.v1_weight, a.threads, a.v2.port()), (90, 2, 3));
        let e = parse_args(&strings(&["--listen", "127.0.0.1:1"])).unwrap_err();
        assert!(e.contains("--v1 is required"), "{e}");
        let e = parse_args(&strings(&["--v1-weight", "101"])).unwrap_err();
        assert!(e.contains("0 to 100"), "{e}");
    }

    #[test]
    fn header_first_then_weight() {
        let s = Split {
            v1: "127.0.0.1:2".parse().unwrap(),
            v2: "127.0.0.1:3".parse().unwrap(),
            v1_weight: 90,
        };
        assert!(s.to_v2(Some(b"true"), 0), "x-canary: true wins");
        assert!(!s.to_v2(Some(b"false"), 0));
        assert!(!s.to_v2(None, 89), "rolls 0..90 go to v1");
        assert!(s.to_v2(None, 90), "rolls 90..100 go to v2");
        let v2 = (0..100).filter(|&r| s.to_v2(None, r)).count();
        assert_eq!(v2, 10);
    }
}
