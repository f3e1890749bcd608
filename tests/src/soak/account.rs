//! The soak's books: every token sent, looked up in both colours' files.
use std::{collections::HashMap, fmt::Write as _};

use std::time::{Duration, Instant};

use super::{COLOURS, Timeline, senders::Sent};

/// The longest a soak connection lives (senders.rs: 2 to 4 s), with room.
const LIFE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Report {
    pub udp_sent: u64,
    pub tcp_sent: u64,
    pub tcp_connections: u64,
    /// Messages that arrived nowhere, outside the documented windows.
    pub lost: u64,
    /// Messages lost inside a documented window (a colour killed in bake,
    /// until the rollback).
    pub lost_in_window: u64,
    pub duplicated: u64,
    pub wrong_colour: u64,
    /// TCP connections that ended in an error, outside the windows.
    pub tcp_resets: u64,
    pub tcp_resets_in_window: u64,
    pub refused_connects: u64,
    pub refused_connects_in_window: u64,
    pub flips_ok: u64,
    pub flips_refused: u64,
    pub restarts_survived: u64,
    pub rollbacks: u64,
    pub backend_restarts: u64,
    pub disk_full_episodes: u64,
    pub episodes_failed: u64,
    /// The agent's (RSS KiB, open fds): at the start, before each kill,
    /// at the end.
    pub footprint_start: Option<(u64, usize)>,
    pub footprints: Vec<(u64, usize)>,
    pub footprint_end: Option<(u64, usize)>,
    /// What happened, for the reader: episodes, refusals (the first 40).
    pub notes: Vec<String>,
    pub notes_left_out: u64,
    /// Every fault outside the windows (the first 50), with when it
    /// happened and how far from the nearest colour killed in bake.
    pub problems: Vec<String>,
}

impl Report {
    pub fn note(&mut self, s: String) {
        if self.notes.len() < 40 {
            self.notes.push(s);
        } else {
            self.notes_left_out += 1;
        }
    }

    fn problem(&mut self, timeline: &Timeline, at: Instant, what: String) {
        if self.problems.len() < 50 {
            let when = timeline.describe(at);
            self.problems.push(format!("{what}, {when}"));
        }
    }

    /// Nothing lost, duplicated, misrouted or reset outside the
    /// documented windows, and every episode ran.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.wrong_colour == 0
            && self.tcp_resets == 0
            && self.refused_connects == 0
            && self.episodes_failed == 0
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let fp = |f: Option<(u64, usize)>| {
            f.map_or("?".to_owned(), |(rss, fds)| {
                format!("{rss} KiB RSS, {fds} fds")
            })
        };
        let _ = writeln!(
            s,
            "sent {} UDP and {} TCP messages over {} TCP connections",
            self.udp_sent, self.tcp_sent, self.tcp_connections
        );
        let _ = writeln!(
            s,
            "lost {} ({} more inside documented windows), duplicated {}, to the wrong colour {}",
            self.lost, self.lost_in_window, self.duplicated, self.wrong_colour
        );
        let _ = writeln!(
            s,
            "TCP connections reset {} ({} inside windows), connects refused {} ({} inside windows)",
            self.tcp_resets,
            self.tcp_resets_in_window,
            self.refused_connects,
            self.refused_connects_in_window
        );
        let _ = writeln!(
            s,
            "flips {} ({} refused), agent kill -9 and restarts survived {}, deploys rolled back {}, backend restarts {}, disk-full episodes {}, episodes failed {}",
            self.flips_ok,
            self.flips_refused,
            self.restarts_survived,
            self.rollbacks,
            self.backend_restarts,
            self.disk_full_episodes,
            self.episodes_failed
        );
        let _ = writeln!(
            s,
            "agent: at the start {}, at the end {}, before each kill {:?}",
            fp(self.footprint_start),
            fp(self.footprint_end),
            self.footprints
        );
        for n in &self.notes {
            let _ = writeln!(s, "  {n}");
        }
        if self.notes_left_out > 0 {
            let _ = writeln!(s, "  ... and {} more", self.notes_left_out);
        }
        for p in &self.problems {
            let _ = writeln!(s, "  PROBLEM {p}");
        }
        s
    }
}

/// Where each token landed: (colour, times).
fn landed(lines: &[Vec<String>; 2]) -> HashMap<&str, [u32; 2]> {
    let mut at: HashMap<&str, [u32; 2]> = HashMap::new();
    for (c, file) in lines.iter().enumerate() {
        for line in file {
            for word in line.split_whitespace() {
                if word.starts_with("soak-") {
                    at.entry(word).or_default()[c] += 1;
                }
            }
        }
    }
    at
}

