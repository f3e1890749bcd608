//! The embedded eBPF objects: the agent's, loaded with its maps pinned, the
//! helper programs the agent runs itself, the kernel-drop counters'
//! tracepoints and removing the pins; and the bench object, for benchmarks
//! and test labs only.
use std::{collections::BTreeMap, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::Xdp,
};
use bg_common::names;

use super::{
    TableSizes,
    error::{DataplaneError, Result},
    pin_dir,
};

/// The agent's eBPF object, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bg-ebpf"));

/// Which data path this binary loads: the first 12 hex digits of the
/// SHA-256 of its eBPF object (`bluegreen_build_info`'s `data_path`).
pub fn object_digest() -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(EBPF_OBJECT);
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The benchmarks' and test labs' programs (`bg-ebpf/src/bench.rs`): a
/// separate object, so the agent's holds only what steers. `bgctl` never
/// refers to it, so the linker leaves it out of the binary.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bg-bench-ebpf"));

/// Loads the bench object. Its maps are not pinned: they go with it.
pub fn load_bench_object() -> Result<Ebpf> {
    EbpfLoader::new()
        .load(BENCH_OBJECT)
        .map_err(|e| DataplaneError::LoadBench(Box::new(e)))
}

/// Loads the embedded object with its maps pinned in (or adopted from)
/// `pin_dir`, the TCP tables sized as `sizes` says.
pub fn load_object(pin_dir: &Path, debug_logs: bool, sizes: TableSizes) -> Result<Ebpf> {
    crate::dataplane::bpffs::ensure_mounted(pin_dir)?;
    std::fs::create_dir_all(pin_dir).map_err(|source| DataplaneError::Io {
        path: pin_dir.to_owned(),
        source,
    })?;
    // aya-log's level is patched in: 0 compiles the debug paths down to a branch.
    let level: u8 = if debug_logs { 4 } else { 0 };
    EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .override_global(aya_log::LEVEL, &level, false)
        .map_max_entries(names::FLOWS, sizes.flows)
        .map_max_entries(names::FLOWS4, sizes.flows)
        .map_max_entries(names::REV_FLOWS, sizes.flows)
        .map_max_entries(names::PENDING_FLOWS, sizes.pending)
        .map_max_entries(names::PENDING_REV, sizes.pending)
        .load(EBPF_OBJECT)
        .map_err(|e| DataplaneError::Load(Box::new(e), pin_dir.to_owned()))
}

/// Removes every pin of `iface`, which detaches the XDP program once no
/// agent holds it. Returns false when there was nothing to remove.
pub fn teardown(pin_root: &Path, iface: &str) -> Result<bool> {
    let dir = pin_dir(pin_root, iface);
    if !dir.exists() {
        return Ok(false);
    }
    let io_err = |path: &Path, source| DataplaneError::Io {
        path: path.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
        let path = entry.map_err(|e| io_err(&dir, e))?.path();
        std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
    }
    std::fs::remove_dir(&dir).map_err(|e| io_err(&dir, e))?;
    Ok(true)
}

/// Loads an XDP program the agent runs itself through BPF_PROG_TEST_RUN:
/// `bg_clock` (the data path's clock) or `bg_path` (a backend's route).
pub fn load_helper(ebpf: &mut Ebpf, name: &'static str) -> Result<()> {
    let err = |e| DataplaneError::Program(name, e);
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(err(aya::programs::ProgramError::NotLoaded))?
        .try_into()
        .map_err(err)?;
    prog.load().map_err(err)
}

/// Attaches the raw tracepoint programs that count steered packets the
/// kernel drops after `bg_steer` returned, filtered to our devmap and our
/// interface. They live as long as the agent; a restarted agent attaches
/// its own. Returns the counters that cannot work here, with the reason:
/// the data path runs the same without them, but they must not read 0.
pub(super) fn attach_drop_counters(
    ebpf: &mut Ebpf,
    ifindex: u32,
) -> BTreeMap<&'static str, String> {
    use aya::programs::RawTracePoint;
    use bg_common::kernel_drop::{
        FILTER_IFINDEX, FILTER_IFINDEX_OFFSET, FILTER_MAP_ID, NAMES, TRACEPOINTS,
    };
    let programs = [
        names::PROG_REDIRECT_ERR,
        names::PROG_DEVMAP_XMIT,
        names::PROG_BULK_TX,
    ];
    let mut unavailable = BTreeMap::new();
    let all_off = |reason: String| NAMES.iter().map(|n| (*n, reason.clone())).collect();
    let map_id = match ebpf.map(names::REDIRECT_IFACES) {
        Some(aya::maps::Map::DevMapHash(data)) => data.info().map(|i| i.id()),
        _ => return all_off("the redirect devmap is missing".into()),
    };
    let map_id = match map_id {
        Ok(id) => id,
        Err(e) => return all_off(format!("reading the redirect devmap's id: {e}")),
    };
    // Device-based counts need where `ifindex` sits in struct net_device.
    let offset = crate::dataplane::kernel_btf::member_offset_from(
        Path::new(crate::dataplane::kernel_btf::VMLINUX_BTF),
        "net_device",
        "ifindex",
    );
    if let Err(e) = &offset {
        for name in &NAMES[1..] {
            unavailable.insert(
                *name,
                format!("the kernel's BTF gives no offset of net_device.ifindex ({e})"),
            );
        }
    }
    let filter = (|| {
        let mut filter: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut(names::TRACE_FILTER)?).ok()?;
        filter.set(FILTER_MAP_ID, map_id, 0).ok()?;
        filter.set(FILTER_IFINDEX, ifindex, 0).ok()?;
        filter
            .set(FILTER_IFINDEX_OFFSET, *offset.as_ref().unwrap_or(&0), 0)
            .ok()
    })();
    if filter.is_none() {
        return all_off("the tracepoint filter map could not be written".into());
    }
    for ((prog, tracepoint), counter) in programs.iter().zip(TRACEPOINTS).zip(NAMES) {
        if unavailable.contains_key(counter) {
            continue;
        }
        let attached = (|| -> std::result::Result<(), String> {
            let tp: &mut RawTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("{prog} is missing from the eBPF object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            tp.load().map_err(|e| format!("loading {prog}: {e}"))?;
            tp.attach(tracepoint)
                .map_err(|e| format!("attaching {prog} to the raw tracepoint {tracepoint}: {e}"))?;
            Ok(())
        })();
        if let Err(e) = attached {
            unavailable.insert(counter, e);
        }
    }
    unavailable
}
