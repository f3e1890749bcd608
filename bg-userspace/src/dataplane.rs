//! Loading, attaching and pinning the XDP program, and every map access.
//!
//! Pins live under `<pin_root>/<iface>/`: one file per map plus `link`, the
//! XDP link. Because the link and maps are pinned, the data path keeps running
//! without the agent; a restarted agent adopts them and swaps in its program
//! atomically through the link.
use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{TcAttachType, TestRun, TestRunOptions, Xdp},
    util::nr_cpus,
};
use bg_common::{
    ACTIVE_SLOT, Backend, COLOURS, ColourStats, FAMILY_IPV4, FAMILY_IPV6, PORT_ANY_MASK,
    PORT_HAS_SPECIFIC, ServiceKey, ServiceValue, counter, names, port_index,
};
use thiserror::Error;

use crate::{
    config::{Config, Service},
    model::Colour,
};

/// Default root of the pinned state; one directory per interface below it.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/bluegreen";

use crate::attach::{self, UNNAT_LINK_PIN};
pub use crate::attach::{AttachMode, AttachRequest, XdpModeRequest};

/// The compiled eBPF object, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bg-ebpf"));

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(
        "--iface = {0:?}: no such network interface in this network namespace; accepted: one of {1}"
    )]
    UnknownInterface(String, String),
    #[error(
        "tcp.reverse_nat_interfaces: {0:?} is no network interface in this network namespace; accepted: one of {1}"
    )]
    UnknownReverseNatInterface(String, String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "loading the eBPF object failed: {0}; if the pinned maps under {1} come from an incompatible bgctl version, run `bgctl teardown --iface <IF>` first"
    )]
    Load(Box<aya::EbpfError>, PathBuf),
    #[error("program {0}: {1}")]
    Program(&'static str, aya::programs::ProgramError),
    #[error("attaching XDP to {iface} failed: {source}{hint}")]
    Attach {
        iface: String,
        source: aya::programs::ProgramError,
        hint: &'static str,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("pinning {0}: {1}")]
    Pin(PathBuf, aya::pin::PinError),
    #[error("pinned link {0}: {1}")]
    Link(PathBuf, String),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("no free service slot; at most {} services", bg_common::MAX_SERVICES)]
    NoFreeSlot,
    #[error(transparent)]
    Bpffs(#[from] crate::bpffs::BpffsError),
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// Interface name to index in the current network namespace.
pub fn if_index(iface: &str) -> Result<u32> {
    let c = CString::new(iface).map_err(|_| unknown_iface(iface))?;
    // SAFETY: c is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(unknown_iface(iface));
    }
    Ok(index)
}

fn unknown_iface(iface: &str) -> DataplaneError {
    DataplaneError::UnknownInterface(iface.to_owned(), known_interfaces())
}

fn known_interfaces() -> String {
    let mut known: Vec<String> = interfaces().into_iter().map(|(_, n)| n).collect();
    known.sort();
    known.join(", ")
}

/// All interfaces of the current network namespace as (ifindex, name).
pub fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let head = libc::if_nameindex();
        if head.is_null() {
            return out;
        }
        let mut p = head;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(head);
    }
    out
}

pub fn pin_dir(pin_root: &Path, iface: &str) -> PathBuf {
    pin_root.join(iface)
}

/// Entries of the TCP tables; fixed when their pins are first made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSizes {
    /// Established connections: `FLOWS` and `REV_FLOWS`.
    pub flows: u32,
    /// Handshakes in progress and flows on probation: `PENDING_FLOWS` and
    /// `PENDING_REV`.
    pub pending: u32,
}

impl TableSizes {
    /// Small tables for tests and benchmarks.
    pub const SMALL: Self = Self {
        flows: 1024,
        pending: 1024,
    };
}

