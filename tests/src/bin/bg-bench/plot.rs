//! The results' SVG: zero-loss and delivered throughput per scenario, and
//! each colour's rate across flips.
use std::fmt::Write as _;

use crate::{
    results::pps,
    scaling::Point,
    throughput::{FlipOutcome, Outcome},
    topology::{Gen, Traffic},
    zero_loss::Found,
};

/// Three panels: zero-loss Mpps per scenario and generator, delivered Mpps
/// per scenario at maximum load, and packets per second at each colour
/// across the flips (50 ms samples).
pub fn svg(rows: &[Outcome], flips: &[FlipOutcome], found: &[Found], scaling: &[Point]) -> String {
    let rows: Vec<&Outcome> = rows
        .iter()
        .filter(|r| {
            r.rate.is_none() && r.traffic == Traffic::BASE && r.generator == Gen::LiveFrames
        })
        .collect();
    let Some(flips) = flips.iter().find(|f| f.scenario == "bluegreen") else {
        return String::new();
    };
    let (w, h) = (760.0, 520.0 + ZERO_LOSS_PANEL + SCALING_PANEL);
    let mut o = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
    );
    zero_loss_panel(&mut o, found);
    let _ = writeln!(o, "<g transform='translate(0 {ZERO_LOSS_PANEL})'>");
    // Panel 1: bars.
    let max = rows.iter().map(|r| pps(r)).fold(1.0, f64::max);
    let _ = writeln!(
        o,
        "<text x='20' y='22' font-size='15'>Delivered Mpps (UDP syslog, ~100 B, max offered load)</text>"
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * 42.0;
        let len = 520.0 * pps(r) / max;
        let fill = if r.scenario == "bluegreen" {
            "#1f6feb"
        } else {
            "#8b949e"
        };
        let _ = writeln!(o, "<text x='20' y='{}'>{}</text>", y + 20.0, r.scenario);
        let _ = writeln!(
            o,
            "<rect x='110' y='{y}' width='{len:.1}' height='28' fill='{fill}'/>"
        );
        let _ = writeln!(
            o,
            "<text x='{:.1}' y='{}'>{:.2}</text>",
            116.0 + len,
            y + 20.0,
            pps(r) / 1e6
        );
    }
    // Panel 2: per-colour pps across flips, from cumulative samples.
    let top = 250.0;
    let _ = writeln!(
        o,
        "<text x='20' y='{}' font-size='15'>Packets per second at each colour during {} flips at {:.1} Mpps</text>",
        top - 12.0,
        flips.flips(),
        f64::from(flips.rate) / 1e6
    );
    let rates: Vec<(f64, f64, f64)> = flips
        .timeline
        .windows(2)
        .map(|p| {
            let dt = (p[1].t - p[0].t).max(1e-3);
            (
                p[1].t,
                (p[1].blue - p[0].blue) as f64 / dt,
                (p[1].green - p[0].green) as f64 / dt,
            )
        })
        .collect();
    let tmax = rates.last().map_or(1.0, |r| r.0).max(1e-3);
    let ymax = rates.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max);
    let (x0, y0, pw, ph) = (60.0, top + 220.0, 660.0, 200.0);
    let _ = writeln!(
        o,
        "<line x1='{x0}' y1='{y0}' x2='{}' y2='{y0}' stroke='black'/>",
        x0 + pw
    );
    let _ = writeln!(
        o,
        "<line x1='{x0}' y1='{y0}' x2='{x0}' y2='{}' stroke='black'/>",
        y0 - ph
    );
    let _ = writeln!(
        o,
        "<text x='{x0}' y='{}'>0 s</text><text x='{}' y='{}'>{tmax:.1} s</text>",
        y0 + 16.0,
        x0 + pw - 30.0,
        y0 + 16.0
    );
    let _ = writeln!(
        o,
        "<text x='8' y='{}'>{:.2} Mpps</text>",
        y0 - ph + 4.0,
        ymax / 1e6
    );
    for (idx, colour) in [(1usize, "#1f6feb"), (2, "#2da44e")] {
        let points: Vec<String> = rates
            .iter()
            .map(|r| {
                let v = if idx == 1 { r.1 } else { r.2 };
                format!("{:.1},{:.1}", x0 + pw * r.0 / tmax, y0 - ph * v / ymax)
            })
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{}'/>",
            points.join(" ")
        );
    }
    let _ = writeln!(
        o,
        "<text x='{}' y='{}' fill='#1f6feb'>blue</text><text x='{}' y='{}' fill='#2da44e'>green</text>",
        x0 + 10.0,
        y0 - ph - 2.0,
        x0 + 60.0,
        y0 - ph - 2.0
    );
    o.push_str("</g>\n");
    scaling_panel(&mut o, scaling, ZERO_LOSS_PANEL + 520.0);
    o.push_str("</svg>\n");
    o
}

