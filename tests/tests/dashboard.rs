//! The dashboard in a real browser: headless Chromium driven through
//! WebDriver (chromedriver, Debian `chromium-driver`), inside the lab's
//! steering namespace where the agent serves on loopback.
use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use bg_tests::{
    http::{BASE, UdpLab},
    lab::{Family, Lab, service_addr},
    privileged,
    traffic::{send_paced, sender},
    wait_for,
};
use fantoccini::{ClientBuilder, Locator};

/// chromedriver, killed when the test ends (its browser dies with it, and
/// the namespace's deletion kills whatever is left).
struct Driver(Child);

impl Driver {
    /// chromedriver in the lab's steering namespace, logging to the lab.
    fn start(lab: &Lab) -> Self {
        let child = lab
            .lb
            .command("chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(lab.path("chromedriver.log")).unwrap(),
            ))
            .spawn()
            .expect("chromedriver (Debian chromium-driver; `cargo xtask setup` installs it)");
        Self(child)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const DRIVER_PORT: u16 = 9515;

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

    let result = lab.lb.enter(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(drive(token, profile, shot))
    });
    traffic.join().unwrap().expect("traffic");
    result.expect("enter namespace").unwrap_or_else(|e| {
        panic!(
            "{e:#}\nchromedriver log:\n{}",
            std::fs::read_to_string(lab.path("chromedriver.log")).unwrap_or_default()
        )
    });
    assert_eq!(t.active(), "green", "the flip really happened");
}

async fn text(c: &fantoccini::Client, css: &str) -> anyhow::Result<String> {
    Ok(c.find(Locator::Css(css)).await?.text().await?)
}

/// Polls `f` every 200 ms until it gives Some or `limit` passes.
async fn until<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A headless Chromium session through the chromedriver on DRIVER_PORT.
async fn session(profile: std::path::PathBuf) -> anyhow::Result<fantoccini::Client> {
    std::fs::create_dir_all(&profile)?;
    // chromedriver needs a moment to listen.
    let ready = wait_for(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT))
            .ok()
            .map(|_| ())
    });
    anyhow::ensure!(
        ready.is_some(),
        "chromedriver did not listen on {DRIVER_PORT}"
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1100",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    Ok(
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
            .await?,
    )
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
    let result = lab.lb.enter(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
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
            })
    });
    result.expect("enter namespace").unwrap_or_else(|e| {
        panic!(
            "{e:#}\nchromedriver log:\n{}",
            std::fs::read_to_string(lab.path("chromedriver.log")).unwrap_or_default()
        )
    });
}
