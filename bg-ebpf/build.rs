use which::which;

/// Re-run the eBPF build when the linker changes: aya-build does not track it,
/// and a stale object linked by another bpf-linker is hard to diagnose.
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH; run `cargo xtask setup` to build it against the nightly's LLVM",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