/// Height of the scaling panel, below the others.
const SCALING_PANEL: f64 = 250.0;

/// One small chart per axis (services, flow table fill, CPUs at once):
/// ns per packet at each measured point, one line per path, the points
/// evenly spaced (the axes are 1/16/256, 1/50/100 and 1/N).
fn scaling_panel(o: &mut String, points: &[Point], top: f64) {
    let _ = writeln!(
        o,
        "<text x='20' y='{}' font-size='15'>Scaling: ns per packet (BPF_PROG_TEST_RUN)</text>",
        top + 22.0
    );
    let mut axes: Vec<&str> = Vec::new();
    for p in points {
        if !axes.contains(&p.axis) {
            axes.push(p.axis);
        }
    }
    let colours = ["#1f6feb", "#bf8700", "#2da44e"];
    for (a, axis) in axes.iter().enumerate() {
        let (x0, y0, pw, ph) = (60.0 + a as f64 * 240.0, top + 200.0, 170.0, 115.0);
        let on: Vec<&Point> = points.iter().filter(|p| p.axis == *axis).collect();
        let ymax = on.iter().map(|p| p.ns_per_packet).fold(1.0, f64::max) * 1.15;
        let mut xs: Vec<u32> = on.iter().map(|p| p.x).collect();
        xs.dedup();
        let _ = writeln!(
            o,
            "<line x1='{x0}' y1='{y0}' x2='{}' y2='{y0}' stroke='black'/><line x1='{x0}' y1='{y0}' x2='{x0}' y2='{}' stroke='black'/><text x='{x0}' y='{}'>{axis}</text><text x='{}' y='{}'>{ymax:.0} ns</text>",
            x0 + pw,
            y0 - ph,
            y0 + 30.0,
            x0 - 50.0,
            y0 - ph + 4.0
        );
        let at = |x: u32| {
            let i = xs.iter().position(|v| *v == x).unwrap_or(0);
            x0 + 10.0 + (pw - 20.0) * i as f64 / (xs.len().max(2) - 1) as f64
        };
        for x in &xs {
            let _ = writeln!(
                o,
                "<text x='{:.1}' y='{}'>{x}</text>",
                at(*x) - 6.0,
                y0 + 14.0
            );
        }
        let mut paths: Vec<&str> = Vec::new();
        for p in &on {
            if !paths.contains(&p.path) {
                paths.push(p.path);
            }
        }
        for (k, path) in paths.iter().enumerate() {
            let colour = colours[k % colours.len()];
            let line: Vec<String> = on
                .iter()
                .filter(|p| p.path == *path)
                .map(|p| format!("{:.1},{:.1}", at(p.x), y0 - ph * p.ns_per_packet / ymax))
                .collect();
            let _ = writeln!(
                o,
                "<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/><text x='{}' y='{}' fill='{colour}' font-size='10'>{path}</text>",
                line.join(" "),
                x0,
                top + 44.0 + k as f64 * 12.0
            );
        }
    }
}

/// Height of the zero-loss panel, above the others.
const ZERO_LOSS_PANEL: f64 = 300.0;

/// Bars of zero-loss Mpps for UDP IPv4 100 B: one group per scenario, one
/// bar per generator; a lower bound is labelled ">=".
fn zero_loss_panel(o: &mut String, found: &[Found]) {
    let base: Vec<&Found> = found
        .iter()
        .filter(|f| f.traffic == Traffic::BASE)
        .collect();
    let max = base
        .iter()
        .filter_map(|f| f.search.zero_loss_pps)
        .map(f64::from)
        .fold(1.0, f64::max);
    let _ = writeln!(
        o,
        "<text x='20' y='22' font-size='15'>Zero-loss Mpps (RFC 2544, loss &lt;= 0.01 %, UDP syslog ~100 B)</text>"
    );
    let mut y = 36.0;
    for scenario in crate::throughput::SCENARIOS {
        let _ = writeln!(o, "<text x='20' y='{}'>{scenario}</text>", y + 26.0);
        for f in base.iter().filter(|f| f.scenario == scenario) {
            let (fill, label) = match f.generator {
                Gen::Paced => ("#bf8700", "paced"),
                _ => ("#1f6feb", "live frames"),
            };
            let rate = f.search.zero_loss_pps.map_or(0.0, f64::from);
            let len = 480.0 * rate / max;
            let text = match f.rate() {
                Some((r, true)) => format!(">= {:.3} ({label})", f64::from(r) / 1e6),
                Some((r, false)) => format!("{:.3} ({label})", f64::from(r) / 1e6),
                None => format!("none ({label})"),
            };
            let _ = writeln!(
                o,
                "<rect x='110' y='{y}' width='{len:.1}' height='14' fill='{fill}'/><text x='{:.1}' y='{}'>{text}</text>",
                116.0 + len,
                y + 12.0
            );
            y += 17.0;
        }
        y += 16.0;
    }
}
