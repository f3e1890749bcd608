//! Output of the operations commands: `bgctl reload`, `bgctl check-config`
//! and `--dry-run`.

/// `bgctl reload` for people.
pub fn format_reload(r: &crate::model::ReloadReport) -> String {
    if !r.applying {
        return format!(
            "{}: nothing changed; the agent goes on as it is\n",
            r.config
        );
    }
    let mut out = format!(
        "{}: {} change(s); the agent restarts itself in place with it (the data path keeps steering):\n",
        r.config,
        r.changes.len()
    );
    for c in &r.changes {
        out.push_str(&format!("  {c}\n"));
    }
    out
}

/// `bgctl check-config` for people: what the agent would run.
pub fn format_check(file: &std::path::Path, c: &crate::config::Config) -> String {
    let mut out = format!(
        "{}: valid: {} service(s)\n",
        file.display(),
        c.services.len()
    );
    use crate::model::Colour;
    for s in &c.services {
        // A colour's mode is shown when it is not the default NAT.
        let via = |c: Colour| match s.mode(c) {
            m if m.is_dsr() => format!(" ({m})"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {:<20} {} {} -> blue {}{}, green {}{}\n",
            s.name,
            s.protocol,
            s.listen,
            s.blue,
            via(Colour::Blue),
            s.green,
            via(Colour::Green)
        ));
    }
    out
}

/// `--dry-run` for people.
pub fn format_preview(p: &crate::model::Preview) -> String {
    let mut out = if p.changes {
        format!("dry run: would {}", p.action)
    } else {
        format!("dry run: {}; nothing would change", p.action)
    };
    if p.forced {
        out.push_str(&format!(", forced although: {}", p.problems.join("; ")));
    }
    out.push('\n');
    for (i, step) in p.plan.iter().enumerate() {
        out.push_str(&format!("  {}. {step}\n", i + 1));
    }
    out.push_str("nothing was written\n");
    out
}
