//! How the agent's log lines look. Under systemd (its stderr is the
//! journal's stream, `JOURNAL_STREAM`) each line starts with its syslog
//! priority, `<3>` for errors to `<7>` for debug, so `journalctl -p err`
//! finds them, and carries no timestamp of its own (the journal adds
//! one). For log shippers, `json` writes one object per line.
use std::io::Write as _;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journal when stderr is the systemd journal's stream, text otherwise.
    #[default]
    Auto,
    /// A timestamp, the level and the message.
    Text,
    /// A syslog priority prefix (sd-daemon(3)) and the message.
    Journal,
    /// One JSON object per line: ts (RFC 3339), level, target, msg.
    Json,
}

/// Installs the logger: RUST_LOG filters (default info), `format` shapes.
pub fn init(format: LogFormat) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match resolve(
        format,
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        stderr_id(),
    ) {
        LogFormat::Journal => {
            b.format(|out, r| {
                writeln!(
                    out,
                    "{}",
                    journal_line(r.level(), r.target(), &r.args().to_string())
                )
            });
        }
        LogFormat::Json => {
            b.format(|out, r| {
                let ts = jiff::Timestamp::now();
                writeln!(
                    out,
                    "{}",
                    json_line(
                        &ts.to_string(),
                        r.level(),
                        r.target(),
                        &r.args().to_string()
                    )
                )
            });
        }
        LogFormat::Text | LogFormat::Auto => {}
    }
    b.init();
}

/// What `auto` means here: journal only when `JOURNAL_STREAM` names the
/// device and inode of our own stderr (systemd's rule: a child whose
/// stderr was redirected inherits the variable but not the stream).
fn resolve(
    format: LogFormat,
    journal_stream: Option<&str>,
    stderr: Option<(u64, u64)>,
) -> LogFormat {
    match format {
        LogFormat::Auto => {
            let ours = journal_stream
                .and_then(|v| v.split_once(':'))
                .and_then(|(d, i)| Some((d.parse().ok()?, i.parse().ok()?)));
            if ours.is_some() && ours == stderr {
                LogFormat::Journal
            } else {
                LogFormat::Text
            }
        }
        f => f,
    }
}

/// stderr's (device, inode).
fn stderr_id() -> Option<(u64, u64)> {
    // SAFETY: fstat of fd 2 into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(2, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One journal line. A message of several lines keeps its priority on
/// each, since the journal takes every line as a record of its own.
fn journal_line(level: log::Level, target: &str, msg: &str) -> String {
    let p = priority(level);
    let short = target.split("::").next().unwrap_or(target);
    msg.lines()
        .map(|l| format!("<{p}>{short}: {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn json_line(ts: &str, level: log::Level, target: &str, msg: &str) -> String {
    serde_json::json!({
        "ts": ts,
        "level": level.as_str(),
        "target": target,
        "msg": msg,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_journal_only_on_our_own_journal_stream() {
        let ours = Some((8, 12345));
        assert_eq!(
            resolve(LogFormat::Auto, Some("8:12345"), ours),
            LogFormat::Journal
        );
        // Inherited by a child whose stderr went elsewhere.
        assert_eq!(
            resolve(LogFormat::Auto, Some("8:999"), ours),
            LogFormat::Text
        );
        assert_eq!(resolve(LogFormat::Auto, None, ours), LogFormat::Text);
        assert_eq!(
            resolve(LogFormat::Auto, Some("garbage"), ours),
            LogFormat::Text
        );
        // An explicit choice wins.
        assert_eq!(
            resolve(LogFormat::Json, Some("8:12345"), ours),
            LogFormat::Json
        );
        assert_eq!(resolve(LogFormat::Journal, None, None), LogFormat::Journal);
    }

    #[test]
    fn journal_lines_carry_the_syslog_priority_on_every_line() {
        assert_eq!(
            journal_line(log::Level::Error, "bluegreen::core::flip", "refused"),
            "<3>bluegreen: refused"
        );
        assert_eq!(
            journal_line(log::Level::Warn, "bluegreen", "a\nb"),
            "<4>bluegreen: a\n<4>bluegreen: b"
        );
        assert!(journal_line(log::Level::Info, "x", "m").starts_with("<6>"));
        assert!(journal_line(log::Level::Debug, "x", "m").starts_with("<7>"));
    }

    #[test]
    fn json_lines_escape_and_parse() {
        let line = json_line(
            "2026-12-03T12:00:00Z",
            log::Level::Warn,
            "bluegreen::api",
            "say \"hi\"\nthere",
        );
        assert!(!line.contains('\n'), "one line: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["msg"], "say \"hi\"\nthere");
        assert_eq!(v["target"], "bluegreen::api");
        assert_eq!(v["ts"], "2026-12-03T12:00:00Z");
    }
}
