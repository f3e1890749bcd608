//! What a re-read config changes against the running one, for people:
//! `bgctl reload` and `check-config --against` print it.
use super::Config;

/// One line per change: services by name, then each other section.
pub fn changes(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for s in &new.services {
        match running.services.iter().find(|r| r.name == s.name) {
            None => out.push(format!("service {} added", s.name)),
            Some(r) if r != s => out.push(format!(
                "service {} changed: {}",
                s.name,
                service_fields(r, s).join(", ")
            )),
            Some(_) => {}
        }
    }
    for r in &running.services {
        if !new.services.iter().any(|s| s.name == r.name) {
            out.push(format!("service {} removed", r.name));
        }
    }
    let sections = [
        ("[tcp]", running.tcp != new.tcp),
        ("[deploy]", running.deploy != new.deploy),
        ("[dataplane]", running.attach != new.attach),
        ("[fleet]", running.fleet != new.fleet),
    ];
    for (name, changed) in sections {
        if changed {
            out.push(format!("{name} changed"));
        }
    }
    out
}

fn service_fields(r: &super::Service, s: &super::Service) -> Vec<&'static str> {
    let fields = [
        ("protocol", r.protocol != s.protocol),
        ("listen", r.listen != s.listen),
        ("blue", r.blue != s.blue),
        ("green", r.green != s.green),
        ("health", r.health != s.health),
        ("app", r.app != s.app),
        ("tls", r.tls != s.tls),
        ("shadow", r.shadow != s.shadow),
    ];
    fields
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[service]]
name = "a"
protocol = "udp"
listen = "198.18.0.1:514"
blue = "198.18.1.2:514"
green = "198.18.2.2:514"
"#;

    fn parse(text: &str) -> Config {
        Config::parse(std::path::Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn names_each_service_and_section_that_changed() {
        let running = parse(BASE);
        assert!(changes(&running, &parse(BASE)).is_empty());
        let moved = BASE.replace("198.18.2.2:514", "198.18.2.3:514");
        assert_eq!(
            changes(&running, &parse(&moved)),
            ["service a changed: green"]
        );
        let more = format!(
            "{}\n[[service]]\nname = \"b\"\nprotocol = \"udp\"\nlisten = \"198.18.0.1:5514\"\nblue = \"198.18.1.2:5514\"\ngreen = \"198.18.2.2:5514\"\n[deploy]\nbake_s = 5\n",
            BASE.replace("name = \"a\"", "name = \"c\"")
        );
        assert_eq!(
            changes(&running, &parse(&more)),
            [
                "service c added",
                "service b added",
                "service a removed",
                "[deploy] changed"
            ]
        );
    }
}