/// Loads the embedded object with its maps pinned in (or adopted from)
/// `pin_dir`, the TCP tables sized as `sizes` says.
pub fn load_object(pin_dir: &Path, debug_logs: bool, sizes: TableSizes) -> Result<Ebpf> {
    crate::bpffs::ensure_mounted(pin_dir)?;
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

/// Counters of one colour of one service, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    /// TCP: connections opened (SYN) on this colour.
    #[serde(default)]
    pub tcp_new: u64,
    /// TCP: segments of established connections kept on this colour.
    #[serde(default)]
    pub tcp_established: u64,
    /// TCP: mid-stream segments without a flow entry, sent to the active colour.
    #[serde(default)]
    pub tcp_flow_miss: u64,
    /// TCP: connections seen closing (FIN or RST).
    #[serde(default)]
    pub tcp_closing: u64,
}

/// How `Dataplane::open` loads and attaches.
pub struct OpenOptions<'a> {
    /// XDP, TC, or XDP where native and TC elsewhere.
    pub attach: AttachRequest,
    /// For XDP: driver or generic mode.
    pub mode: XdpModeRequest,
    pub debug_logs: bool,
    pub tables: TableSizes,
    /// Interfaces whose egress also rewrites TCP replies, besides `iface`.
    pub reverse_nat_interfaces: &'a [String],
}

/// The loaded, attached data path of one interface.
pub struct Dataplane {
    ebpf: Ebpf,
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub pin_dir: PathBuf,
    /// Counters that cannot count on this host, and why.
    pub unavailable: BTreeMap<&'static str, String>,
    /// The maps were made by this open, not adopted from pins: the active
    /// colour is the default, not the one that was steering.
    pub fresh_maps: bool,
}

impl Dataplane {
    /// Loads the program and attaches it to `iface`, or adopts the pinned
    /// link of an earlier agent and swaps the new program in without a gap.
    pub fn open(iface: &str, pin_root: &Path, opts: &OpenOptions<'_>) -> Result<Self> {
        let OpenOptions {
            attach,
            mode,
            debug_logs,
            tables,
            reverse_nat_interfaces,
        } = *opts;
        let ifindex = if_index(iface)?;
        for extra in reverse_nat_interfaces {
            if_index(extra).map_err(|_| {
                DataplaneError::UnknownReverseNatInterface(extra.clone(), known_interfaces())
            })?;
        }
        let pin_dir = pin_dir(pin_root, iface);
        let stale = attach::pinned_steering_ifindex(&pin_dir)
            .is_some_and(|held| !matches!(held, Ok(i) if i == ifindex));
        if stale {
            // The interface this state belonged to is gone (or was recreated):
            // its maps steer nothing, so start clean rather than adopt them.
            log::warn!(
                "pinned state under {} belongs to a detached link; removing it",
                pin_dir.display()
            );
            teardown(pin_root, iface)?;
        }
        let fresh_maps = !pin_dir.join(names::ACTIVE).exists();
        let mut ebpf = load_object(&pin_dir, debug_logs, tables)?;
        if debug_logs {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(logger) => crate::ebpf_log::spawn(logger),
                Err(e) => log::debug!("eBPF debug logs unavailable: {e}"),
            }
        }
        let attach_mode = attach::steering(&mut ebpf, iface, &pin_dir, attach, mode)?;
        attach::tc(
            &mut ebpf,
            names::PROG_UNNAT,
            iface,
            TcAttachType::Egress,
            &pin_dir.join(UNNAT_LINK_PIN),
        )?;
        // Extra egresses are pinned by ifindex: bpffs names may not hold the
        // dots that interface names (eth0.100) may.
        let mut wanted = Vec::new();
        for extra in reverse_nat_interfaces {
            let pin = format!("{UNNAT_LINK_PIN}_if{}", if_index(extra)?);
            attach::tc(
                &mut ebpf,
                names::PROG_UNNAT,
                extra,
                TcAttachType::Egress,
                &pin_dir.join(&pin),
            )?;
            wanted.push(pin);
        }
        // Links of interfaces no longer configured: unpinning detaches them.
        if let Ok(entries) = std::fs::read_dir(&pin_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{UNNAT_LINK_PIN}_if")) && !wanted.contains(&name) {
                    log::info!(
                        "{name}: interface no longer in tcp.reverse_nat_interfaces; detaching its reverse NAT"
                    );
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        load_helper(&mut ebpf, names::PROG_CLOCK)?;
        load_helper(&mut ebpf, names::PROG_PATH)?;
        // Counting the kernel's drops is telemetry: the data path works
        // the same without it, so a failure is reported, not fatal.
        let unavailable = attach_drop_counters(&mut ebpf, ifindex);
        for (counter, why) in &unavailable {
            log::warn!("counter {counter} is unavailable: {why}");
        }
        Ok(Self {
            ebpf,
            iface: iface.to_owned(),
            ifindex,
            mode: attach_mode,
            pin_dir,
            unavailable,
            fresh_maps,
        })
    }

