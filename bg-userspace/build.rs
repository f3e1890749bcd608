use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let meta = cargo_metadata()?;
    let ebpf_dir = meta
        .join("bg-ebpf")
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 workspace path"))?
        .to_owned();
    let package = aya_build::Package {
        name: "bg-ebpf",
        root_dir: &ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the eBPF programs failed; `cargo xtask setup` installs the nightly rust-src and bpf-linker it needs",
    )
}

/// The workspace root: bg-userspace's parent directory.
fn cargo_metadata() -> anyhow::Result<std::path::PathBuf> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    std::path::Path::new(&manifest)
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| anyhow!("bg-userspace has no parent directory"))
}
