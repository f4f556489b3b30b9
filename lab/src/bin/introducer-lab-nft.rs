//! Prints the lab's nftables ruleset (or sysctls) for one router, so a router container's
//! entrypoint builds the same NAT as the namespace lab:
//!
//! ```text
//! introducer-lab-nft --kind sym-seq --wan-ip 203.0.113.1 --wan-if eth0 --lan-if eth1 | nft -f -
//! introducer-lab-nft --kind sym-seq --sysctls | sysctl -p -
//! ```
//!
//! Errors are one line on stderr and exit status 2.

use introducer_lab::nft::{Interfaces, Kind, KINDS};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: introducer-lab-nft --kind KIND --wan-ip IPV4 [--wan-if NAME] [--lan-if NAME] [--hairpin] [--lifetime SECS]
       introducer-lab-nft --kind KIND --sysctls [--lifetime SECS]
       introducer-lab-nft --list

Prints the nftables ruleset (table ip lab_nat) that makes a router behave as KIND, for
`nft -f -` in the router's network namespace; with --sysctls, the key=value sysctls it
needs instead (forwarding, rp_filter, conntrack timeouts), for `sysctl -p -` or a compose
file's `sysctls:`.

  --kind KIND      public, port-restr, full-cone, restr-cone, eim-random, sym-random, sym-seq
  --wan-ip IPV4    the router's WAN address (the NAT's public address)
  --wan-if NAME    the WAN interface [default: wan]
  --lan-if NAME    the LAN interface, used by --hairpin [default: lan]
  --hairpin        hosts behind the NAT reach each other at its public address
  --lifetime SECS  idle mapping lifetime in seconds [default: 30]
  --list           print the kinds, one a line
";

/// What the command line asks for.
enum Request {
    Help,
    List,
    Ruleset { kind: Kind, wan_ip: Ipv4Addr, ifs: Interfaces },
    Sysctls { kind: Kind },
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Request, String> {
    let mut args = args.into_iter();
    let (mut kind, mut wan_ip, mut ifs) = (None, None, Interfaces::default());
    let (mut hairpin, mut lifetime, mut sysctls, mut list) = (false, None, false, false);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Request::Help),
            "--list" => list = true,
            "--sysctls" => sysctls = true,
            "--hairpin" => hairpin = true,
            "--kind" => {
                let label = value()?;
                let labels: Vec<&str> = KINDS.iter().map(|k| k.label).collect();
                kind = Some(Kind::from_label(&label).ok_or_else(|| {
                    format!("unknown kind {label:?} (one of: {}; a double NAT is two routers)", labels.join(", "))
                })?);
            }
            "--wan-ip" => {
                let v = value()?;
                wan_ip = Some(v.parse::<Ipv4Addr>().map_err(|_| format!("--wan-ip: not an IPv4 address: {v:?}"))?);
            }
            "--wan-if" => ifs.wan = value()?,
            "--lan-if" => ifs.lan = value()?,
            "--lifetime" => {
                let v = value()?;
                let secs = v.parse::<u64>().ok().filter(|s| *s > 0);
                lifetime = Some(secs.ok_or_else(|| format!("--lifetime: not a positive number of seconds: {v:?}"))?);
            }
            other => return Err(format!("unexpected argument {other:?} (see --help)")),
        }
    }
    if list {
        return Ok(Request::List);
    }
    let mut kind = kind.ok_or("missing --kind (see --list)")?;
    if let Some(nat) = &mut kind.nat {
        *nat = nat.with_hairpin(hairpin);
        if let Some(secs) = lifetime {
            *nat = nat.with_mapping_lifetime(Duration::from_secs(secs));
        }
    } else if hairpin || lifetime.is_some() {
        return Err("--hairpin and --lifetime need a NAT; a public router has none".into());
    }
    if sysctls {
        return Ok(Request::Sysctls { kind });
    }
    let wan_ip = wan_ip.ok_or("missing --wan-ip")?;
    Ok(Request::Ruleset { kind, wan_ip, ifs })
}

fn run(args: impl IntoIterator<Item = String>) -> Result<String, String> {
    Ok(match parse(args)? {
        Request::Help => USAGE.to_string(),
        Request::List => KINDS.iter().map(|k| format!("{}\n", k.label)).collect(),
        Request::Ruleset { kind, wan_ip, ifs } => kind.ruleset(wan_ip, &ifs).map_err(|e| e.to_string())?,
        Request::Sysctls { kind } => kind.sysctls().iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
    })
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("introducer-lab-nft: {e}");
            ExitCode::from(2)
        }
    }
}