    /// Wraps an object loaded with `load_object` without attaching it, for
    /// BPF_PROG_TEST_RUN tests and benchmarks that drive the program directly.
    pub fn from_ebpf(ebpf: Ebpf, iface: &str, ifindex: u32, pin_dir: PathBuf) -> Self {
        Self {
            ebpf,
            iface: iface.to_owned(),
            ifindex,
            mode: AttachMode::Adopted,
            pin_dir,
            unavailable: BTreeMap::new(),
            fresh_maps: false,
        }
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Ok while the steering link this agent attached is still pinned and
    /// attached to its interface. A forced teardown, or the interface
    /// going away, detaches it: the maps then steer nothing.
    pub fn steering_attached(&self) -> std::result::Result<(), String> {
        match attach::pinned_steering_ifindex(&self.pin_dir) {
            Some(Ok(i)) if i == self.ifindex => Ok(()),
            None => Err(format!(
                "its pinned link under {} is gone (removed by `bgctl teardown --force`?)",
                self.pin_dir.display()
            )),
            Some(Ok(0)) => Err(format!("its interface {} is gone", self.iface)),
            Some(Ok(other)) => Err(format!(
                "the pinned link is attached to ifindex {other}, not {} ({})",
                self.ifindex, self.iface
            )),
            Some(Err(e)) => Err(format!("its pinned link cannot be read: {e}")),
        }
    }

    /// The data path's clock (`bpf_jiffies64`), read by running `bg_clock`
    /// once through BPF_PROG_TEST_RUN. Flows are aged on this clock.
    pub fn now_jiffies(&self) -> Result<u64> {
        let prog: &Xdp = self
            .ebpf
            .program(names::PROG_CLOCK)
            .ok_or(DataplaneError::Program(
                names::PROG_CLOCK,
                aya::programs::ProgramError::NotLoaded,
            ))?
            .try_into()
            .map_err(|e| DataplaneError::Program(names::PROG_CLOCK, e))?;
        let frame = [0u8; 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        prog.test_run(opts)
            .map_err(|e| DataplaneError::Program(names::PROG_CLOCK, e))?;
        let clock: Array<&MapData, u64> = Array::try_from(self.map(names::CLOCK)?)
            .map_err(|e| DataplaneError::Map(names::CLOCK, e))?;
        clock
            .get(&bg_common::CLOCK_SLOT, 0)
            .map_err(|e| DataplaneError::Map(names::CLOCK, e))
    }

    /// The kernel's HZ, measured on the data path's clock over `window` and
    /// rounded to the nearest common value.
    pub fn measure_hz(&self, window: Duration) -> Result<u64> {
        let (j0, t0) = (self.now_jiffies()?, Instant::now());
        std::thread::sleep(window);
        let (j1, dt) = (self.now_jiffies()?, t0.elapsed().as_secs_f64());
        let raw = j1.saturating_sub(j0) as f64 / dt;
        Ok(*[100u64, 250, 300, 1000]
            .iter()
            .min_by(|a, b| {
                (raw - **a as f64)
                    .abs()
                    .total_cmp(&(raw - **b as f64).abs())
            })
            .expect("non-empty"))
    }

    /// Entries the pinned TCP tables really hold. Pinned maps keep the
    /// size they were created with, whatever the config says now.
    pub fn table_capacity(&self) -> Result<TableSizes> {
        let entries = |name: &'static str| match self.map(name)? {
            aya::maps::Map::LruHashMap(d) => d
                .info()
                .map(|i| i.max_entries())
                .map_err(|e| DataplaneError::Map(name, e)),
            _ => Err(DataplaneError::MissingMap(name)),
        };
        Ok(TableSizes {
            flows: entries(names::FLOWS)?,
            pending: entries(names::PENDING_FLOWS)?,
        })
    }

    /// Tells the data path its TCP timeouts, in jiffies (see
    /// `bg_common::tcp_setting`). The pinned values outlive the agent.
    pub fn set_tcp_timeouts(&mut self, idle_jiffies: u64, close_grace_jiffies: u64) -> Result<()> {
        use bg_common::tcp_setting::{CLOSE_GRACE_JIFFIES, IDLE_JIFFIES};
        let mut settings: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(names::TCP_SETTINGS)?)
                .map_err(|e| DataplaneError::Map(names::TCP_SETTINGS, e))?;
        for (slot, value) in [
            (IDLE_JIFFIES, idle_jiffies),
            (CLOSE_GRACE_JIFFIES, close_grace_jiffies),
        ] {
            settings
                .set(slot, value, 0)
                .map_err(|e| DataplaneError::Map(names::TCP_SETTINGS, e))?;
        }
        Ok(())
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    /// The active colour as the data path sees it.
    pub fn active(&self) -> Result<Colour> {
        let active: Array<&MapData, u32> = Array::try_from(self.map(names::ACTIVE)?)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        let raw = active
            .get(&ACTIVE_SLOT, 0)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        Ok(Colour::from_index(raw))
    }

    /// The flip: one write of one u32. Returns how long the write took.
    pub fn set_active(&mut self, colour: Colour) -> Result<Duration> {
        let mut active: Array<&mut MapData, u32> = Array::try_from(self.map_mut(names::ACTIVE)?)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        let started = Instant::now();
        active
            .set(ACTIVE_SLOT, colour.index(), 0)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        Ok(started.elapsed())
    }

    /// Services currently in the map, by key.
    fn current_services(&self) -> Result<BTreeMap<KeyOrd, u32>> {
        let services: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map(names::SERVICES)?)
                .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
        let mut out = BTreeMap::new();
        for item in services.iter() {
            let (k, v) = item.map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            out.insert(KeyOrd(k), v.id);
        }
        Ok(out)
    }