pub fn tally(report: &mut Report, sent: &Sent, lines: &[Vec<String>; 2], timeline: &Timeline) {
    let at = landed(lines);
    let count = |token: &str| at.get(token.trim_end()).copied().unwrap_or([0, 0]);
    report.udp_sent = sent.udp.len() as u64;
    for (when, e) in &sent.refused_connects {
        // Opened towards a colour that had just died: inside its window.
        if timeline.may_lose(*when, 0) || timeline.may_lose(*when, 1) {
            report.refused_connects_in_window += 1;
        } else {
            report.refused_connects += 1;
            report.problem(timeline, *when, format!("connect refused: {e}"));
        }
    }
    for (token, when) in &sent.udp {
        let n = count(token);
        match (n[0] + n[1], timeline.colour_at(*when)) {
            (0, _) if timeline.may_lose(*when, 0) || timeline.may_lose(*when, 1) => {
                report.lost_in_window += 1
            }
            (0, _) => {
                report.lost += 1;
                report.problem(timeline, *when, format!("lost {token}"));
            }
            (1, Some(c)) if n[c] == 0 => {
                report.wrong_colour += 1;
                let what = format!("{token} landed on {}", COLOURS[1 - c]);
                report.problem(timeline, *when, what);
            }
            (1, _) => {}
            (n, _) => {
                report.duplicated += 1;
                report.problem(timeline, *when, format!("{token} arrived {n} times"));
            }
        }
    }
    for conn in &sent.tcp {
        report.tcp_connections += 1;
        report.tcp_sent += conn.tokens.len() as u64;
        let colour = timeline.colour_at(conn.opened);
        // A connection lands whole on the colour it opened on.
        let mut seen = [0u64; 2];
        let mut missing = 0;
        for token in &conn.tokens {
            let n = count(token);
            match n[0] + n[1] {
                0 => missing += 1,
                1 => seen[usize::from(n[1] == 1)] += 1,
                n => {
                    report.duplicated += 1;
                    let what = format!("{token} arrived {n} times");
                    report.problem(timeline, conn.opened, what);
                }
            }
        }
        // Where it went: where its messages landed, or with none landed,
        // the colour it opened on (either, if it opened during a change).
        let on: Vec<usize> = match (seen, colour) {
            ([0, 0], Some(c)) => vec![c],
            ([0, 0], None) => vec![0, 1],
            ([b, g], _) => vec![usize::from(g > b)],
        };
        let in_window = timeline
            .loss_windows
            .iter()
            .any(|&(s, e, c)| on.contains(&c) && conn.opened <= e && conn.opened + LIFE >= s);
        let on = on[0];
        if seen[0] > 0 && seen[1] > 0 || colour.is_some_and(|c| seen[1 - c] > 0) {
            report.wrong_colour += seen[1 - on].max(1);
            let what = format!("a connection split or misplaced: {seen:?}, opened on {colour:?}");
            report.problem(timeline, conn.opened, what);
        }
        match (&conn.reset, in_window) {
            (Some(_), true) => report.tcp_resets_in_window += 1,
            (Some(e), false) => {
                report.tcp_resets += 1;
                let opened = conn.opened.duration_since(timeline.origin).as_secs_f64();
                let (at, flows) = conn
                    .reset_at
                    .clone()
                    .unwrap_or((conn.opened, "flows not read".into()));
                let what = format!(
                    "TCP reset on {} (opened at {opened:.3} s; then {flows}): {e}",
                    COLOURS[on]
                );
                report.problem(timeline, at, what);
            }
            (None, _) => {}
        }
        if in_window && conn.reset.is_some() {
            report.lost_in_window += missing;
        } else if missing > 0 {
            report.lost += missing;
            let what = format!("a TCP connection lost {missing} of {}", conn.tokens.len());
            report.problem(timeline, conn.opened, what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::senders::Connection;

    // The books catch each kind of fault, and forgive only in windows.
    #[test]
    fn losses_duplicates_and_misplaced_messages_are_counted() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let timeline = Timeline {
            origin: t0,
            // Green from 1 s on; green may lose from 3 to 4 s.
            changes: vec![(s(1000), s(1010), 1)],
            loss_windows: vec![(s(3000), s(4000), 1)],
            events: vec![],
        };
        let udp = |i: u64, ms| (format!("soak-u-{i} "), s(ms));
        let sent = Sent {
            udp: vec![
                udp(0, 100),  // on blue: fine
                udp(1, 2000), // on green: fine
                udp(2, 2000), // lost
                udp(3, 2000), // twice
                udp(4, 2000), // on blue: wrong
                udp(5, 3500), // lost in the window: forgiven
                udp(6, 1005), // in the flip's window: either colour
            ],
            tcp: vec![
                Connection {
                    opened: s(4500),
                    tokens: vec!["soak-t0-0 ".into(), "soak-t0-1 ".into()],
                    reset: Some("reset".into()),
                    reset_at: None,
                },
                // Opened on green as it died: nothing landed, and that is
                // green's window, not a fault on blue.
                Connection {
                    opened: s(2900),
                    tokens: vec!["soak-t1-0 ".into()],
                    reset: Some("reset".into()),
                    reset_at: None,
                },
            ],
            refused_connects: vec![],
        };
        let lines = [
            vec!["soak-u-0".into(), "soak-u-4".into(), "soak-u-6".into()],
            vec![
                "x soak-u-1".into(),
                "soak-u-3".into(),
                "soak-u-3".into(),
                "soak-t0-0".into(),
            ],
        ];
        let mut r = Report::default();
        tally(&mut r, &sent, &lines, &timeline);
        assert_eq!((r.udp_sent, r.tcp_sent), (7, 3));
        assert_eq!(r.lost, 1 + 1, "soak-u-2 and the reset connection's last");
        assert_eq!(r.lost_in_window, 1 + 1);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.wrong_colour, 1);
        assert_eq!((r.tcp_resets, r.tcp_resets_in_window), (1, 1));
        assert_eq!(r.problems.len(), 5, "{:?}", r.problems);
        assert!(!r.clean());
    }

    // A fault is placed against the chaos nearest to it, so a reset can
    // be told apart as a backend stop's or an agent restart's.
    #[test]
    fn a_fault_is_placed_against_the_nearest_chaos() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let timeline = Timeline {
            origin: t0,
            changes: vec![],
            loss_windows: vec![],
            events: vec![
                (s(1000), s(2000), "Kill9".into()),
                (s(5000), s(5000), "blue's rsyslogd stopped".into()),
            ],
        };
        assert_eq!(timeline.describe(s(1500)), "at 1.500 s, during Kill9");
        assert_eq!(
            timeline.describe(s(4900)),
            "at 4.900 s, 100 ms before blue's rsyslogd stopped"
        );
        assert_eq!(timeline.describe(s(2300)), "at 2.300 s, 300 ms after Kill9");
    }
}
