//! The dashboard in a real browser: headless Chromium driven through
//! WebDriver (chromedriver, Debian `chromium-driver`), inside the lab's
//! steering namespace where the agent serves on loopback.
use std::time::{Duration, Instant};

use bg_tests::{
    browser::{Driver, click_confirmed, in_lab, or_page, session, text, until},
    http::{BASE, UdpLab},
    lab::{Family, service_addr},
    privileged,
    traffic::{send_paced, sender},
};
use fantoccini::Locator;

#[test]
fn dashboard_shows_the_colour_flips_with_the_token_and_charts_traffic() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let lab = &t.lab;
    let token = t.token();

    // Traffic for the chart: 200 msg/s for 12 s, bounded.
    let socket = sender(&lab.client, service_addr(Family::V4)).expect("sender");
    let msgs: Vec<String> = (0..2400).map(|i| format!("dash-{i}")).collect();
    let traffic = std::thread::spawn(move || send_paced(&socket, &msgs, 200));

    let _driver = Driver::start(lab);
    let profile = lab.path("chromium-profile");
    let shot = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");

    in_lab(lab, move || drive(token, profile, shot));
    traffic.join().unwrap().expect("traffic");
    assert_eq!(t.active(), "green", "the flip really happened");
}

async fn drive(
    token: String,
    profile: std::path::PathBuf,
    shot: std::path::PathBuf,
) -> anyhow::Result<()> {
    let c = session(profile).await?;
    let outcome = async {
        c.goto(&format!("{BASE}/")).await?;
        let blue = until(Duration::from_secs(10), || async {
            (text(&c, "#active").await.ok()? == "BLUE").then_some(())
        })
        .await;
        anyhow::ensure!(
            blue.is_some(),
            "the page never showed blue active: {:?}",
            text(&c, "#active").await
        );
        // Wait until green is healthy by the page, then flip with the
        // token: a prompt for it, then a confirmation.
        until(Duration::from_secs(15), || async {
            let cells = text(&c, "#services").await.ok()?;
            (cells.matches(" up").count() >= 2).then_some(())
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("backends never showed up on the page"))?;
        c.find(Locator::Css("#flip-green")).await?.click().await?;
        let asked = c.get_alert_text().await?;
        anyhow::ensure!(asked.contains("token"), "prompt: {asked}");
        c.send_alert_text(&token).await?;
        c.accept_alert().await?;
        let confirm = c.get_alert_text().await?;
        anyhow::ensure!(confirm.contains("GREEN"), "confirmation: {confirm}");
        c.accept_alert().await?;
        let green = until(Duration::from_secs(5), || async {
            (text(&c, "#active").await.ok()? == "GREEN").then_some(())
        })
        .await;
        anyhow::ensure!(
            green.is_some(),
            "green never showed within 5 s: {:?}, message {:?}",
            text(&c, "#active").await,
            text(&c, "#message").await
        );
        let rows = c.find_all(Locator::Css("#counters tr")).await?;
        let off = c.find_all(Locator::Css("#counters tr.unavailable")).await?;
        anyhow::ensure!(
            rows.len() >= 15 && off.is_empty(),
            "every data-path counter counts here: {} rows, {} unavailable",
            rows.len(),
            off.len()
        );
        let events = text(&c, "#timeline").await?;
        anyhow::ensure!(events.contains("flip blue → green"), "timeline: {events}");
        // Traffic on the chart: its peak and the blue rate are nonzero.
        let peak = until(Duration::from_secs(10), || async {
            let el = c.find(Locator::Css("#chart-pps")).await.ok()?;
            let peak: f64 = el.attr("data-peak").await.ok()??.parse().ok()?;
            (peak > 0.0).then_some(peak)
        })
        .await;
        anyhow::ensure!(peak.is_some(), "the chart never showed traffic");
        // A few seconds of line for the screenshot.
        until(Duration::from_secs(10), || async {
            let el = c.find(Locator::Css("#chart-pps")).await.ok()?;
            let n: u32 = el.attr("data-samples").await.ok()??.parse().ok()?;
            (n >= 6).then_some(())
        })
        .await;
        let lines = c.find_all(Locator::Css("#chart-pps polyline")).await?;
        anyhow::ensure!(lines.len() == 2, "one line per colour");
        let png = c.screenshot().await?;
        anyhow::ensure!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(&shot, png)?;
        Ok(())
    }
    .await;
    let _ = c.close().await;
    outcome
}

/// On a host without kernel BTF, the page marks the counters that cannot
/// count as unavailable and says why, rather than showing 0.
#[test]
fn dashboard_says_which_counters_cannot_count() {
    if !privileged() {
        return;
    }
    let t = UdpLab::launched(&["blue", "green"], bg_tests::http::NO_KERNEL_BTF);
    let lab = &t.lab;
    let _driver = Driver::start(lab);
    let profile = lab.path("chromium-profile");
    in_lab(lab, move || async move {
        let c = session(profile).await?;
        let outcome = async {
            c.goto(&format!("{BASE}/")).await?;
            let row = "#counters tr.unavailable[data-counter=xmit_drops]";
            until(Duration::from_secs(10), || async {
                c.find(Locator::Css(row)).await.ok().map(|_| ())
            })
            .await
            .ok_or_else(|| anyhow::anyhow!("no unavailable xmit_drops row"))?;
            let shown = text(&c, row).await?;
            anyhow::ensure!(
                shown.contains("unavailable") && shown.contains("BTF"),
                "row: {shown}"
            );
            let counting = "#counters tr[data-counter=kernel_redirect_err]";
            let shown = text(&c, counting).await?;
            anyhow::ensure!(!shown.contains("unavailable"), "row: {shown}");
            Ok(())
        }
        .await;
        let _ = c.close().await;
        outcome
    });
}

/// In fleet mode the page shows every node: its generation, colour,
/// health and whether its config drifted. A flip from the page is a fleet
/// flip: refused while a node drifts, saying so; once that node is gone,
/// it moves every node and reports the convergence.
#[test]
fn dashboard_shows_the_fleet_and_flips_it() {
    if !privileged() {
        return;
    }
    use bg_tests::{
        etcd::{EtcdCluster, fleet_node},
        traffic::Sink,
    };
    let cluster = EtcdCluster::start(1).expect("etcd");
    let (lab0, _link0, agent0) = fleet_node(&cluster, 0, "").expect("node0");
    let (lab1, _link1, agent1) = fleet_node(&cluster, 1, "").expect("node1");
    let (lab2, _link2, mut agent2) =
        fleet_node(&cluster, 2, "[tcp]\nidle_timeout = 60\n").expect("node2");
    let _sinks: Vec<Sink> = [&lab0, &lab1, &lab2]
        .iter()
        .flat_map(|l| {
            ["blue", "green"].map(|c| Sink::start(&l.lb, l.backend(c, Family::V4)).expect("sink"))
        })
        .collect();
    let token = String::from_utf8(agent0.ctl(&["token"]).stdout)
        .unwrap()
        .trim()
        .to_owned();
    // node2 stops when the page has shown its drift, and says when gone.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (gone_tx, gone_rx) = std::sync::mpsc::channel::<bool>();
    let stopper = std::thread::spawn(move || {
        if stop_rx.recv().is_ok() {
            let _ = gone_tx.send(agent2.terminate());
        }
        agent2
    });
    let _driver = Driver::start(&lab0);
    let profile = lab0.path("chromium-profile");
    let result = lab0.lb.enter(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(drive_fleet(token, profile, stop_tx, gone_rx))
    });
    let _agent2 = stopper.join().unwrap();
    result.expect("enter namespace").unwrap_or_else(|e| {
        panic!(
            "{e:#}\nchromedriver log:\n{}",
            std::fs::read_to_string(lab0.path("chromedriver.log")).unwrap_or_default()
        )
    });
    for a in [&agent0, &agent1] {
        assert_eq!(a.status()["active"], "green", "the fleet flip moved it");
    }
}

