//! The colour a new sender takes: the active one, or under a split the one
//! its source address hashes to (`bg_common::split`). The seed is read only
//! under a split, so plain blue and green cost what they always did.
use bg_common::{FAMILY_IPV4, split};

use crate::{maps::SPLIT_SEED, parse::Packet};

#[inline(always)]
pub fn colour(word: u32, pkt: &Packet) -> u32 {
    if word & split::SPLIT == 0 {
        return word & split::COLOUR;
    }
    let seed = SPLIT_SEED.get(0).copied().unwrap_or(0);
    if pkt.family == FAMILY_IPV4 {
        // Words 1 to 3 are zero: spelt out, their folding compiles away.
        split::colour(word, seed, &[pkt.src_be[0], 0, 0, 0])
    } else {
        split::colour(word, seed, &pkt.src_be)
    }
}
