//! What the data path would do with a backend's packets, asked of the data
//! path itself (`bg_path` runs `bpf_fib_lookup` exactly as steering does),
//! and how a health probe judges it. A UDP collector's only answer is
//! silence; this tells a silent collector from a host that is not there, a
//! missing route, or an interface that drops every redirected frame.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
};

use aya::{
    maps::{Array, MapData, PerCpuHashMap},
    programs::{TestRun, TestRunOptions, Xdp},
};
use bg_common::{PathQuery, names};

use crate::{
    dataplane::{Dataplane, DataplaneError, addr_words},
    model::Colour,
    model::Protocol,
};

// bpf_fib_lookup's return codes (include/uapi/linux/bpf.h).
const FIB_SUCCESS: u32 = 0;
const FIB_BLACKHOLE: u32 = 1;
const FIB_UNREACHABLE: u32 = 2;
const FIB_PROHIBIT: u32 = 3;
const FIB_NOT_FWDED: u32 = 4;
const FIB_FWD_DISABLED: u32 = 5;
const FIB_NO_NEIGH: u32 = 7;

/// Where the FIB forwards: the egress interface, the neighbour's MAC and
/// the interface's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub egress: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// The data path's route to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// An address of this host: the kernel delivers locally.
    Local,
    /// Forwarded out of `egress` to a resolved neighbour.
    Forward { egress: u32 },
    /// A route out of `egress`, but no resolved neighbour (ARP or ND got
    /// no answer, or has not been asked yet).
    NoNeighbour { egress: u32 },
    /// No usable route: the FIB says blackhole, unreachable, prohibit, or
    /// nothing matched.
    NoRoute(&'static str),
    /// IP forwarding is off on the steering interface.
    ForwardingDisabled,
    /// Something the data path leaves to the kernel (an MTU or tunnel
    /// matter); no judgement here.
    Kernel(u32),
}

impl Dataplane {
    /// Where the data path would send packets for `backend`, by its own
    /// FIB lookup (through BPF_PROG_TEST_RUN of `bg_path`).
    pub fn route(
        &mut self,
        backend: SocketAddr,
        protocol: Protocol,
    ) -> Result<Route, DataplaneError> {
        let answer = self.ask_fib(backend, protocol)?;
        let egress = answer.egress_ifindex;
        Ok(match answer.rc {
            FIB_SUCCESS => Route::Forward { egress },
            // The kernel answers "not forwarded" for local addresses and
            // for a lookup that matched no route at all.
            FIB_NOT_FWDED if is_local(backend.ip()) => Route::Local,
            FIB_NOT_FWDED => Route::NoRoute("no route"),
            FIB_NO_NEIGH => Route::NoNeighbour { egress },
            FIB_FWD_DISABLED => Route::ForwardingDisabled,
            FIB_BLACKHOLE => Route::NoRoute("a blackhole route"),
            FIB_UNREACHABLE => Route::NoRoute("an unreachable route"),
            FIB_PROHIBIT => Route::NoRoute("a prohibit route"),
            other => Route::Kernel(other),
        })
    }

    /// The next hop towards `to`, when the FIB forwards there.
    pub fn next_hop(
        &mut self,
        to: SocketAddr,
        protocol: Protocol,
    ) -> Result<Option<NextHop>, DataplaneError> {
        let a = self.ask_fib(to, protocol)?;
        Ok((a.rc == FIB_SUCCESS).then_some(NextHop {
            egress: a.egress_ifindex,
            dmac: a.dmac,
            smac: a.smac,
        }))
    }

