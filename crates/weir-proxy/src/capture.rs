//! Transparent capture, as a pod's init container installs it (`weir init`): nat rules in the
//! current network namespace that send the app's outbound TCP to the proxy's listener and
//! inbound TCP for the app's ports to the inbound listener, the way `istio-iptables` does.
//!
//! The rules live in chains of weir's own (`WEIR_OUTPUT`, `WEIR_REDIRECT`, `WEIR_INBOUND`,
//! `WEIR_IN_REDIRECT`), so they can be shown, replaced and removed without touching anyone
//! else's. Installing and removing both go through one `iptables-restore` of the whole nat
//! table (what was there, minus weir's old rules, plus the new ones): atomic, and idempotent
//! whatever was installed before.
//!
//! Traffic that is never captured:
//! - the proxy's own (`--proxy-uid` / `--proxy-gid`, Istio's 1337): its upstream connections
//!   would otherwise come straight back to it;
//! - loopback traffic of the app to itself, and the inbound listener's connections to the app
//!   from `127.0.0.6` (Istio's inbound passthrough source);
//! - excluded ports and CIDRs; on the inbound side, weir's own ports (admin, health, metrics).
//!
//! ```
//! use weir_proxy::capture::{CaptureOptions, IpFamily};
//! let rules = CaptureOptions::default().restore_input(IpFamily::V4);
//! assert!(rules.contains("-A WEIR_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
//! assert!(rules.contains("-A WEIR_OUTPUT -m owner --uid-owner 1337 -j RETURN"));
//! ```

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;

/// The chains weir owns in the nat table.
pub const CHAINS: [&str; 4] = [
    "WEIR_INBOUND",
    "WEIR_REDIRECT",
    "WEIR_IN_REDIRECT",
    "WEIR_OUTPUT",
];

/// weir's own ports, never captured on the inbound side: the admin API (15000), the outbound
/// and inbound listeners (15001, 15006), health (15021) and metrics (15090), as Istio keeps
/// 15020/15021/15090 out.
pub const OWN_PORTS: [u16; 5] = [15000, 15001, 15006, 15021, 15090];

/// The source address the inbound listener uses towards the app (Istio's `127.0.0.6`), so
/// that its connections are recognised and not captured again.
pub const INBOUND_PASSTHROUGH_V4: &str = "127.0.0.6";
/// The IPv6 counterpart of [`INBOUND_PASSTHROUGH_V4`].
pub const INBOUND_PASSTHROUGH_V6: &str = "::6";

/// Which rules: `iptables` or `ip6tables`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv4 (`iptables`).
    V4,
    /// IPv6 (`ip6tables`).
    V6,
}

/// Ports to capture: all of them, or a list (an empty list captures none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    /// `*`: every port.
    All,
    /// These ports only.
    List(Vec<u16>),
}

/// Destinations to capture: all of them, or a list of CIDRs (an empty list captures none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cidrs {
    /// `*`: every destination.
    All,
    /// These ranges only.
    List(Vec<Cidr>),
}

/// An address range, `198.51.100.0/24` or `2001:db8::/32`; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address as written.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// How to capture. The defaults are Istio's: every outbound port and destination, every
/// inbound port but weir's own, the proxy running as uid and gid 1337.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// The outbound listener captured outbound connections go to (15001).
    pub proxy_port: u16,
    /// The inbound listener captured inbound connections go to (15006).
    pub inbound_port: u16,
    /// The uid the proxy runs as: its traffic is never captured (1337).
    pub proxy_uid: u32,
    /// The gid the proxy runs as: its traffic is never captured (the uid's number).
    pub proxy_gid: u32,
    /// Outbound destination ports to capture.
    pub outbound_ports: Ports,
    /// Outbound destinations to capture.
    pub outbound_cidrs: Cidrs,
    /// Outbound destination ports never captured (checked first).
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations never captured (checked first).
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Inbound destination ports to capture.
    pub inbound_ports: Ports,
    /// Inbound destination ports never captured, besides [`OWN_PORTS`].
    pub exclude_inbound_ports: Vec<u16>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            proxy_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            proxy_gid: 1337,
            outbound_ports: Ports::All,
            outbound_cidrs: Cidrs::All,
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            inbound_ports: Ports::All,
            exclude_inbound_ports: Vec::new(),
        }
    }
}