    /// Makes the maps match `config` without a gap: existing services keep
    /// their id (their backends are rewritten in place), new ones get a free
    /// id with fresh counters and are inserted only after their backends are
    /// set, and services no longer configured are removed last.
    /// Returns the service id of each configured service, in config order.
    pub fn apply_config(&mut self, config: &Config) -> Result<Vec<u32>> {
        let current = self.current_services()?;
        let wanted: Vec<(KeyOrd, &Service)> = config
            .services
            .iter()
            .map(|s| (KeyOrd(service_key(s)), s))
            .collect();
        let mut used: Vec<bool> = vec![false; bg_common::MAX_SERVICES as usize];
        for (key, _) in &wanted {
            if let Some(&id) = current.get(key) {
                used[id as usize] = true;
            }
        }
        let mut ids = Vec::with_capacity(wanted.len());
        for (key, _) in &wanted {
            let id = match current.get(key) {
                Some(&id) => id,
                None => {
                    let id = used
                        .iter()
                        .position(|u| !u)
                        .ok_or(DataplaneError::NoFreeSlot)? as u32;
                    used[id as usize] = true;
                    self.reset_stats(id)?;
                    id
                }
            };
            ids.push(id);
        }
        {
            let mut backends: Array<&mut MapData, Backend> =
                Array::try_from(self.map_mut(names::BACKENDS)?)
                    .map_err(|e| DataplaneError::Map(names::BACKENDS, e))?;
            for ((_, service), &id) in wanted.iter().zip(&ids) {
                for colour in Colour::ALL {
                    let addr = match colour {
                        Colour::Blue => service.blue,
                        Colour::Green => service.green,
                    };
                    backends
                        .set(id * COLOURS + colour.index(), backend(addr), 0)
                        .map_err(|e| DataplaneError::Map(names::BACKENDS, e))?;
                }
            }
        }
        {
            let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
                HashMap::try_from(self.map_mut(names::SERVICES)?)
                    .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            for ((key, _), &id) in wanted.iter().zip(&ids) {
                services
                    .insert(key.0, ServiceValue { id }, 0)
                    .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            }
        }
        // The port index goes live only after the services it points at, and
        // stale slots are cleared before their services are removed.
        let new_ports = port_entries(wanted.iter().map(|(k, _)| k.0).zip(ids.iter().copied()));
        let old_ports = port_entries(current.iter().map(|(k, &id)| (k.0, id)));
        {
            let mut ports: Array<&mut MapData, u32> = Array::try_from(self.map_mut(names::PORTS)?)
                .map_err(|e| DataplaneError::Map(names::PORTS, e))?;
            for (&slot, &value) in &new_ports {
                ports
                    .set(slot, value, 0)
                    .map_err(|e| DataplaneError::Map(names::PORTS, e))?;
            }
            for slot in old_ports.keys().filter(|s| !new_ports.contains_key(s)) {
                ports
                    .set(*slot, 0, 0)
                    .map_err(|e| DataplaneError::Map(names::PORTS, e))?;
            }
        }
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_mut(names::SERVICES)?)
                .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
        for key in current.keys() {
            if !wanted.iter().any(|(k, _)| k == key) {
                services
                    .remove(&key.0)
                    .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            }
        }
        Ok(ids)
    }

    /// Points one colour of service `id` at another backend.
    pub fn set_backend(&mut self, id: u32, colour: Colour, addr: SocketAddr) -> Result<()> {
        let mut backends: Array<&mut MapData, Backend> =
            Array::try_from(self.map_mut(names::BACKENDS)?)
                .map_err(|e| DataplaneError::Map(names::BACKENDS, e))?;
        backends
            .set(id * COLOURS + colour.index(), backend(addr), 0)
            .map_err(|e| DataplaneError::Map(names::BACKENDS, e))
    }

    fn reset_stats(&mut self, id: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| DataplaneError::Io {
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        let mut stats: PerCpuArray<&mut MapData, ColourStats> =
            PerCpuArray::try_from(self.map_mut(names::STATS)?)
                .map_err(|e| DataplaneError::Map(names::STATS, e))?;
        for colour in Colour::ALL {
            let zero = PerCpuValues::try_from(vec![ColourStats::default(); cpus]).map_err(|e| {
                DataplaneError::Io {
                    path: "per-cpu values".into(),
                    source: e,
                }
            })?;
            stats
                .set(id * COLOURS + colour.index(), zero, 0)
                .map_err(|e| DataplaneError::Map(names::STATS, e))?;
        }
        Ok(())
    }

    /// Per-colour counters of service `id`, summed over CPUs.
    pub fn traffic(&self, id: u32) -> Result<[Traffic; 2]> {
        let stats: PerCpuArray<&MapData, ColourStats> =
            PerCpuArray::try_from(self.map(names::STATS)?)
                .map_err(|e| DataplaneError::Map(names::STATS, e))?;
        let mut out = [Traffic::default(); 2];
        for colour in Colour::ALL {
            let per_cpu = stats
                .get(&(id * COLOURS + colour.index()), 0)
                .map_err(|e| DataplaneError::Map(names::STATS, e))?;
            let t = &mut out[colour.index() as usize];
            for s in per_cpu.iter() {
                t.packets += s.packets;
                t.bytes += s.bytes;
                t.tcp_new += s.tcp_new;
                t.tcp_established += s.tcp_established;
                t.tcp_flow_miss += s.tcp_flow_miss;
                t.tcp_closing += s.tcp_closing;
            }
        }
        Ok(out)
    }

    /// The data-path counters (`bg_common::counter`), summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        Ok(Counters {
            steering: self.summed(names::COUNTERS)?,
            kernel_drops: self.summed(names::KERNEL_DROPS)?,
            tcp_events: self.summed(names::TCP_EVENTS)?,
        })
    }

    /// The first `N` slots of a per-CPU counter array, each summed over CPUs.
    fn summed<const N: usize>(&self, map: &'static str) -> Result<[u64; N]> {
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(map)?).map_err(|e| DataplaneError::Map(map, e))?;
        let mut out = [0; N];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = array
                .get(&(i as u32), 0)
                .map_err(|e| DataplaneError::Map(map, e))?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Puts every interface of this namespace except loopback into the
    /// redirect devmap, so FIB results naming them can be redirected.
    /// Returns how many were added.
    pub fn refresh_redirect_ifaces(&mut self) -> Result<usize> {
        let mut map: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map_mut(names::REDIRECT_IFACES)?)
                .map_err(|e| DataplaneError::Map(names::REDIRECT_IFACES, e))?;
        let present: Vec<u32> = map.keys().filter_map(|k| k.ok()).collect();
        let mut added = 0;
        for (index, name) in interfaces() {
            if name == "lo" || present.contains(&index) {
                continue;
            }
            match map.insert(index, index, None, 0) {
                Ok(()) => added += 1,
                Err(e) => log::warn!("cannot add {name} to the redirect map: {e}"),
            }
        }
        Ok(added)
    }
}

