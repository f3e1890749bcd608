//! Each program's size in instructions, as the kernel holds it after
//! verification: `bpftool prog dump xlated` counted line by line (an
//! independent reading), beside the verifier's own count of the
//! instructions it walked over every path (bpf_prog_info.verified_insns).
use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};
use aya::programs::ProgramInfo;

/// Instructions in `bpftool prog dump xlated id N`: lines such as
/// "  12: (bf) r6 = r1". A 16-byte load (ld_imm64) is one line but two
/// instructions; its second half has no line, so it is counted apart.
pub fn count_listing(listing: &str) -> u32 {
    listing
        .lines()
        .filter_map(|l| {
            let (index, rest) = l.trim_start().split_once(": (")?;
            index.parse::<u32>().ok()?;
            Some(if rest.starts_with("18)") { 2 } else { 1 })
        })
        .sum()
}

/// The instructions of program `id`, counted in bpftool's listing.
pub fn count(id: u32) -> Result<u32> {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string()])
        .output()
        .context("bpftool (Debian package bpftool; `cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool prog dump xlated id {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(count_listing(&String::from_utf8_lossy(&out.stdout)))
}

/// The table: program, xlated instructions (bpftool, and the kernel's
/// size / 8 as a check), JIT bytes, and the verifier's walked count.
pub fn table(programs: &[(&str, ProgramInfo)]) -> Result<String> {
    let mut md = String::from(
        "| program | instructions (bpftool dump xlated) | instructions (xlated bytes / 8) | JIT bytes | instructions the verifier walked, all paths |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, info) in programs {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            count(info.id())?,
            info.size_translated().map_or(0, |b| b / 8),
            info.size_jitted(),
            info.verified_instruction_count()
                .map_or("-".to_owned(), |n| n.to_string())
        );
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::count_listing;

    #[test]
    fn a_listing_counts_its_instructions_and_wide_loads_twice() {
        let listing = "int bg_steer(struct xdp_md * ctx):\n   0: (bf) r6 = r1\n   1: (18) r1 = map[id:12]\n   3: (85) call bpf_map_lookup_elem#1\n; comment 4: (bf)\n   4: (95) exit\n";
        assert_eq!(count_listing(listing), 5);
        assert_eq!(count_listing(""), 0);
    }
}
