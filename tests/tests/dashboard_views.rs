//! The dashboard as operators also open it: on a phone (390 CSS px wide)
//! and with a dark system setting. Nothing may overflow sideways, dark
//! mode must really be dark, and screen readers hear the active colour
//! and the messages change. The screenshots go to target/ and, refreshed
//! by hand, to docs/ (CONTRIBUTING.md).
use std::{path::PathBuf, time::Duration};

use bg_tests::{
    browser::{DESKTOP, Driver, PHONE, View, attr, in_lab, session_with, text, until},
    http::{BASE, UdpLab},
    lab::{Family, service_addr},
    privileged,
    traffic::{send_paced, sender},
};
use fantoccini::{Client, Locator};

fn target(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(name)
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

async fn number(c: &Client, js: &str) -> anyhow::Result<f64> {
    c.execute(js, vec![])
        .await?
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("{js}: not a number"))
}

/// The page loaded, blue active, both backends up, the drops table full.
async fn loaded(c: &Client) -> anyhow::Result<()> {
    c.goto(&format!("{BASE}/")).await?;
    let settled = until(Duration::from_secs(15), || async {
        let up = text(c, "#services").await.ok()?.matches(" up").count() >= 2;
        let drops = c.find_all(Locator::Css("#drops tr")).await.ok()?.len() >= 4;
        (up && drops && text(c, "#active").await.ok()? == "BLUE").then_some(())
    })
    .await;
    match settled {
        Some(()) => Ok(()),
        None => anyhow::bail!("the page never settled: {:?}", text(c, "body").await),
    }
}

/// Mean luminance of a PNG's pixels, 0 to 1, decoded independently of
/// the browser's own idea of its colours.
fn png_luminance(png: &[u8]) -> f64 {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(
        channels >= 3 && info.bit_depth == png::BitDepth::Eight,
        "{info:?}"
    );
    let px = &buf[..info.buffer_size()];
    let sum: f64 = px
        .chunks(channels)
        .map(|p| {
            (0.2126 * f64::from(p[0]) + 0.7152 * f64::from(p[1]) + 0.0722 * f64::from(p[2])) / 255.0
        })
        .sum();
    sum / (px.len() / channels) as f64
}

/// Relative luminance of a CSS `rgb(r, g, b)` colour, 0 (black) to 1.
fn luminance(css: &str) -> f64 {
    let v: Vec<f64> = css
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .take(3)
        .map(|x| x.trim().parse::<f64>().unwrap_or(0.0) / 255.0)
        .collect();
    0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]
}

