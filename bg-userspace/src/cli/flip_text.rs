//! How `bgctl` prints a flip's answer for people: what changed, a fleet's
//! convergence, and a warning when the flip could not be recorded.
use crate::model::FlipReport;

pub fn format_flip(r: &FlipReport) -> String {
    if let Some(f) = &r.fleet {
        let mut out = format!(
            "{} -> {}: fleet generation {} written; {}\n",
            r.from,
            r.to,
            f.generation,
            match f.converged_ms {
                // Every node cut off or gone: nothing to wait for, and
                // nothing to boast about either.
                Some(_) if f.nodes.is_empty() => {
                    "no live node was there to apply it (see `bgctl fleet status`)".to_owned()
                }
                Some(ms) => format!("every node applied it within {ms} ms"),
                None => format!("NOT applied by {}", f.missing().join(", ")),
            }
        );
        for n in &f.nodes {
            out.push_str(&match n.after_ms {
                Some(ms) => format!("  {:<24} applied after {ms} ms\n", n.node),
                None => format!("  {:<24} did not apply it in time\n", n.node),
            });
        }
        return out.trim_end().to_owned();
    }
    if r.changed {
        format!(
            "{} -> {}: active colour is now {} (map write took {:.1} µs)",
            r.from,
            r.to,
            r.to,
            r.write_ns as f64 / 1000.0
        )
    } else {
        format!("{} is already active; nothing changed", r.to)
    }
}

/// For stderr: a flip that is live but could not be recorded, what that
/// risks and what to do.
pub fn flip_warning(r: &FlipReport) -> Option<String> {
    r.unrecorded.as_ref().map(|why| {
        format!(
            "warning: the flip is live but NOT recorded ({why}). Until the agent writes its state again, an agent that starts with fresh maps (a reboot, the interface recreated) restores {} as on record, and after a restart `bgctl rollback` refuses. Free the state directory's disk, then flip to {} again to record it",
            r.from, r.to
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Colour;

    #[test]
    fn flip_text_says_what_changed_and_how_long_it_took() {
        let r = FlipReport {
            from: Colour::Blue,
            to: Colour::Green,
            changed: true,
            write_ns: 2500,
            fleet: None,
            unrecorded: None,
        };
        assert_eq!(
            format_flip(&r),
            "blue -> green: active colour is now green (map write took 2.5 µs)"
        );
        let same = FlipReport {
            changed: false,
            ..r
        };
        assert_eq!(
            format_flip(&same),
            "green is already active; nothing changed"
        );
    }

    #[test]
    fn a_flip_that_could_not_be_recorded_says_so_and_what_it_risks() {
        let mut r = FlipReport {
            from: Colour::Blue,
            to: Colour::Green,
            changed: true,
            write_ns: 2500,
            fleet: None,
            unrecorded: Some("/var/lib/bluegreen/eth0/state.json: No space left on device".into()),
        };
        assert_eq!(
            format_flip(&r),
            "blue -> green: active colour is now green (map write took 2.5 µs)"
        );
        let warning = flip_warning(&r).expect("a warning");
        assert!(warning.starts_with("warning: the flip is live but NOT recorded (/var/lib/bluegreen/eth0/state.json: No space left on device)"), "{warning}");
        assert!(warning.contains("restores blue"), "{warning}");
        assert!(warning.contains("flip to green again"), "{warning}");
        r.unrecorded = None;
        assert_eq!(flip_warning(&r), None);
    }

    #[test]
    fn a_fleet_flip_with_no_live_node_does_not_claim_convergence() {
        use crate::model::{FleetFlip, NodeConvergence};
        let mut r = FlipReport {
            from: Colour::Blue,
            to: Colour::Green,
            changed: true,
            write_ns: 0,
            unrecorded: None,
            fleet: Some(FleetFlip {
                generation: 4,
                nodes: vec![],
                converged_ms: Some(0),
            }),
        };
        assert_eq!(
            format_flip(&r),
            "blue -> green: fleet generation 4 written; no live node was there to apply it (see `bgctl fleet status`)"
        );
        r.fleet = Some(FleetFlip {
            generation: 4,
            nodes: vec![NodeConvergence {
                node: "a".into(),
                after_ms: Some(7),
            }],
            converged_ms: Some(7),
        });
        assert!(
            format_flip(&r).starts_with(
                "blue -> green: fleet generation 4 written; every node applied it within 7 ms"
            ),
            "{}",
            format_flip(&r)
        );
    }
}
