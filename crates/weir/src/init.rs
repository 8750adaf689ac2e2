//! `weir init`: what a pod's init container runs before the app and weir start: the nat rules
//! that capture the pod's traffic for the sidecar (see [`weir_proxy::capture`]).
//!
//! ```text
//! weir init                                   # Istio's defaults: capture everything, exempt uid 1337
//! weir init --dry-run                         # print the iptables-restore input, change nothing
//! weir init --exclude-outbound-ports 5432 --inbound-ports 8080
//! weir init --remove                          # take weir's rules out again (idempotent)
//! ```

use std::process::ExitCode;

use anyhow::Result;
use weir_proxy::capture::{self, Backend, CaptureOptions, Cidrs, IpFamily, Ports};

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The outbound listener captured connections go to.
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    proxy_port: u16,
    /// The inbound listener captured inbound connections go to.
    #[arg(long, value_name = "PORT", default_value_t = 15006)]
    inbound_port: u16,
    /// The uid weir runs as (the container's `runAsUser`): its own traffic is never captured.
    #[arg(long, value_name = "UID", default_value_t = 1337)]
    proxy_uid: u32,
    /// The gid weir runs as; defaults to the uid.
    #[arg(long, value_name = "GID")]
    proxy_gid: Option<u32>,
    /// Outbound ports to capture: `*` or a comma-separated list.
    #[arg(long, value_name = "PORTS", default_value = "*")]
    outbound_ports: String,
    /// Outbound destinations to capture: `*` or a comma-separated list of CIDRs.
    #[arg(long, value_name = "CIDRS", default_value = "*")]
    outbound_cidrs: String,
    /// Outbound ports never captured (comma-separated).
    #[arg(long, value_name = "PORTS", default_value = "")]
    exclude_outbound_ports: String,
    /// Outbound destinations never captured (comma-separated CIDRs).
    #[arg(long, value_name = "CIDRS", default_value = "")]
    exclude_outbound_cidrs: String,
    /// Inbound ports to capture: `*`, a comma-separated list, or empty for none.
    #[arg(long, value_name = "PORTS", default_value = "*")]
    inbound_ports: String,
    /// Inbound ports never captured, besides weir's own (15000, 15001, 15006, 15021, 15090).
    #[arg(long, value_name = "PORTS", default_value = "")]
    exclude_inbound_ports: String,
    /// Also install the IPv6 rules (ip6tables).
    #[arg(long)]
    ipv6: bool,
    /// Which iptables: the system's default, `legacy` or `nft`.
    #[arg(long, value_name = "BACKEND", value_parser = ["legacy", "nft"])]
    iptables: Option<String>,
    /// Print the iptables-restore input of weir's rules and change nothing.
    #[arg(long, conflicts_with = "remove")]
    dry_run: bool,
    /// Remove weir's rules and chains (nothing installed is not an error).
    #[arg(long)]
    remove: bool,
}

impl InitArgs {
    fn options(&self) -> Result<CaptureOptions> {
        Ok(CaptureOptions {
            proxy_port: self.proxy_port,
            inbound_port: self.inbound_port,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid.unwrap_or(self.proxy_uid),
            outbound_ports: Ports::parse("--outbound-ports", &self.outbound_ports)?,
            outbound_cidrs: Cidrs::parse("--outbound-cidrs", &self.outbound_cidrs)?,
            exclude_outbound_ports: capture::parse_ports(
                "--exclude-outbound-ports",
                &self.exclude_outbound_ports,
            )?,
            exclude_outbound_cidrs: capture::parse_cidrs(
                "--exclude-outbound-cidrs",
                &self.exclude_outbound_cidrs,
            )?,
            inbound_ports: Ports::parse("--inbound-ports", &self.inbound_ports)?,
            exclude_inbound_ports: capture::parse_ports(
                "--exclude-inbound-ports",
                &self.exclude_inbound_ports,
            )?,
        })
    }
}

/// `weir init`. Exit 0 done, 1 iptables refused, 2 usage.
pub fn run(args: InitArgs) -> Result<ExitCode> {
    let options = args.options()?;
    let families: &[IpFamily] = if args.ipv6 {
        &[IpFamily::V4, IpFamily::V6]
    } else {
        &[IpFamily::V4]
    };
    if args.dry_run {
        for family in families {
            print!("{}", options.restore_input(*family));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let flavour = args.iptables.as_deref().unwrap_or("");
    for family in families {
        let backend = Backend::new(*family, flavour);
        let done = if args.remove {
            backend
                .remove()
                .map(|()| "weir's rules and chains removed from the nat table".to_string())
        } else {
            backend
                .install(&options, *family)
                .map(|n| format!("{n} rules installed in the nat table"))
        };
        match done {
            Ok(what) => println!("weir init: {what} ({})", backend.restore.display()),
            Err(e) => {
                eprintln!("weir init: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
