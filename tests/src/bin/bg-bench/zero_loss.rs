//! Zero-loss throughput as RFC 2544 (section 26.1) defines it: the highest
//! offered rate at which the device loses no more than the allowed share
//! (0.01 % here), found by binary search between a rate known to pass and
//! one known to fail. Each search names its generator and the longest
//! burst it sent: the live-frames generator sends 50 ms batches at full
//! speed, the paced sender one frame per slot.

/// The loss allowed at the zero-loss rate: 0.01 %.
pub const MAX_LOSS: f64 = 0.0001;

/// One trial's outcome at an offered rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    /// The rate the generator really offered (sent over its sending
    /// time), which may fall short of the one asked for.
    pub offered_pps: u32,
    pub sent: u64,
    pub delivered: u64,
    /// Longest run of frames the generator sent back to back.
    pub max_burst: u64,
}

impl Trial {
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        self.sent.saturating_sub(self.delivered) as f64 / self.sent as f64
    }

    pub fn passes(&self) -> bool {
        self.loss() <= MAX_LOSS
    }
}

/// One scenario's search with one generator and traffic.
pub struct Found {
    pub scenario: &'static str,
    pub generator: crate::topology::Gen,
    pub traffic: crate::topology::Traffic,
    pub search: Search,
}

impl Found {
    /// The rate found, and whether it is only a lower bound: the first
    /// trial, at the generator's ceiling, passed.
    pub fn rate(&self) -> Option<(u32, bool)> {
        self.search
            .zero_loss_pps
            .map(|r| (r, self.search.at_ceiling()))
    }

    /// The longest burst in the best passing trial.
    pub fn burst(&self) -> Option<u64> {
        let best = self.search.zero_loss_pps?;
        self.search
            .trials
            .iter()
            .find(|t| t.passes() && t.offered_pps == best)
            .map(|t| t.max_burst)
    }
}

/// The search's answer, with every trial it ran.
#[derive(Debug)]
pub struct Search {
    /// The highest rate that passed; None when even `low` lost too much.
    pub zero_loss_pps: Option<u32>,
    pub trials: Vec<Trial>,
}

/// Binary search between `low` and `high` pps asked of the generator,
/// stopping once the bracket is within `resolution` pps or after
/// `max_trials`. `high` (the generator's own ceiling) is tried first: a
/// device that carries it is limited by the generator, not itself.
pub fn search(
    low: u32,
    high: u32,
    resolution: u32,
    max_trials: usize,
    mut trial: impl FnMut(u32) -> anyhow::Result<Trial>,
) -> anyhow::Result<Search> {
    anyhow::ensure!(low > 0 && low < high, "a search needs 0 < low < high");
    let mut trials: Vec<Trial> = Vec::new();
    let mut best: Option<Trial> = None;
    let mut run = |rate: u32, trials: &mut Vec<Trial>, best: &mut Option<Trial>| {
        let t = trial(rate)?;
        trials.push(t);
        if t.passes() && best.is_none_or(|b| t.offered_pps > b.offered_pps) {
            *best = Some(t);
        }
        anyhow::Ok(t.passes())
    };
    if !run(high, &mut trials, &mut best)? {
        let (mut lo, mut fail) = (low, high);
        while trials.len() < max_trials && fail - lo > resolution {
            let mid = lo + (fail - lo) / 2;
            if run(mid, &mut trials, &mut best)? {
                lo = mid;
            } else {
                fail = mid;
            }
        }
        // Until some trial passed, `low` itself is unproven: try it.
        if best.is_none() && trials.len() < max_trials {
            run(low, &mut trials, &mut best)?;
        }
    }
    Ok(Search {
        // What the generator really offered in the best passing trial.
        zero_loss_pps: best.map(|b| b.offered_pps),
        trials,
    })
}

impl Search {
    /// A search whose first trial (the generator's ceiling) passed found
    /// the generator's limit, not the device's.
    pub fn at_ceiling(&self) -> bool {
        self.trials.len() == 1 && self.zero_loss_pps.is_some()
    }

    /// The rate as a reader needs it: a figure, a lower bound, or none.
    pub fn describe(&self) -> String {
        self.zero_loss_pps.map_or_else(
            || "none: even the lowest rate lost more than 0.01 %".to_owned(),
            |r| {
                let limited = if self.at_ceiling() {
                    ", at least: all the generator could offer passed"
                } else {
                    ""
                };
                format!("{:.3} Mpps{limited}", f64::from(r) / 1e6)
            },
        )
    }
}

/// The scenario's section: each search's rate, burst and every trial, so
/// the search can be checked by hand.
pub fn section(scenario: &str, found: &[Found]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "## Zero-loss throughput: {scenario}

"
    );
    for f in found {
        let trials: Vec<String> = f
            .search
            .trials
            .iter()
            .map(|t| {
                format!(
                    "{:.3} Mpps {:.4} % (burst {})",
                    f64::from(t.offered_pps) / 1e6,
                    100.0 * t.loss(),
                    t.max_burst
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "- {}, {}: {}. Trials, as offered: {}.",
            f.generator.label(),
            f.traffic.label(),
            f.search.describe(),
            trials.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that loses nothing up to `limit` pps and a growing share
    /// past it.
    fn device(limit: u32) -> impl FnMut(u32) -> anyhow::Result<Trial> {
        move |rate| {
            let sent = 1_000_000;
            let delivered = if rate <= limit {
                sent
            } else {
                sent * u64::from(limit) / u64::from(rate)
            };
            Ok(Trial {
                offered_pps: rate,
                sent,
                delivered,
                max_burst: 1,
            })
        }
    }

    #[test]
    fn it_finds_the_limit_within_the_resolution() {
        let s = search(10_000, 3_000_000, 10_000, 30, device(1_234_567)).unwrap();
        let found = s.zero_loss_pps.unwrap();
        assert!(found <= 1_234_567 && 1_234_567 - found <= 10_000, "{found}");
        assert!(
            s.trials
                .iter()
                .all(|t| t.passes() == (t.offered_pps <= 1_234_567))
        );
        assert!(s.trials.len() <= 10, "{} trials", s.trials.len());
    }

    #[test]
    fn the_edges_pass_or_fail_honestly() {
        let s = search(10_000, 3_000_000, 10_000, 30, device(5_000_000)).unwrap();
        assert_eq!((s.zero_loss_pps, s.trials.len()), (Some(3_000_000), 1));
        assert!(
            s.describe().contains("3.000 Mpps, at least"),
            "{}",
            s.describe()
        );
        let found = search(10_000, 3_000_000, 10_000, 30, device(1_000_000)).unwrap();
        assert!(
            !found.describe().contains("at least"),
            "{}",
            found.describe()
        );
        let s = search(10_000, 3_000_000, 10_000, 30, device(5_000)).unwrap();
        assert_eq!(s.zero_loss_pps, None, "even the low rate loses");
        // 0.01 % is allowed, 0.02 % is not.
        let t = |d| Trial {
            offered_pps: 1,
            sent: 10_000,
            delivered: d,
            max_burst: 1,
        };
        assert!(t(9_999).passes() && !t(9_998).passes() && !t(0).passes());
        assert!(
            !Trial {
                offered_pps: 1,
                sent: 0,
                delivered: 0,
                max_burst: 0,
            }
            .passes()
        );
    }
}
