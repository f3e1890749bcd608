//! The data path, and the only module that uses aya: loading, attaching
//! and pinning the programs, and every map access.
//!
//! Pins live under `<pin_root>/<iface>/`: one file per map plus the links
//! (`attach.rs`). Because the links and maps are pinned, the data path keeps
//! running without the agent; a restarted agent adopts them and swaps in its
//! program atomically through the link.
//!
//! - `mod.rs`: `Dataplane`, the handle on one interface's maps;
//! - `object.rs`: the embedded object, its helpers, the drop tracepoints;
//! - `attach.rs`: links (XDP, TC) and their adoption;
//! - `keys.rs`: how services, backends and addresses sit in the maps;
//! - `services.rs`: applying a configuration's services;
//! - `counters.rs`, `flows.rs`: typed reads of the counters and flow tables;
//! - `backend_path.rs`: can the data path reach a backend?
//! - `interfaces.rs`, `bpffs.rs`, `pin_lock.rs`, `kernel_btf.rs`,
//!   `ebpf_log.rs`: the host around it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, DevMapHash, MapData, PerCpuArray},
    programs::{TcAttachType, TestRun, TestRunOptions, Xdp},
};
use std::net::SocketAddr;

use bg_common::{ACTIVE_SLOT, Backend, COLOURS, ColourStats, names};

pub mod attach;
pub mod backend_path;
pub mod bpffs;
pub mod counters;
mod ebpf_log;
pub mod error;
pub mod flows;
pub mod interfaces;
pub mod kernel_btf;
pub mod keys;
pub mod object;
pub mod pin_lock;
mod services;
pub mod shadow;

pub use attach::XdpModeRequest;
pub use counters::Counters;
pub use error::{DataplaneError, Result};
pub use flows::FlowTable;
pub use interfaces::{if_index, interfaces};
pub use keys::{addr_words, backend, service_key};
pub use object::{
    BENCH_OBJECT, EBPF_OBJECT, load_bench_object, load_helper, load_object, object_digest, teardown,
};

use self::{attach::UNNAT_LINK_PIN, object::attach_drop_counters};
use crate::{
    config::AttachRequest,
    model::{AttachMode, Colour, Steering, Traffic},
};

/// Default root of the pinned state; one directory per interface below it.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/bluegreen";

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
                DataplaneError::UnknownReverseNatInterface(
                    extra.clone(),
                    interfaces::known_interfaces(),
                )
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
                Ok(logger) => crate::dataplane::ebpf_log::spawn(logger),
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
        attach::shadow(&mut ebpf, iface, &pin_dir, attach_mode);
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
        // Broadcast copies need it; without it they take the kernel's path.
        if let Err(e) = load_helper(&mut ebpf, names::PROG_SHADOW_COPY) {
            log::warn!("shadow copies by devmap broadcast unavailable: {e}");
        }
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
        // The two established tables are made together, but `FLOWS4` is
        // newer: after an upgrade it has the config's size while `FLOWS`
        // kept its own. The smaller is what the config gets.
        Ok(TableSizes {
            flows: entries(names::FLOWS)?.min(entries(names::FLOWS4)?),
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
        Ok(self.steering()?.active)
    }

    /// The active colour and the split, from the one `ACTIVE` word.
    pub fn steering(&self) -> Result<Steering> {
        let active: Array<&MapData, u32> = Array::try_from(self.map(names::ACTIVE)?)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        let raw = active
            .get(&ACTIVE_SLOT, 0)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        Ok(Steering::from_word(raw))
    }

    /// The flip: one write of one u32. Returns how long the write took.
    pub fn set_active(&mut self, colour: Colour) -> Result<Duration> {
        self.set_steering(Steering::plain(colour))
    }

    /// A flip or a shift: one write of one u32, colour and weight together.
    pub fn set_steering(&mut self, steering: Steering) -> Result<Duration> {
        let mut active: Array<&mut MapData, u32> = Array::try_from(self.map_mut(names::ACTIVE)?)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        let started = Instant::now();
        active
            .set(ACTIVE_SLOT, steering.word(), 0)
            .map_err(|e| DataplaneError::Map(names::ACTIVE, e))?;
        Ok(started.elapsed())
    }

    /// The key of the split's hash (0: never written).
    pub fn split_seed(&self) -> Result<u32> {
        let seed: Array<&MapData, u32> = Array::try_from(self.map(names::SPLIT_SEED)?)
            .map_err(|e| DataplaneError::Map(names::SPLIT_SEED, e))?;
        seed.get(&0, 0)
            .map_err(|e| DataplaneError::Map(names::SPLIT_SEED, e))
    }

    pub fn set_split_seed(&mut self, value: u32) -> Result<()> {
        let mut seed: Array<&mut MapData, u32> = Array::try_from(self.map_mut(names::SPLIT_SEED)?)
            .map_err(|e| DataplaneError::Map(names::SPLIT_SEED, e))?;
        seed.set(0, value, 0)
            .map_err(|e| DataplaneError::Map(names::SPLIT_SEED, e))
    }

    /// Points one colour of service `id` at another backend, reached by
    /// `mode` (`bg_common::mode`).
    pub fn set_backend(
        &mut self,
        id: u32,
        colour: Colour,
        addr: SocketAddr,
        mode: u8,
    ) -> Result<()> {
        let mut backends: Array<&mut MapData, Backend> =
            Array::try_from(self.map_mut(names::BACKENDS)?)
                .map_err(|e| DataplaneError::Map(names::BACKENDS, e))?;
        backends
            .set(id * COLOURS + colour.index(), backend(addr, mode), 0)
            .map_err(|e| DataplaneError::Map(names::BACKENDS, e))
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
            dsr_events: self.summed(names::DSR_EVENTS)?,
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
