//! The split of new senders between the colours (issue 14): a weight in
//! basis points, and the steering it gives together with the active colour.
use std::{fmt, str::FromStr};

use bg_common::split;
use serde::{Deserialize, Serialize};

use crate::model::Colour;

/// A share of senders in basis points: 0 (none) to 10,000 (all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Weight(u16);

impl Weight {
    pub const NONE: Weight = Weight(0);
    pub const FULL: Weight = Weight(split::WEIGHT_FULL as u16);

    pub fn new(bp: u32) -> Result<Self, String> {
        if bp > split::WEIGHT_FULL {
            return Err(format!(
                "{bp} basis points is more than the whole; accepted: 0 to 10000 basis points, or 0% to 100%"
            ));
        }
        Ok(Self(bp as u16))
    }

    pub const fn bp(self) -> u16 {
        self.0
    }

    /// The other colour's share.
    pub const fn rest(self) -> Weight {
        Weight(split::WEIGHT_FULL as u16 - self.0)
    }
}

impl TryFrom<u16> for Weight {
    type Error = String;
    fn try_from(bp: u16) -> Result<Self, String> {
        Self::new(u32::from(bp))
    }
}

impl From<Weight> for u16 {
    fn from(w: Weight) -> u16 {
        w.0
    }
}

/// "10%", "2.5%" or "0.01%" (percent, at most two decimals), or "1000"
/// (basis points).
impl FromStr for Weight {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let accepted = "accepted: a percentage with at most two decimals (\"10%\", \"2.5%\") or basis points from 0 to 10000 (\"1000\" is 10%)";
        let t = s.trim();
        if let Some(pct) = t.strip_suffix('%') {
            let (whole, frac) = pct.trim().split_once('.').unwrap_or((pct.trim(), ""));
            let ok = !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && frac.len() <= 2
                && frac.bytes().all(|b| b.is_ascii_digit());
            let whole: u32 = match whole.parse() {
                Ok(w) if ok && w <= 100 => w,
                _ => {
                    return Err(format!(
                        "weight {s:?} is not a percentage from 0% to 100%; {accepted}"
                    ));
                }
            };
            let frac: u32 = format!("{frac:0<2}").parse().unwrap_or(0);
            return Self::new(whole * 100 + frac).map_err(|e| format!("weight {s:?}: {e}"));
        }
        match t.parse::<u32>() {
            Ok(bp) => Self::new(bp).map_err(|e| format!("weight {s:?}: {e}")),
            Err(_) => Err(format!("weight {s:?} is not a weight; {accepted}")),
        }
    }
}

/// "10%", "2.5%", "0.01%".
impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            n if n % 10 == 0 => write!(f, "{whole}.{}%", n / 10),
            n => write!(f, "{whole}.{n:02}%"),
        }
    }
}

/// How the data path steers new senders: all to the active colour, or
/// split, green taking `green` of them by source address. A split's active
/// colour is the one it started from; promotion or abort ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steering {
    pub active: Colour,
    /// Green's share: 0 or 10,000 exactly when not split (then it agrees
    /// with `active`).
    pub green: Weight,
}

impl Steering {
    pub const fn plain(colour: Colour) -> Self {
        Self {
            active: colour,
            green: match colour {
                Colour::Blue => Weight::NONE,
                Colour::Green => Weight::FULL,
            },
        }
    }

    /// Green at `green`, starting from `active`; the ends are plain colours.
    pub fn split(active: Colour, green: Weight) -> Self {
        match green {
            Weight::NONE => Self::plain(Colour::Blue),
            Weight::FULL => Self::plain(Colour::Green),
            _ => Self { active, green },
        }
    }

    pub fn is_split(self) -> bool {
        self.green != Weight::NONE && self.green != Weight::FULL
    }

    /// `colour`'s share of senders.
    pub fn share(self, colour: Colour) -> Weight {
        match colour {
            Colour::Green => self.green,
            Colour::Blue => self.green.rest(),
        }
    }

    /// The colour that gains senders going from `self` to `to`.
    pub fn gainer(self, to: Steering) -> Colour {
        if to.green > self.green {
            Colour::Green
        } else {
            Colour::Blue
        }
    }

    /// The `ACTIVE` map's word.
    pub fn word(self) -> u32 {
        split::word(self.active.index(), u32::from(self.green.bp()))
    }

    pub fn from_word(word: u32) -> Self {
        let green = Weight::new(split::green_weight(word)).unwrap_or(Weight::FULL);
        Self::split(Colour::from_index(word), green)
    }
}

/// "blue", "green", or "blue 90% / green 10%".
impl fmt::Display for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_split() {
            write!(
                f,
                "blue {} / green {}",
                self.share(Colour::Blue),
                self.green
            )
        } else {
            write!(f, "{}", self.active)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_as_percent_or_basis_points() {
        for (s, bp) in [
            ("10%", 1000),
            ("2.5%", 250),
            ("0.01%", 1),
            ("100%", 10_000),
            ("0%", 0),
            ("1000", 1000),
            (" 50 % ", 5000),
        ] {
            assert_eq!(s.parse::<Weight>().unwrap().bp(), bp, "{s}");
        }
        for s in ["101%", "10001", "-1", "1.234%", "%", "ten", "1e3", ".5%"] {
            let e = s.parse::<Weight>().unwrap_err();
            assert!(
                e.contains(&format!("{s:?}")) && e.contains("accepted"),
                "{s}: {e}"
            );
        }
        for bp in [1, 10, 250, 1000, 9999, 10_000] {
            let w = Weight::new(bp).unwrap();
            assert_eq!(w.to_string().parse::<Weight>().unwrap(), w);
        }
        assert_eq!(Weight::new(250).unwrap().to_string(), "2.5%");
        assert_eq!(Weight::new(1).unwrap().to_string(), "0.01%");
    }

    #[test]
    fn steering_words_round_trip() {
        for active in Colour::ALL {
            for bp in [0, 1, 1000, 9999, 10_000] {
                let s = Steering::split(active, Weight::new(bp).unwrap());
                assert_eq!(Steering::from_word(s.word()), s, "{active} {bp}");
            }
        }
        // The ends are the plain colours, with the words older agents wrote.
        assert_eq!(Steering::split(Colour::Green, Weight::NONE).word(), 0);
        assert_eq!(Steering::split(Colour::Blue, Weight::FULL).word(), 1);
        assert_eq!(Steering::from_word(1), Steering::plain(Colour::Green));
        let s = Steering::split(Colour::Blue, Weight::new(1000).unwrap());
        assert_eq!(s.to_string(), "blue 90% / green 10%");
        assert_eq!(s.share(Colour::Blue).bp(), 9000);
    }
}
