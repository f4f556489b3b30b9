//! What a connection is waiting for, on stderr while it waits: one line rewritten in place
//! on a terminal, plain lines otherwise. With `-v`, why it takes the way it does.

use crate::output::{nat_kind, plural};
use introducer_node::event::{nat_json, Progress};
use introducer_node::{NatReport, PeerId, Strategy};
use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Status {
    tty: bool,
    verbose: bool,
    /// A line is shown in place (to be cleared before anything else is printed).
    shown: bool,
    /// The strategy under way, for the probe counts.
    strategy: Option<Strategy>,
    started: Instant,
}

impl Status {
    pub fn new(verbose: bool) -> Status {
        let tty = std::io::stderr().is_terminal();
        Status { tty, verbose, shown: false, strategy: None, started: Instant::now() }
    }

    /// Shows a step of the connection to `peer`.
    pub fn show(&mut self, peer: &PeerId, progress: &Progress) {
        let line = match progress {
            Progress::Introducing { via: Some(via) } => format!("asking {via} for an introduction to {peer}"),
            Progress::Introducing { via: None } => format!("asking for an introduction to {peer}"),
            Progress::Punching { strategy, ours, theirs } => {
                self.strategy = Some(*strategy);
                if self.verbose {
                    self.say(&format!("our NAT: {}; the peer's: {}", nat(ours), nat(theirs)));
                    self.say(&format!("plan: {} — {}", strategy.as_str(), why(*strategy)));
                }
                format!("introduced: punching ({})", strategy.as_str())
            }
            Progress::Probes { sent, sprayed } => {
                let strategy = self.strategy.map_or("punch", Strategy::as_str);
                let sprayed = if *sprayed > 0 { format!(", {sprayed} at guessed ports") } else { String::new() };
                format!("punching ({strategy}): {} sent{sprayed}", plural(u64::from(*sent), "probe"))
            }
            Progress::Relaying { relay, why } => format!("asking relay {relay} for a circuit ({why})"),
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        self.say_in_place(&format!("{line}  [{elapsed:.1} s]"));
    }

    /// Clears the line shown in place, before the result goes to stdout.
    pub fn clear(&mut self) {
        if std::mem::take(&mut self.shown) {
            eprint!("\r\x1b[2K");
        }
    }

    fn say_in_place(&mut self, line: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
            self.shown = true;
        } else {
            eprintln!("{line}");
        }
    }

    fn say(&mut self, line: &str) {
        self.clear();
        eprintln!("{line}");
    }
}

/// "hard (address-and-port-dependent mapping, unknown filtering, random ports)".
fn nat(report: &NatReport) -> String {
    let words = nat_json(report);
    let word = |key: &str| words[key].as_str().unwrap_or("unknown").to_owned();
    let (mapping, filtering, allocation) = (word("mapping"), word("filtering"), word("allocation"));
    format!("{} ({mapping} mapping, {filtering} filtering, {allocation} ports)", nat_kind(&words))
}

/// Why a strategy, in words a user can act on.
fn why(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Direct => "one side takes datagrams from anyone: the other just sends",
        Strategy::Local => "both sides are behind one public IP: their LAN addresses first",
        Strategy::SimultaneousOpen => {
            "both NATs keep one public port for every destination: both send at once to the ports the introducer saw"
        }
        Strategy::Predict => "one NAT gives each destination the next port in sequence: its next ports are guessed",
        Strategy::Birthday => {
            "one NAT gives each destination a random port: 256 sockets meet guessed ports (the birthday paradox), seconds at worst"
        }
        Strategy::Relay => "both NATs give each destination a port of their own: no direct path; the introducer relays",
    }
}