/// The `PORTS` slots that a set of (service key, id) needs, with their values.
fn port_entries(services: impl Iterator<Item = (ServiceKey, u32)>) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    for (key, id) in services {
        let Some(slot) = port_index(key.family, key.proto, u16::from_be(key.port_be)) else {
            continue;
        };
        let value = out.entry(slot).or_insert(0u32);
        if key.addr_be == [0; 4] {
            *value |= (id + 1) & PORT_ANY_MASK;
        } else {
            *value |= PORT_HAS_SPECIFIC;
        }
    }
    out
}

/// Its own handles on the pinned TCP tables, so walking them (one syscall
/// pair per entry) never holds up a flip.
pub struct FlowTable {
    flows: aya::maps::Map,
    pending: aya::maps::Map,
}

impl FlowTable {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join(name))
                .map(aya::maps::Map::LruHashMap)
                .map_err(|e| DataplaneError::Map(name, e))
        };
        Ok(Self {
            flows: open(names::FLOWS)?,
            pending: open(names::PENDING_FLOWS)?,
        })
    }

    /// Live TCP connections per colour: flows not closing whose client sent
    /// a segment within `idle_jiffies` of `now`. Established flows, and
    /// flows on probation (seen mid-stream); not handshakes in progress.
    pub fn live_connections(&self, now: u64, idle_jiffies: u64) -> Result<[u64; 2]> {
        let live_at = |last_seen: u64, state: u32| {
            state != bg_common::FLOW_CLOSING && now.saturating_sub(last_seen) < idle_jiffies
        };
        let mut live = [0u64; 2];
        let flows: HashMap<&MapData, bg_common::FlowKey, bg_common::FlowValue> =
            HashMap::try_from(&self.flows).map_err(|e| DataplaneError::Map(names::FLOWS, e))?;
        // Entries can vanish (LRU eviction) while we walk: skip those errors.
        for (_, flow) in flows.iter().filter_map(|r| r.ok()) {
            if live_at(flow.last_seen_jiffies, flow.state) {
                live[(flow.colour & 1) as usize] += 1;
            }
        }
        let pending: HashMap<&MapData, bg_common::FlowKey, bg_common::PendingFlow> =
            HashMap::try_from(&self.pending)
                .map_err(|e| DataplaneError::Map(names::PENDING_FLOWS, e))?;
        for (_, flow) in pending.iter().filter_map(|r| r.ok()) {
            if flow.state == bg_common::FLOW_OPEN && live_at(flow.last_seen_jiffies, flow.state) {
                live[(flow.colour & 1) as usize] += 1;
            }
        }
        Ok(live)
    }
}

