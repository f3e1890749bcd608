//! Incremental Internet checksum updates (RFC 1624, eqn. 3).
//!
//! Words are taken as they lie in memory (native order); the one's
//! complement sum is byte-order independent as long as reads and writes agree.

#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Sum of the 16-bit halves of a word as it lies in memory.
#[inline(always)]
pub fn word_sum(word: u32) -> u32 {
    (word & 0xffff) + (word >> 16)
}

/// HC' = ~(~HC + ~m + m') for an old and new field given as summed halves.
/// `removed` is the sum of the one's complements of the old 16-bit words.
/// Unfolded sums are fine: `fold` carries any u32 back, and a DNAT's few
/// words stay far below 2^32, so one fold per checksum does.
#[inline(always)]
pub fn replace(check: u16, removed: u32, added: u32) -> u16 {
    !fold(u32::from(!check) + removed + added)
}

/// One's complement of each 16-bit half of `word`, summed.
#[inline(always)]
pub fn word_sum_complement(word: u32) -> u32 {
    word_sum(!word)
}