    fn ask_fib(
        &mut self,
        backend: SocketAddr,
        protocol: Protocol,
    ) -> Result<PathQuery, DataplaneError> {
        let err = |e| DataplaneError::Program(names::PROG_PATH, e);
        let ifindex = self.ifindex;
        let ebpf = self.ebpf_mut();
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROG_PATH)
            .ok_or(err(aya::programs::ProgramError::NotLoaded))?
            .try_into()
            .map_err(err)?;
        if prog.fd().is_err() {
            prog.load().map_err(err)?;
        }
        let (addr_be, family) = addr_words(backend.ip());
        let query = PathQuery {
            addr_be,
            ifindex,
            port_be: backend.port().to_be(),
            family,
            proto: protocol.ip_proto(),
            rc: u32::MAX,
            egress_ifindex: 0,
            dmac: [0; 6],
            smac: [0; 6],
        };
        let map_err = |e| DataplaneError::Map(names::PATH_QUERY, e);
        {
            let map = ebpf
                .map_mut(names::PATH_QUERY)
                .ok_or(DataplaneError::MissingMap(names::PATH_QUERY))?;
            let mut slot: Array<&mut MapData, PathQuery> = Array::try_from(map).map_err(map_err)?;
            slot.set(0, query, 0).map_err(map_err)?;
        }
        let prog: &Xdp = ebpf
            .program(names::PROG_PATH)
            .ok_or(err(aya::programs::ProgramError::NotLoaded))?
            .try_into()
            .map_err(err)?;
        let frame = [0u8; 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        prog.test_run(opts).map_err(err)?;
        let map = ebpf
            .map(names::PATH_QUERY)
            .ok_or(DataplaneError::MissingMap(names::PATH_QUERY))?;
        let slot: Array<&MapData, PathQuery> = Array::try_from(map).map_err(map_err)?;
        slot.get(&0, 0).map_err(map_err)
    }

    /// Steered frames the kernel dropped on their way out of `ifindex`
    /// (refused redirects and untaken frames), since the agent started.
    pub fn drops_towards(&self, ifindex: u32) -> Result<u64, DataplaneError> {
        let map_err = |e| DataplaneError::Map(names::REDIRECT_DROPS, e);
        let map = self
            .ebpf()
            .map(names::REDIRECT_DROPS)
            .ok_or(DataplaneError::MissingMap(names::REDIRECT_DROPS))?;
        let drops: PerCpuHashMap<&MapData, u32, u64> =
            PerCpuHashMap::try_from(map).map_err(map_err)?;
        match drops.get(&ifindex, 0) {
            Ok(per_cpu) => Ok(per_cpu.iter().sum()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(0),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// Whether `ip` is an address of this host (in this network namespace):
/// binding to it succeeds only then.
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn if_name(ifindex: u32) -> String {
    crate::dataplane::interfaces()
        .into_iter()
        .find(|(i, _)| *i == ifindex)
        .map_or_else(|| format!("ifindex {ifindex}"), |(_, n)| n)
}

/// Judges backends' paths for their probes, remembering the drop counts
/// each saw last.
#[derive(Default)]
pub struct PathJudge {
    last_drops: Mutex<HashMap<(String, Colour), (u32, u64)>>,
}

impl PathJudge {
    /// Ok when the data path can deliver to `backend`. `probed` says the
    /// probe just sent traffic there, so the kernel has asked for its
    /// neighbour: an unresolved one then means no host answers.
    pub fn judge(
        &self,
        dp: &mut Dataplane,
        service: &str,
        colour: Colour,
        backend: SocketAddr,
        protocol: Protocol,
        probed: bool,
    ) -> Result<(), String> {
        let route = dp
            .route(backend, protocol)
            .map_err(|e| format!("the data path's route to {} is unknown: {e}", backend.ip()))?;
        let ip = backend.ip();
        match route {
            Route::Local | Route::Kernel(_) => Ok(()),
            Route::Forward { egress } => {
                let now = dp.drops_towards(egress).unwrap_or(0);
                let key = (service.to_owned(), colour);
                let mut last = self.last_drops.lock().expect("poisoned");
                let before = last.insert(key, (egress, now));
                match before {
                    Some((e, seen)) if e == egress && now > seen => Err(format!(
                        "the kernel dropped {} steered frames headed out of {} since the last probe: XDP cannot transmit there (a veth peer without XDP or GRO, or a full ring)",
                        now - seen,
                        if_name(egress)
                    )),
                    _ => Ok(()),
                }
            }
            Route::NoNeighbour { egress } if probed => Err(format!(
                "no host answers for {ip} on {}: its neighbour entry stays unresolved (ARP or ND got no reply)",
                if_name(egress)
            )),
            Route::NoNeighbour { .. } => Ok(()),
            Route::NoRoute(what) => Err(format!(
                "no route to {ip}: the data path's FIB found {what}"
            )),
            Route::ForwardingDisabled if is_local(ip) => Ok(()),
            Route::ForwardingDisabled => Err(format!(
                "IP forwarding is off on {}: the kernel will not forward steered packets to {ip}",
                dp.iface
            )),
        }
    }
}