/// Why the rules could not be installed or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// A port or CIDR list could not be read.
    #[error("{flag}: {value:?} is not {expected}")]
    Parse {
        /// The option, by its command-line flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An iptables tool could not be run.
    #[error("cannot run {tool}: {source} (is the iptables package installed?)")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// An iptables tool ran and failed.
    #[error(
        "{tool} failed ({status}): {stderr}\nweir init needs root or the NET_ADMIN and NET_RAW capabilities in the pod's network namespace"
    )]
    Failed {
        /// The tool.
        tool: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

// === impl Cidr ===

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("prefix {p:?} is not between 0 and {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn family(&self) -> IpFamily {
        if self.addr.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }
}

// === impl Ports, Cidrs ===

impl Ports {
    /// Reads `*`, an empty string (none) or a comma-separated list, for `flag`.
    pub fn parse(flag: &'static str, text: &str) -> Result<Self, CaptureError> {
        if text.trim() == "*" {
            return Ok(Ports::All);
        }
        parse_ports(flag, text).map(Ports::List)
    }
}

impl Cidrs {
    /// Reads `*`, an empty string (none) or a comma-separated list of CIDRs, for `flag`.
    pub fn parse(flag: &'static str, text: &str) -> Result<Self, CaptureError> {
        if text.trim() == "*" {
            return Ok(Cidrs::All);
        }
        parse_cidrs(flag, text).map(Cidrs::List)
    }
}

/// Reads a comma-separated port list (empty = none), for `flag`.
pub fn parse_ports(flag: &'static str, text: &str) -> Result<Vec<u16>, CaptureError> {
    list(text)
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| CaptureError::Parse {
                    flag,
                    value: p.to_string(),
                    expected: "a port between 1 and 65535",
                })
        })
        .collect()
}