async fn drive_fleet(
    token: String,
    profile: std::path::PathBuf,
    stop_node2: std::sync::mpsc::Sender<()>,
    node2_gone: std::sync::mpsc::Receiver<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let c = session(profile).await?;
    let outcome = async {
        c.goto(&format!("{BASE}/")).await?;
        // Three healthy nodes, node2 flagged for drift.
        let shown = until(Duration::from_secs(60), || async {
            let rows = c.find_all(Locator::Css("#fleet-nodes tr")).await.ok()?;
            let table = text(&c, "#fleet-nodes").await.ok()?;
            (rows.len() == 3 && table.matches("healthy").count() == 3).then_some(table)
        })
        .await;
        let Some(shown) = shown else {
            anyhow::bail!(
                "the page never showed 3 healthy nodes: {:?}; fleet summary {:?}",
                text(&c, "#fleet-nodes").await,
                text(&c, "#fleet-summary").await
            );
        };
        println!("3 healthy nodes on the page after {:?}", started.elapsed());
        let drifted = text(&c, "#fleet-nodes tr.drift").await?;
        anyhow::ensure!(
            drifted.contains("node2") && drifted.contains("drift"),
            "{shown}"
        );
        let drifted_rows = c.find_all(Locator::Css("#fleet-nodes tr.drift")).await?;
        anyhow::ensure!(drifted_rows.len() == 1, "only node2 drifts: {shown}");
        let summary = text(&c, "#fleet-summary").await?;
        anyhow::ensure!(
            summary.contains("connected") && summary.contains("node0"),
            "{summary}"
        );

        let flip = async |expect: &str| -> anyhow::Result<String> {
            c.find(Locator::Css("#flip-green")).await?.click().await?;
            if c.get_alert_text().await?.contains("token") {
                c.send_alert_text(&token).await?;
                c.accept_alert().await?;
            }
            c.accept_alert().await?;
            let said = until(Duration::from_secs(10), || async {
                let said = text(&c, "#message").await.ok()?;
                said.contains(expect).then_some(said)
            })
            .await;
            match said {
                Some(said) => Ok(said),
                None => anyhow::bail!(
                    "the page never said {expect:?}: {:?}",
                    text(&c, "#message").await
                ),
            }
        };
        let refused = flip("config drift").await?;
        anyhow::ensure!(refused.contains("node2"), "{refused}");
        stop_node2.send(())?;
        anyhow::ensure!(node2_gone.recv()?, "node2's agent stopped");
        until(Duration::from_secs(10), || async {
            let rows = c.find_all(Locator::Css("#fleet-nodes tr")).await.ok()?;
            (rows.len() == 2).then_some(())
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("node2 never left the page's fleet"))?;
        let said = flip("every node applied it within").await?;
        anyhow::ensure!(said.contains("fleet generation 1: blue → green"), "{said}");
        let moved = until(Duration::from_secs(10), || async {
            let table = text(&c, "#fleet-nodes").await.ok()?;
            (table.matches("green").count() >= 2 && text(&c, "#active").await.ok()? == "GREEN")
                .then_some(())
        })
        .await;
        anyhow::ensure!(moved.is_some(), "the page shows both nodes on green");
        Ok(())
    }
    .await;
    let _ = c.close().await;
    outcome
}

/// The split on the page: a shift from its own control, the split shown
/// with each colour's traffic; a stepped deployment paused at its step,
/// promoted by its button, then aborted by its button.
#[test]
fn dashboard_shifts_shows_the_split_and_promotes_and_aborts_a_deployment() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let lab = &t.lab;
    let token = t.token();
    let socket = sender(&lab.client, service_addr(Family::V4)).expect("sender");
    let msgs: Vec<String> = (0..3000).map(|i| format!("split-{i}")).collect();
    let traffic = std::thread::spawn(move || send_paced(&socket, &msgs, 100));
    let _driver = Driver::start(lab);
    let profile = lab.path("chromium-profile");
    in_lab(lab, move || drive_split(token, profile));
    traffic.join().unwrap().expect("traffic");
    let s = t.agent.status();
    assert_eq!(
        (s["active"].as_str(), s["split"].as_u64()),
        (Some("blue"), None),
        "{s}"
    );
}

