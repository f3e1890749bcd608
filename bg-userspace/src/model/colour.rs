//! The two environments.
use std::fmt;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Blue,
    Green,
}

impl Colour {
    pub const ALL: [Colour; 2] = [Colour::Blue, Colour::Green];

    /// Index in the data-path maps.
    pub const fn index(self) -> u32 {
        match self {
            Self::Blue => bg_common::COLOUR_BLUE,
            Self::Green => bg_common::COLOUR_GREEN,
        }
    }

    /// The data path reads only the low bit, so any value maps to a colour.
    pub const fn from_index(raw: u32) -> Self {
        if raw & 1 == bg_common::COLOUR_GREEN {
            Self::Green
        } else {
            Self::Blue
        }
    }

    pub const fn other(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
        }
    }
}

impl Colour {
    /// The name in files, on the wire and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_other_swaps() {
        for c in Colour::ALL {
            assert_eq!(Colour::from_index(c.index()), c);
            assert_ne!(c.other(), c);
        }
        assert_eq!(Colour::Blue.index(), 0);
        assert_eq!(Colour::Green.index(), 1);
    }
}
