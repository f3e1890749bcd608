//! How a colour's packets reach its backend: NAT or direct server return.
use serde::Serialize;

/// How a colour's packets reach its backend (`bg_common::mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// The destination is rewritten to the backend; replies come back
    /// through the steering node, which restores the service address.
    #[default]
    #[serde(rename = "nat")]
    Nat,
    /// Direct server return on one L2 segment: only the MACs change.
    #[serde(rename = "dsr-l2")]
    DsrL2,
    /// Direct server return through an IP-in-IP tunnel to the backend.
    #[serde(rename = "dsr-ipip")]
    DsrIpip,
}

impl Mode {
    pub const ACCEPTED: &str = "\"nat\" (the default), \"dsr-l2\" or \"dsr-ipip\"";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "nat" => Some(Self::Nat),
            "dsr-l2" => Some(Self::DsrL2),
            "dsr-ipip" => Some(Self::DsrIpip),
            _ => None,
        }
    }

    /// The `Backend::mode` byte the data path reads.
    pub fn wire(self) -> u8 {
        match self {
            Self::Nat => bg_common::mode::NAT,
            Self::DsrL2 => bg_common::mode::DSR_L2,
            Self::DsrIpip => bg_common::mode::DSR_IPIP,
        }
    }

    pub fn is_dsr(self) -> bool {
        self != Self::Nat
    }

    pub fn name(self) -> &'static str {
        bg_common::mode::NAMES[usize::from(self.wire())]
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