async fn drive_split(token: String, profile: std::path::PathBuf) -> anyhow::Result<()> {
    let c = session(profile).await?;
    let outcome = async {
        c.goto(&format!("{BASE}/")).await?;
        until(Duration::from_secs(15), || async {
            let cells = text(&c, "#services").await.ok()?;
            (cells.matches(" up").count() >= 2).then_some(())
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("backends never showed up on the page"))?;
        c.find(Locator::Css("#shift-weight"))
            .await?
            .send_keys("10")
            .await?;
        let asked = click_confirmed(&c, "#shift-green", &token).await?;
        anyhow::ensure!(
            asked.contains("10%") && asked.contains("GREEN"),
            "confirmation: {asked}"
        );
        let shown = until(Duration::from_secs(5), || async {
            let el = c.find(Locator::Css("#split")).await.ok()?;
            (el.attr("data-green").await.ok()?? == "1000").then_some(())
        })
        .await;
        anyhow::ensure!(
            shown.is_some(),
            "no split on the page: {:?}",
            text(&c, "#message").await
        );
        // The traffic line needs a sample or two.
        let found = until(Duration::from_secs(5), || async {
            let t = text(&c, "#split").await.ok()?;
            t.contains("pkt/s").then_some(t)
        })
        .await;
        let split = or_page(found, &c, "#split", "the split shows no traffic").await?;
        anyhow::ensure!(split.contains("blue 90% / green 10%"), "split: {split}");
        // A deployment waits for no split: the flip to blue ends it.
        click_confirmed(&c, "#flip-blue", &token).await?;
        until(Duration::from_secs(5), || async {
            let el = c.find(Locator::Css("#split")).await.ok()?;
            (el.attr("hidden").await.ok()?.is_some()).then_some(())
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("the split stayed on the page after the flip"))?;
        // The deployment from the page's own form: a 20 % step that
        // waits for the Promote button.
        for (field, value) in [("#deploy-steps", "20"), ("#deploy-pause", "indefinite")] {
            c.find(Locator::Css(field)).await?.send_keys(value).await?;
        }
        c.find(Locator::Css("#deploy-force")).await?.click().await?;
        let asked = click_confirmed(&c, "#deploy-start", &token).await?;
        anyhow::ensure!(
            asked.contains("GREEN") && asked.contains("20%"),
            "confirmation: {asked}"
        );
        // Validation takes a moment; then the step waits for the button.
        let found = until(Duration::from_secs(30), || async {
            let b = c.find(Locator::Css("#promote")).await.ok()?;
            (b.attr("disabled").await.ok()?.is_none()).then_some(())
        })
        .await;
        or_page(found, &c, "#deploy", "promote never enabled").await?;
        let steps = text(&c, "#steps").await?;
        anyhow::ensure!(steps.contains("at step 1 of 1 (20%)"), "steps: {steps}");
        click_confirmed(&c, "#promote", &token).await?;
        let found = until(Duration::from_secs(10), || async {
            (text(&c, "#deploy-phase").await.ok()? == "bake"
                && text(&c, "#active").await.ok()? == "GREEN")
                .then_some(())
        })
        .await;
        or_page(found, &c, "#deploy", "never switched").await?;
        click_confirmed(&c, "#abort", &token).await?;
        let found = until(Duration::from_secs(10), || async {
            (text(&c, "#deploy-phase").await.ok()? == "rolled-back"
                && text(&c, "#active").await.ok()? == "BLUE")
                .then_some(())
        })
        .await;
        or_page(found, &c, "#deploy", "abort did not roll back").await?;
        let events = text(&c, "#timeline").await?;
        anyhow::ensure!(
            events.contains("shift blue → blue 90% / green 10%"),
            "timeline: {events}"
        );
        Ok(())
    }
    .await;
    let _ = c.close().await;
    outcome
}
