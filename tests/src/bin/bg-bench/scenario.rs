//! One throughput scenario on its topology: every generator at maximum
//! load, the fixed rates, the zero-loss searches, and flips under load.
use anyhow::Result;

use crate::{results, shadow, throughput, topology, zero_loss};

/// Fixed offered rates, frames per second.
const RATES: [u32; 4] = [100_000, 500_000, 1_000_000, 2_000_000];

/// What one scenario measured.
pub struct Measured {
    pub rows: Vec<throughput::Outcome>,
    pub flips: Vec<throughput::FlipOutcome>,
    pub zero_loss: Vec<zero_loss::Found>,
}

/// Every run of one scenario on one topology: maximum load for each
/// traffic variant and generator, the fixed rates, the zero-loss searches,
/// and flips under load (not for the ceiling, which has nothing to flip).
/// Sections for the results (the scrape cost) go into `sections`.
pub fn run(name: &'static str, quick: bool, sections: &mut Vec<String>) -> Result<Measured> {
    use std::time::Duration;
    use topology::{Gen, Traffic};
    println!("scenario {name}: setting up");
    let bench = throughput::Bench::new(name)?;
    // Bounded in frames: the slow paths get fewer, so no run lasts long.
    let max_total = match (name, quick) {
        (_, true) => 200_000,
        ("nftables", false) => 2_000_000,
        ("relay", false) => 1_000_000,
        _ => 5_000_000,
    };
    // trafgen and the paced sender reach about 0.25 Mpps: fewer frames.
    let slow_total = if quick { 100_000 } else { 1_000_000 };
    let rate_seconds = if quick { 0.2 } else { 1.0 };
    let mut rows = Vec::new();
    for traffic in Traffic::ALL {
        println!("  {name}: {} at maximum load", traffic.label());
        rows.push(bench.measure(traffic, max_total, None)?);
    }
    for traffic in Traffic::ALL {
        println!("  {name}: {} at trafgen's maximum", traffic.label());
        rows.push(bench.measure_trafgen(traffic, slow_total)?);
    }
    println!(
        "  {name}: {} at the paced sender's maximum",
        Traffic::BASE.label()
    );
    rows.push(bench.measure_paced(Traffic::BASE, slow_total, None)?);
    for rate in RATES {
        println!(
            "  {name}: {} at {:.1} Mpps",
            Traffic::BASE.label(),
            f64::from(rate) / 1e6
        );
        let total = (f64::from(rate) * rate_seconds) as u32;
        rows.push(bench.measure(Traffic::BASE, total, Some(rate))?);
    }
    println!("  {name}: zero-loss throughput (RFC 2544, loss <= 0.01 %)");
    let mut found = Vec::new();
    let searches = [
        (Gen::Paced, Traffic::BASE),
        (Gen::LiveFrames, Traffic::BASE),
        (
            Gen::LiveFrames,
            Traffic::new(bg_tests::lab::Family::V6, 100),
        ),
    ];
    for (generator, traffic) in searches {
        // Up to what this generator offered at maximum load here: past
        // its own ceiling a trial would measure the generator.
        let ceiling = rows
            .iter()
            .find(|o: &&throughput::Outcome| {
                o.generator == generator && o.traffic == traffic && o.rate.is_none()
            })
            .map_or(100_000, |o| (o.sent as f64 / o.seconds) as u32);
        let (low, resolution) = match (generator, quick) {
            (Gen::Paced, true) => (10_000, 25_000),
            (Gen::Paced, false) => (10_000, 2_500),
            (_, true) => (50_000, 200_000),
            (_, false) => (50_000, 25_000),
        };
        let search = zero_loss::search(
            low,
            ceiling.max(low + 1),
            resolution,
            if quick { 4 } else { 12 },
            |rate| {
                let total = ((f64::from(rate) * rate_seconds) as u32).max(20_000);
                let o = match generator {
                    Gen::Paced => bench.measure_paced(traffic, total, Some(rate))?,
                    _ => bench.measure(traffic, total, Some(rate))?,
                };
                Ok(zero_loss::Trial {
                    offered_pps: (o.sent as f64 / o.seconds) as u32,
                    sent: o.sent,
                    delivered: o.delivered,
                    max_burst: o.max_burst,
                })
            },
        )?;
        found.push(zero_loss::Found {
            scenario: name,
            generator,
            traffic,
            search,
        });
    }
    let section = zero_loss::section(name, &found);
    print!("{section}");
    sections.push(section);
    if name == "bluegreen" {
        println!("  {name}: the cost of a /metrics scrape");
        let cost = bench.scrape_cost(max_total)?;
        print!("{}", cost.section());
        sections.push(cost.section());
        println!("  {name}: shadow copies at 0 %, 0.01 % and 100 %");
        let section = shadow::run(&bench, max_total, if quick { 1 } else { 3 })?;
        print!("{section}");
        sections.push(section);
    }
    // Flip under load. bluegreen: 1000 flips at 1 Mpps. The others flip
    // the way their operators would (nft -f, a reload), fewer times and at
    // a rate they carry, with time after each flip to see misrouting end.
    let (total, flips, rate, gap) = match (name, quick) {
        ("limit", _) => {
            return Ok(Measured {
                rows,
                flips: Vec::new(),
                zero_loss: found,
            });
        }
        ("bluegreen", false) => (6_000_000, 1000, 1_000_000, 5),
        ("bluegreen", true) => (1_000_000, 100, 1_000_000, 5),
        ("nftables", false) => (1_100_000, 4, 200_000, 1000),
        ("relay", false) => (275_000, 4, 50_000, 1000),
        (_, true) => (60_000, 2, 50_000, 400),
        _ => unreachable!("scenarios are listed above"),
    };
    println!(
        "  {name}: {flips} flips at {:.2} Mpps",
        f64::from(rate) / 1e6
    );
    // The slower paths lose some frames at any rate (the generator's 50 ms
    // batches arrive as bursts); the same run without flips tells that
    // loss apart from the flips'.
    let baseline = match name {
        "bluegreen" => None,
        _ => Some(bench.flips(total, 0, rate, Duration::ZERO)?.lost()),
    };
    let mut o = bench.flips(total, flips, rate, Duration::from_millis(gap))?;
    o.baseline_lost = baseline;
    println!("  {}", results::flip_line(&o));
    if let Some(c) = bench.agent_counters() {
        println!("  data path counters: {c}");
    }
    Ok(Measured {
        rows,
        flips: vec![o],
        zero_loss: found,
    })
}