/// Reads a comma-separated CIDR list (empty = none), for `flag`.
pub fn parse_cidrs(flag: &'static str, text: &str) -> Result<Vec<Cidr>, CaptureError> {
    list(text)
        .map(|c| {
            c.parse::<Cidr>().map_err(|_| CaptureError::Parse {
                flag,
                value: c.to_string(),
                expected: "an address or CIDR such as 10.96.0.0/12",
            })
        })
        .collect()
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

// === impl CaptureOptions ===

impl CaptureOptions {
    /// weir's rules for one family, as `iptables -t nat` arguments (`-A WEIR_OUTPUT ...`), in
    /// the order they are evaluated.
    pub fn rules(&self, family: IpFamily) -> Vec<String> {
        let (localhost, passthrough) = match family {
            IpFamily::V4 => ("127.0.0.1/32", format!("{INBOUND_PASSTHROUGH_V4}/32")),
            IpFamily::V6 => ("::1/128", format!("{INBOUND_PASSTHROUGH_V6}/128")),
        };
        let mut r = vec![
            format!(
                "-A WEIR_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                self.proxy_port
            ),
            format!(
                "-A WEIR_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                self.inbound_port
            ),
        ];

        // Inbound: weir's own ports and the excluded ones pass, then the app's.
        let inbound_capture = !matches!(&self.inbound_ports, Ports::List(l) if l.is_empty());
        if inbound_capture {
            r.push("-A PREROUTING -p tcp -j WEIR_INBOUND".into());
            let mut excluded: Vec<u16> = OWN_PORTS.to_vec();
            excluded.extend(&self.exclude_inbound_ports);
            excluded.sort_unstable();
            excluded.dedup();
            for port in excluded {
                r.push(format!("-A WEIR_INBOUND -p tcp --dport {port} -j RETURN"));
            }
            match &self.inbound_ports {
                Ports::All => r.push("-A WEIR_INBOUND -p tcp -j WEIR_IN_REDIRECT".into()),
                Ports::List(ports) => {
                    for port in ports {
                        r.push(format!(
                            "-A WEIR_INBOUND -p tcp --dport {port} -j WEIR_IN_REDIRECT"
                        ));
                    }
                }
            }
        }

        // Outbound.
        r.push("-A OUTPUT -p tcp -j WEIR_OUTPUT".into());
        for port in &self.exclude_outbound_ports {
            r.push(format!("-A WEIR_OUTPUT -p tcp --dport {port} -j RETURN"));
        }
        // The inbound listener's connections to the app.
        r.push(format!("-A WEIR_OUTPUT -o lo -s {passthrough} -j RETURN"));
        for (owner, id) in [("uid", self.proxy_uid), ("gid", self.proxy_gid)] {
            // The proxy calling this pod's own (non-loopback) address through lo is inbound
            // traffic for the app: it goes through the inbound listener, as in Istio.
            if inbound_capture {
                r.push(format!(
                    "-A WEIR_OUTPUT -o lo ! -d {localhost} -m owner --{owner}-owner {id} -j WEIR_IN_REDIRECT"
                ));
            }
            // The app talking to itself over lo is not captured.
            r.push(format!(
                "-A WEIR_OUTPUT -o lo -m owner ! --{owner}-owner {id} -j RETURN"
            ));
            // The proxy's own connections never come back to it.
            r.push(format!(
                "-A WEIR_OUTPUT -m owner --{owner}-owner {id} -j RETURN"
            ));
        }
        r.push(format!("-A WEIR_OUTPUT -d {localhost} -j RETURN"));
        for cidr in self
            .exclude_outbound_cidrs
            .iter()
            .filter(|c| c.family() == family)
        {
            r.push(format!("-A WEIR_OUTPUT -d {cidr} -j RETURN"));
        }
        let ports: Vec<Option<u16>> = match &self.outbound_ports {
            Ports::All => vec![None],
            Ports::List(ports) => ports.iter().copied().map(Some).collect(),
        };
        let cidrs: Vec<Option<Cidr>> = match &self.outbound_cidrs {
            Cidrs::All => vec![None],
            Cidrs::List(cidrs) => cidrs
                .iter()
                .filter(|c| c.family() == family)
                .copied()
                .map(Some)
                .collect(),
        };
        for cidr in &cidrs {
            for port in &ports {
                let mut rule = String::from("-A WEIR_OUTPUT");
                if let Some(cidr) = cidr {
                    rule.push_str(&format!(" -d {cidr}"));
                }
                if let Some(port) = port {
                    rule.push_str(&format!(" -p tcp --dport {port}"));
                }
                rule.push_str(" -j WEIR_REDIRECT");
                r.push(rule);
            }
        }
        r
    }

    /// weir's part of the nat table as `iptables-restore` input (what `weir init --dry-run`
    /// prints): the chain declarations, the rules, `COMMIT`.
    pub fn restore_input(&self, family: IpFamily) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in self.rules(family) {
            out.push_str(&rule);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }
}

// === the nat table ===

/// The whole nat table to restore: `current` (the output of `iptables-save -t nat`, possibly
/// empty) without any rule or chain of weir's, plus `ours` (the rules of
/// [`CaptureOptions::rules`]; `None` removes weir's rules).
pub fn merged_nat_table(current: &str, ours: Option<&[String]>) -> String {
    let mut header = Vec::new();
    let mut rules = Vec::new();
    let mut in_nat = false;
    for line in current.lines() {
        let line = line.trim_end();
        if line == "*nat" {
            in_nat = true;
            continue;
        }
        if !in_nat || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line == "COMMIT" {
            break;
        }
        if mentions_ours(line) {
            continue;
        }
        if line.starts_with(':') {
            header.push(line.to_string());
        } else {
            rules.push(line.to_string());
        }
    }
    for builtin in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        if !header
            .iter()
            .any(|h| h.split_whitespace().next() == Some(&format!(":{builtin}")))
        {
            header.push(format!(":{builtin} ACCEPT [0:0]"));
        }
    }
    let mut out = String::from("*nat\n");
    for h in &header {
        out.push_str(h);
        out.push('\n');
    }
    if ours.is_some() {
        for chain in CHAINS {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
    }
    for r in rules.iter().chain(ours.into_iter().flatten()) {
        out.push_str(r);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// Whether an `iptables-save` line declares, fills or jumps to one of weir's chains.
fn mentions_ours(line: &str) -> bool {
    line.split_whitespace()
        .any(|w| CHAINS.contains(&w.trim_start_matches(':')))
}

/// Which iptables programs to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// e.g. `iptables-restore`, `iptables-legacy-restore`, `ip6tables-nft-restore`.
    pub restore: PathBuf,
    /// e.g. `iptables-save`.
    pub save: PathBuf,
}

impl Backend {
    /// The tools for `family` and `flavour`: `""` for the system's default (`iptables-restore`),
    /// `"legacy"` or `"nft"`.
    pub fn new(family: IpFamily, flavour: &str) -> Self {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let infix = if flavour.is_empty() {
            String::new()
        } else {
            format!("-{flavour}")
        };
        Backend {
            restore: PathBuf::from(format!("{base}{infix}-restore")),
            save: PathBuf::from(format!("{base}{infix}-save")),
        }
    }

    /// The nat table now (`iptables-save -t nat`).
    pub fn save_nat(&self) -> Result<String, CaptureError> {
        let out = run(&self.save, &["-t", "nat"], None)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Replaces the nat table with `table` in one `iptables-restore`.
    pub fn restore_nat(&self, table: &str) -> Result<(), CaptureError> {
        run(&self.restore, &[], Some(table)).map(drop)
    }

    /// Installs `options`' rules for `family`, replacing any weir rules already there.
    /// Returns the number of rules installed.
    pub fn install(
        &self,
        options: &CaptureOptions,
        family: IpFamily,
    ) -> Result<usize, CaptureError> {
        let rules = options.rules(family);
        let table = merged_nat_table(&self.save_nat()?, Some(&rules));
        self.restore_nat(&table)?;
        Ok(rules.len())
    }

    /// Removes every weir rule and chain; nothing to remove is not an error.
    pub fn remove(&self) -> Result<(), CaptureError> {
        let current = self.save_nat()?;
        if !current.lines().any(mentions_ours) {
            return Ok(());
        }
        self.restore_nat(&merged_nat_table(&current, None))
    }
}

/// Runs an iptables tool with `input` on its stdin (none: stdin closed) and returns its
/// stdout; a tool that cannot start or exits non-zero is an error carrying its stderr.
fn run(
    tool: &std::path::Path,
    args: &[&str],
    input: Option<&str>,
) -> Result<Vec<u8>, CaptureError> {
    let name = tool.display().to_string();
    let spawn_error = |source| CaptureError::Spawn {
        tool: name.clone(),
        source,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error shows up as the tool's failure below.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    if !out.status.success() {
        return Err(CaptureError::Failed {
            tool: name,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(o: &CaptureOptions) -> Vec<String> {
        o.rules(IpFamily::V4)
    }

    #[test]
    fn defaults_capture_everything_but_the_proxy_and_loopback() {
        let r = rules(&CaptureOptions::default());
        let pos = |rule: &str| {
            r.iter()
                .position(|x| x == rule)
                .unwrap_or_else(|| panic!("{rule} missing from {r:#?}"))
        };
        let uid = pos("-A WEIR_OUTPUT -m owner --uid-owner 1337 -j RETURN");
        let gid = pos("-A WEIR_OUTPUT -m owner --gid-owner 1337 -j RETURN");
        let lo = pos("-A WEIR_OUTPUT -d 127.0.0.1/32 -j RETURN");
        let all = pos("-A WEIR_OUTPUT -j WEIR_REDIRECT");
        // The exemptions come before the catch-all redirect.
        assert!(uid < all && gid < all && lo < all);
        assert_eq!(all, r.len() - 1, "the catch-all is last");
        pos("-A WEIR_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN");
        // Inbound: weir's own ports pass, everything else goes to 15006.
        for port in OWN_PORTS {
            let rule = format!("-A WEIR_INBOUND -p tcp --dport {port} -j RETURN");
            assert!(pos(&rule) < pos("-A WEIR_INBOUND -p tcp -j WEIR_IN_REDIRECT"));
        }
        pos("-A WEIR_REDIRECT -p tcp -j REDIRECT --to-ports 15001");
        pos("-A WEIR_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006");
    }

    #[test]
    fn lists_and_exclusions() {
        let o = CaptureOptions {
            outbound_ports: Ports::parse("--outbound-ports", "80, 8080").unwrap(),
            outbound_cidrs: Cidrs::parse("--outbound-cidrs", "10.96.0.0/12,2001:db8::/32").unwrap(),
            exclude_outbound_ports: parse_ports("--exclude-outbound-ports", "22").unwrap(),
            exclude_outbound_cidrs: parse_cidrs("--exclude-outbound-cidrs", "169.254.169.254")
                .unwrap(),
            inbound_ports: Ports::parse("--inbound-ports", "").unwrap(),
            proxy_uid: 1000,
            proxy_gid: 1001,
            ..CaptureOptions::default()
        };
        let r = rules(&o);
        assert_eq!(r.iter().filter(|x| x.ends_with("WEIR_REDIRECT")).count(), 2);
        assert!(
            r.contains(&"-A WEIR_OUTPUT -d 10.96.0.0/12 -p tcp --dport 80 -j WEIR_REDIRECT".into())
        );
        assert!(r.contains(
            &"-A WEIR_OUTPUT -d 10.96.0.0/12 -p tcp --dport 8080 -j WEIR_REDIRECT".into()
        ));
        assert!(r.contains(&"-A WEIR_OUTPUT -p tcp --dport 22 -j RETURN".into()));
        assert!(r.contains(&"-A WEIR_OUTPUT -d 169.254.169.254/32 -j RETURN".into()));
        assert!(r.contains(&"-A WEIR_OUTPUT -m owner --uid-owner 1000 -j RETURN".into()));
        assert!(r.contains(&"-A WEIR_OUTPUT -m owner --gid-owner 1001 -j RETURN".into()));
        // No inbound capture at all with an empty inbound port list.
        assert!(
            !r.iter()
                .any(|x| x.contains("WEIR_INBOUND") || x.contains("-j WEIR_IN_REDIRECT"))
        );
        // The IPv6 range is only in the IPv6 rules.
        assert!(!r.iter().any(|x| x.contains("2001:db8")));
        let v6 = o.rules(IpFamily::V6);
        assert!(v6.contains(
            &"-A WEIR_OUTPUT -d 2001:db8::/32 -p tcp --dport 80 -j WEIR_REDIRECT".into()
        ));
        assert!(v6.contains(&"-A WEIR_OUTPUT -d ::1/128 -j RETURN".into()));
    }

    #[test]
    fn bad_lists_name_the_flag() {
        let e = parse_ports("--outbound-ports", "80,http").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--outbound-ports: \"http\" is not a port between 1 and 65535"
        );
        assert!(parse_ports("--inbound-ports", "0").is_err());
        assert!(parse_cidrs("--outbound-cidrs", "10.0.0.0/33").is_err());
        assert!(parse_cidrs("--outbound-cidrs", "ten").is_err());
    }

    #[test]
    fn merging_keeps_others_rules_and_replaces_ours() {
        let current = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [3:180]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:WEIR_OUTPUT - [0:0]\n-A OUTPUT -j KUBE-SERVICES\n-A OUTPUT -p tcp -j WEIR_OUTPUT\n-A WEIR_OUTPUT -j WEIR_REDIRECT\nCOMMIT\n# Completed\n";
        let ours = vec!["-A OUTPUT -p tcp -j WEIR_OUTPUT".to_string()];
        let merged = merged_nat_table(current, Some(&ours));
        assert_eq!(
            merged,
            "*nat\n:PREROUTING ACCEPT [3:180]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
             :WEIR_INBOUND - [0:0]\n:WEIR_REDIRECT - [0:0]\n:WEIR_IN_REDIRECT - [0:0]\n:WEIR_OUTPUT - [0:0]\n\
             -A OUTPUT -j KUBE-SERVICES\n-A OUTPUT -p tcp -j WEIR_OUTPUT\nCOMMIT\n"
        );
        let removed = merged_nat_table(current, None);
        assert!(!removed.contains("WEIR"), "{removed}");
        assert!(removed.contains("-A OUTPUT -j KUBE-SERVICES"));
        // An empty table (nothing saved yet) still gets the built-in chains.
        let fresh = merged_nat_table("", Some(&ours));
        assert!(fresh.starts_with("*nat\n:PREROUTING ACCEPT [0:0]\n"));
    }
}