async fn style(c: &Client, css: &str, property: &str) -> anyhow::Result<String> {
    let js = format!(
        "return getComputedStyle(document.querySelector({css:?})).getPropertyValue({property:?});"
    );
    Ok(c.execute(&js, vec![])
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn phone(c: Client) -> anyhow::Result<()> {
    let outcome = async {
        loaded(&c).await?;
        let inner = number(&c, "return window.innerWidth;").await?;
        anyhow::ensure!(inner == 390.0, "viewport {inner} px");
        // Nothing makes the page scroll sideways, and every panel fits.
        let wide = number(&c, "return document.documentElement.scrollWidth;").await?;
        anyhow::ensure!(wide <= inner, "the page is {wide} px wide in {inner}");
        let overflowing = c
            .execute(
                "return [...document.querySelectorAll('header, section, #active, .controls')]
                   .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
                   .map((e) => e.id || e.tagName);",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            overflowing.as_array().is_some_and(|a| a.is_empty()),
            "past the right edge: {overflowing}"
        );
        // The flip buttons are reachable, not pushed off screen.
        let right = number(
            &c,
            "return document.querySelector('#flip-green').getBoundingClientRect().right;",
        )
        .await?;
        anyhow::ensure!(right <= inner, "#flip-green ends at {right}");
        let png = c.screenshot().await?;
        anyhow::ensure!(png_size(&png).0 == 390, "{:?}", png_size(&png));
        std::fs::write(target("dashboard-390px.png"), png)?;
        Ok(())
    }
    .await;
    let _ = c.close().await;
    outcome
}

async fn dark(c: Client) -> anyhow::Result<()> {
    let outcome = async {
        loaded(&c).await?;
        let asked = c
            .execute(
                "return matchMedia('(prefers-color-scheme: dark)').matches;",
                vec![],
            )
            .await?;
        anyhow::ensure!(asked == true, "the browser did not ask for dark colours");
        let (bg, fg) = (
            style(&c, "body", "background-color").await?,
            style(&c, "body", "color").await?,
        );
        let panel = style(&c, "section", "background-color").await?;
        anyhow::ensure!(
            luminance(&bg) < 0.1 && luminance(&panel) < 0.15 && luminance(&fg) > 0.7,
            "not dark: background {bg}, panels {panel}, text {fg}"
        );
        let png = c.screenshot().await?;
        let seen = png_luminance(&png);
        anyhow::ensure!(seen < 0.25, "the screenshot is not dark: {seen:.2}");
        std::fs::write(target("dashboard-dark.png"), png)?;
        Ok(())
    }
    .await;
    let _ = c.close().await;
    outcome
}

/// What a desktop session in light colours checks that the other two
/// would repeat: screen-reader live regions, dates on times, the drops.
async fn light(c: Client, year: String) -> anyhow::Result<()> {
    let outcome = async {
        loaded(&c).await?;
        let bg = style(&c, "body", "background-color").await?;
        anyhow::ensure!(luminance(&bg) > 0.9, "light by default: {bg}");
        let seen = png_luminance(&c.screenshot().await?);
        anyhow::ensure!(seen > 0.7, "the light screenshot is dark: {seen:.2}");
        for (css, live) in [("#active", "polite"), ("#message", "polite")] {
            anyhow::ensure!(
                attr(&c, css, "aria-live").await?.as_deref() == Some(live),
                "{css} is not an aria-live region"
            );
        }
        let alert = attr(&c, "#detached", "role").await?;
        anyhow::ensure!(alert.as_deref() == Some("alert"), "#detached: {alert:?}");
        // Every event's time carries its date.
        let first = text(&c, "#timeline li time").await?;
        anyhow::ensure!(first.contains(&year), "no date in {first:?}");
        // Drops, split by what they cost, as /metrics splits them.
        let lost = text(&c, "#drops tr[data-drop=kernel_redirect_err]").await?;
        anyhow::ensure!(lost.contains("lost"), "{lost}");
        let harmless = text(&c, "#drops tr[data-drop=redirect_failed]").await?;
        anyhow::ensure!(harmless.contains("harmless"), "{harmless}");
        Ok(())
    }
    .await;
    let _ = c.close().await;
    outcome
}

#[test]
fn dashboard_fits_a_phone_goes_dark_and_speaks_changes() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let lab = &t.lab;
    let socket = sender(&lab.client, service_addr(Family::V4)).expect("sender");
    let msgs: Vec<String> = (0..1500).map(|i| format!("views-{i}")).collect();
    let traffic = std::thread::spawn(move || send_paced(&socket, &msgs, 100));
    let _driver = Driver::start(lab);
    let year = jiff::Zoned::now().year().to_string();
    let views: [(&str, View); 3] = [
        ("phone", PHONE),
        (
            "dark",
            View {
                dark: true,
                ..DESKTOP
            },
        ),
        ("light", DESKTOP),
    ];
    for (name, view) in views {
        let profile = lab.path(&format!("chromium-{name}"));
        let year = year.clone();
        in_lab(lab, move || async move {
            let c = session_with(profile, view).await?;
            match name {
                "phone" => phone(c).await,
                "dark" => dark(c).await,
                _ => light(c, year).await,
            }
        });
    }
    traffic.join().unwrap().expect("traffic");
}

/// The screenshots in docs/ are what they say: a 390 px wide one, and a
/// dark one, by their pixels.
#[test]
fn the_docs_screenshots_are_the_views_they_name() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let phone = std::fs::read(docs.join("dashboard-390px.png")).expect("docs/dashboard-390px.png");
    assert_eq!(png_size(&phone).0, 390);
    let dark = std::fs::read(docs.join("dashboard-dark.png")).expect("docs/dashboard-dark.png");
    assert_eq!(png_size(&dark).0, DESKTOP.width);
    let seen = png_luminance(&dark);
    assert!(
        seen < 0.25,
        "docs/dashboard-dark.png is not dark: {seen:.2}"
    );
}
