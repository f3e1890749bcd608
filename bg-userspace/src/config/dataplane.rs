//! `[dataplane]`: where the steering program runs.
use crate::model::FieldProblem;

/// Where to steer: `[dataplane] attach` in the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachRequest {
    /// XDP (driver mode, or as `--xdp-mode` says).
    #[default]
    Xdp,
    /// TC ingress (tcx): same-host senders whose checksums are partial
    /// (containers, veth) work untouched, and any driver will do.
    Tc,
    /// Native XDP where the driver has it, TC ingress where it does not
    /// (rather than generic XDP, which TC beats on every count).
    Auto,
}

impl AttachRequest {
    pub const ACCEPTED: &str = "\"xdp\", \"tc\" or \"auto\"";

    /// `[dataplane] attach`; the default when unset.
    pub(super) fn validate(text: Option<&str>) -> Result<Self, FieldProblem> {
        match text {
            None => Ok(Self::default()),
            Some(text) => Self::parse(text).ok_or_else(|| {
                FieldProblem::new("attach", text, "unknown attach point", Self::ACCEPTED)
            }),
        }
    }

    /// Its name in the config, as `parse` reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
            Self::Auto => "auto",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "xdp" => Some(Self::Xdp),
            "tc" => Some(Self::Tc),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}
