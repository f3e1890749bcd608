//! The differential fuzzer in the suite: 100,000 frames from a fixed seed
//! through the real `bg_steer`, each held against the oracle (see
//! `bg_tests::fuzz`). A disagreement prints its replay command.
use bg_tests::{fuzz, prog::in_netns};

/// Fixed, so the suite runs the same frames every time; `cargo xtask fuzz`
/// draws new ones.
const SEED: u64 = 20_261_204;
const FRAMES: u64 = 100_000;

#[test]
fn a_hundred_thousand_random_frames_agree_with_the_oracle() {
    in_netns(|| {
        let report = fuzz::run(SEED, FRAMES, 20);
        eprint!("{}", report.summary());
        let found: Vec<String> = report.disagreements.iter().map(|d| d.to_string()).collect();
        assert!(found.is_empty(), "{}", found.join("\n"));
        assert_eq!(report.frames, FRAMES);
        // Not vacuous: the frames reached every verdict the oracle knows.
        assert!(report.steered > FRAMES / 4, "{}", report.summary());
        // Direct server return colours, passed as they came.
        assert!(report.steered_dsr > FRAMES / 50, "{}", report.summary());
        assert!(
            report.checksums_verified > FRAMES / 8,
            "{}",
            report.summary()
        );
        for reason in [
            "pass_no_service",
            "pass_malformed",
            "pass_fragment",
            "pass_ipv6_ext",
        ] {
            let n = report.untouched.get(reason).copied().unwrap_or(0);
            assert!(n > 500, "{reason}: {n}\n{}", report.summary());
        }
        for event in [
            "tcp_probation",
            "tcp_syn_on_live_flow",
            "tcp_reopened",
            "tcp_admission_refused",
            // Handshakes on DSR colours, admitted at their ACK.
            "tcp_admitted",
        ] {
            let n = report.tcp_events.get(event).copied().unwrap_or(0);
            assert!(n > 100, "{event}: {n}\n{}", report.summary());
        }
    });
}