/// Orders keys so they can sit in a BTreeMap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyOrd(ServiceKey);

impl KeyOrd {
    fn tuple(&self) -> ([u32; 4], u16, u8, u8) {
        (self.0.addr_be, self.0.port_be, self.0.proto, self.0.family)
    }
}

impl PartialOrd for KeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

/// Address words in network byte order, as the maps hold them.
pub fn addr_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_IPV4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut w = [0u32; 4];
            for (i, chunk) in o.chunks_exact(4).enumerate() {
                w[i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            (w, FAMILY_IPV6)
        }
    }
}

pub fn service_key(s: &Service) -> ServiceKey {
    let (addr_be, family) = addr_words(s.listen.ip());
    ServiceKey {
        addr_be,
        port_be: s.listen.port().to_be(),
        proto: s.protocol.ip_proto(),
        family,
    }
}

pub fn backend(addr: SocketAddr) -> Backend {
    let (addr_be, family) = addr_words(addr.ip());
    Backend {
        addr_be,
        port_be: addr.port().to_be(),
        family,
        _pad: 0,
    }
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
fn attach_drop_counters(ebpf: &mut Ebpf, ifindex: u32) -> BTreeMap<&'static str, String> {
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
    let offset = crate::kernel_btf::member_offset_from(
        Path::new(crate::kernel_btf::VMLINUX_BTF),
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

/// The data path's counters, summed over CPUs. Read by the index constants
/// of `bg_common` (`counter::*`, `kernel_drop::*`, `tcp_event::*`), so a
/// renamed counter is a compile error, never a panic in the rollback loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    steering: [u64; counter::NAMES.len()],
    kernel_drops: [u64; bg_common::kernel_drop::NAMES.len()],
    tcp_events: [u64; bg_common::tcp_event::NAMES.len()],
}

impl Counters {
    /// A `bg_common::counter` slot (what the steering program did).
    pub fn steering(&self, index: u32) -> u64 {
        self.steering.get(index as usize).copied().unwrap_or(0)
    }

    /// A `bg_common::kernel_drop` slot (frames the kernel dropped after XDP).
    pub fn kernel_drop(&self, index: u32) -> u64 {
        self.kernel_drops.get(index as usize).copied().unwrap_or(0)
    }

    /// Redirects refused by the devmap, by the kernel after XDP, or dropped
    /// at transmit: each means the path to a backend loses traffic.
    pub fn failed_redirects(&self) -> u64 {
        self.steering(counter::REDIRECT_FAILED)
            + self.kernel_drop(bg_common::kernel_drop::REDIRECT_ERR)
            + self.kernel_drop(bg_common::kernel_drop::XMIT_DROPS)
    }

    /// Every counter by its display name, as `bgctl status` shows them.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let steering = counter::NAMES.iter().zip(&self.steering);
        let kernel = bg_common::kernel_drop::NAMES.iter().zip(&self.kernel_drops);
        let tcp = bg_common::tcp_event::NAMES.iter().zip(&self.tcp_events);
        steering.chain(kernel).chain(tcp).map(|(n, v)| (*n, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str, port: u16) -> ServiceKey {
        let ip: IpAddr = addr.parse().unwrap();
        let (addr_be, family) = addr_words(ip);
        ServiceKey {
            addr_be,
            port_be: port.to_be(),
            proto: bg_common::PROTO_UDP,
            family,
        }
    }

    #[test]
    fn port_entries_hold_the_any_service_and_the_specific_flag() {
        let entries = port_entries(
            [
                (key("0.0.0.0", 514), 3),
                (key("198.18.0.10", 514), 4),
                (key("::", 514), 0),
                (key("2001:db8::1", 601), 7),
            ]
            .into_iter(),
        );
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[&514], 4 | PORT_HAS_SPECIFIC, "any id 3 stored as 4");
        assert_eq!(entries[&(2 * 65536 + 514)], 1, "v6 any id 0 stored as 1");
        assert_eq!(entries[&(2 * 65536 + 601)], PORT_HAS_SPECIFIC);
    }

    #[test]
    fn addresses_are_stored_in_network_byte_order() {
        let (w, fam) = addr_words("198.18.1.2".parse().unwrap());
        assert_eq!(fam, FAMILY_IPV4);
        // The bytes in memory are the address octets in order.
        assert_eq!(w[0].to_ne_bytes(), [198, 18, 1, 2]);
        let b = backend("[2001:db8::2]:6514".parse().unwrap());
        assert_eq!(b.port_be.to_ne_bytes(), [0x19, 0x72]);
        assert_eq!(b.addr_be[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(b.family, FAMILY_IPV6);
    }
}
