//! Header fields read and written a halfword at a time. network-types
//! declares multi-byte fields as byte arrays (alignment 1), so LLVM builds
//! each from single bytes: a load, a shift and an or per byte. Every field
//! the data path touches sits at an even offset from the frame's start, and
//! the kernel starts frames (XDP's and a socket buffer's data) at least
//! 2-byte aligned, so one 16-bit access does; where a frame is not, the
//! x86-64 and arm64 JITs load misaligned halfwords anyway, and the
//! verifier allows it there. Words stay as they lie in memory (network
//! order), as the maps and checksums want them.

/// The 16 bits at `p`, as they lie in memory.
///
/// # Safety
/// `p` and `p + 1` are readable packet bytes (bounds checked), at an even
/// offset from the frame's start.
#[inline(always)]
pub unsafe fn get16(p: *const u8) -> u16 {
    unsafe { *(p as *const u16) }
}

/// Writes `v` (as it lies in memory) at `p`. Safety as for `get16`.
#[inline(always)]
pub unsafe fn set16(p: *mut u8, v: u16) {
    unsafe { *(p as *mut u16) = v }
}

/// The 32 bits at `p`, as they lie in memory (`u32::from_ne_bytes` of the
/// four bytes). Safety as for `get16`, for four bytes.
#[inline(always)]
pub unsafe fn get32(p: *const u8) -> u32 {
    let (a, b) = unsafe { (u32::from(get16(p)), u32::from(get16(p.add(2)))) };
    if cfg!(target_endian = "little") {
        a | b << 16
    } else {
        a << 16 | b
    }
}

/// Writes `v` (`u32::to_ne_bytes` order) at `p`. Safety as for `get32`.
#[inline(always)]
pub unsafe fn set32(p: *mut u8, v: u32) {
    let (a, b) = if cfg!(target_endian = "little") {
        (v as u16, (v >> 16) as u16)
    } else {
        ((v >> 16) as u16, v as u16)
    };
    unsafe {
        set16(p, a);
        set16(p.add(2), b);
    }
}

/// The 16-byte address at `p` as four words (`parse::words` order).
/// Safety as for `get16`, for sixteen bytes.
#[inline(always)]
pub unsafe fn get128(p: *const u8) -> [u32; 4] {
    unsafe { [get32(p), get32(p.add(4)), get32(p.add(8)), get32(p.add(12))] }
}

/// Writes a 16-byte address given as four words. Safety as for `get128`.
#[inline(always)]
pub unsafe fn set128(p: *mut u8, w: [u32; 4]) {
    unsafe {
        set32(p, w[0]);
        set32(p.add(4), w[1]);
        set32(p.add(8), w[2]);
        set32(p.add(12), w[3]);
    }
}
