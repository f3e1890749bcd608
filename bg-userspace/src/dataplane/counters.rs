//! The data path's counters, typed: read by `bg_common`'s index
//! constants, never by string.
use bg_common::counter;

/// The data path's counters, summed over CPUs. Read by the index constants
/// of `bg_common` (`counter::*`, `kernel_drop::*`, `tcp_event::*`), so a
/// renamed counter is a compile error, never a panic in the rollback loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub(super) steering: [u64; counter::NAMES.len()],
    pub(super) kernel_drops: [u64; bg_common::kernel_drop::NAMES.len()],
    pub(super) tcp_events: [u64; bg_common::tcp_event::NAMES.len()],
    pub(super) dsr_events: [u64; bg_common::dsr_event::NAMES.len()],
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
        let dsr = bg_common::dsr_event::NAMES.iter().zip(&self.dsr_events);
        steering
            .chain(kernel)
            .chain(tcp)
            .chain(dsr)
            .map(|(n, v)| (*n, *v))
    }
}
