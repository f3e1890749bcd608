//! Attaching the steering program to an interface, XDP or TC, and adopting
//! the pinned links an earlier agent left, so a restart never leaves a gap.
//!
//! Pins under the interface's pin directory: `link` (XDP steering),
//! `steer_tc_link` (TC ingress steering), `unnat_link` (TC egress reverse
//! NAT) and `unnat_link_if<N>` (reverse NAT on more egresses).
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd},
    path::Path,
};

use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use bg_common::names;

use super::DataplaneError;
use crate::{config::AttachRequest, model::AttachMode};

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// The XDP steering link.
pub const XDP_LINK_PIN: &str = "link";
/// The TC (tcx ingress) steering link.
pub const TC_LINK_PIN: &str = "steer_tc_link";
/// The TC egress (TCX) link of the reverse-NAT program.
pub const UNNAT_LINK_PIN: &str = "unnat_link";

/// Which XDP mode the operator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeRequest {
    /// Driver mode, falling back to generic mode with a log line.
    Auto,
    /// Driver mode only; fail if the driver lacks support.
    Driver,
    /// Generic mode only.
    Generic,
}

/// Attaches (or adopts) the steering program as `request` says, then
/// detaches a steering link of the other kind that an agent configured
/// otherwise left: the new one is in place first, so there is no gap.
pub fn steering(
    ebpf: &mut Ebpf,
    iface: &str,
    pin_dir: &Path,
    request: AttachRequest,
    xdp_mode: XdpModeRequest,
) -> Result<AttachMode> {
    let (xdp_pin, tc_pin) = (pin_dir.join(XDP_LINK_PIN), pin_dir.join(TC_LINK_PIN));
    let mode = match request {
        AttachRequest::Xdp => xdp(ebpf, iface, &xdp_pin, xdp_mode)?,
        AttachRequest::Tc => tc(
            ebpf,
            names::PROG_STEER_TC,
            iface,
            TcAttachType::Ingress,
            &tc_pin,
        )?,
        AttachRequest::Auto => match xdp(ebpf, iface, &xdp_pin, XdpModeRequest::Driver) {
            Ok(mode) => mode,
            Err(e) => {
                log::warn!("{iface}: native XDP unavailable ({e}); steering on TC ingress");
                tc(
                    ebpf,
                    names::PROG_STEER_TC,
                    iface,
                    TcAttachType::Ingress,
                    &tc_pin,
                )?
            }
        },
    };
    let other = if mode.is_tc() { &xdp_pin } else { &tc_pin };
    if other.exists() {
        log::info!(
            "{iface}: steering moved to {}; detaching the {} link",
            if mode.is_tc() { "TC" } else { "XDP" },
            if mode.is_tc() { "XDP" } else { "TC" }
        );
        std::fs::remove_file(other).map_err(|source| DataplaneError::Io {
            path: other.clone(),
            source,
        })?;
    }
    Ok(mode)
}

/// The steering link pinned in `pin_dir`, if any, and the ifindex it is
/// attached to (0 when its device is gone).
pub fn pinned_steering_ifindex(pin_dir: &Path) -> Option<io::Result<u32>> {
    [XDP_LINK_PIN, TC_LINK_PIN]
        .iter()
        .map(|name| pin_dir.join(name))
        .find(|p| p.exists())
        .map(|p| pinned_link_ifindex(&p))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Program(
            name,
            aya::programs::ProgramError::NotLoaded,
        ))?
        .try_into()
        .map_err(|e| DataplaneError::Program(name, e))
}

/// XDP steering: adopt the pinned link (bpf_link_update swaps the program
/// atomically) or attach in the requested mode and pin the link.
fn xdp(ebpf: &mut Ebpf, iface: &str, link_path: &Path, mode: XdpModeRequest) -> Result<AttachMode> {
    let err = |e| DataplaneError::Program(names::PROG_STEER, e);
    let link_err = |e: String| DataplaneError::Link(link_path.to_owned(), e);
    let prog: &mut Xdp = program(ebpf, names::PROG_STEER)?;
    if prog.fd().is_err() {
        prog.load().map_err(err)?;
    }
    match PinnedLink::from_pin(link_path) {
        Ok(pinned) => {
            let fd: FdLink = pinned.into();
            let link = XdpLink::try_from(fd).map_err(|e| link_err(e.to_string()))?;
            let id = prog.attach_to_link(link).map_err(err)?;
            // Keep the link alive by its pin only, so teardown can detach it.
            drop(prog.take_link(id).map_err(err)?);
            Ok(AttachMode::Adopted)
        }
        Err(_) => {
            let (id, mode) = attach_xdp(prog, iface, mode)?;
            let link = prog.take_link(id).map_err(err)?;
            let fd = FdLink::try_from(link).map_err(|e| link_err(e.to_string()))?;
            fd.pin(link_path)
                .map_err(|e| DataplaneError::Pin(link_path.to_owned(), e))?;
            Ok(mode)
        }
    }
}

/// XDP steering hands the datagrams it samples for a shadow copy to
/// `bg_shadow_tc` on TC ingress; TC steering copies inline and needs none.
/// Only shadows need it, so a failure is logged, not fatal: steering works
/// the same without it, and a shadow then refuses to start.
pub fn shadow(ebpf: &mut Ebpf, iface: &str, pin_dir: &Path, mode: AttachMode) {
    let pin = pin_dir.join(super::shadow::SHADOW_LINK_PIN);
    if mode.is_tc() {
        if pin.exists() {
            let _ = std::fs::remove_file(&pin);
        }
        return;
    }
    if let Err(e) = tc(
        ebpf,
        names::PROG_SHADOW_TC,
        iface,
        TcAttachType::Ingress,
        &pin,
    ) {
        log::warn!("{iface}: shadow copies unavailable: {e}");
    }
}

/// A TC program on `iface` (tcx): adopt its pinned link, or attach and pin.
pub fn tc(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    direction: TcAttachType,
    link_path: &Path,
) -> Result<AttachMode> {
    let err = |e| DataplaneError::Program(name, e);
    let link_err = |e: String| DataplaneError::Link(link_path.to_owned(), e);
    let prog: &mut SchedClassifier = program(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(err)?;
    }
    match PinnedLink::from_pin(link_path) {
        Ok(pinned) => {
            let fd: FdLink = pinned.into();
            let link = SchedClassifierLink::try_from(fd).map_err(|e| link_err(e.to_string()))?;
            let id = prog.attach_to_link(link).map_err(err)?;
            // Keep the link alive by its pin only, so teardown can detach it.
            drop(prog.take_link(id).map_err(err)?);
            Ok(AttachMode::AdoptedTc)
        }
        Err(_) => {
            let id = prog
                .attach(iface, direction)
                .map_err(|source| DataplaneError::Attach {
                    iface: iface.to_owned(),
                    source,
                    hint: if direction == TcAttachType::Egress {
                        " (TC egress, for TCP reverse NAT)"
                    } else {
                        " (TC ingress, for steering)"
                    },
                })?;
            let link = prog.take_link(id).map_err(err)?;
            let fd = FdLink::try_from(link).map_err(|e| link_err(e.to_string()))?;
            fd.pin(link_path)
                .map_err(|e| DataplaneError::Pin(link_path.to_owned(), e))?;
            Ok(AttachMode::Tc)
        }
    }
}

fn attach_xdp(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpModeRequest,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachMode)> {
    let err = |source, hint| DataplaneError::Attach {
        iface: iface.to_owned(),
        source,
        hint,
    };
    const BUSY: &str = "; is another XDP program attached? `ip link show dev IF` shows it";
    match mode {
        XdpModeRequest::Generic => prog
            .attach(iface, XdpMode::Skb)
            .map(|id| (id, AttachMode::Generic))
            .map_err(|e| err(e, BUSY)),
        XdpModeRequest::Driver => prog
            .attach(iface, XdpMode::Driver)
            .map(|id| (id, AttachMode::Driver))
            .map_err(|e| {
                err(
                    e,
                    "; the driver may lack native XDP: try --xdp-mode generic, or attach = \"tc\" in [dataplane]",
                )
            }),
        XdpModeRequest::Auto => match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => Ok((id, AttachMode::Driver)),
            Err(driver_err) => {
                let id = prog.attach(iface, XdpMode::Skb).map_err(|e| err(e, BUSY))?;
                log::warn!(
                    "{iface}: native XDP unavailable ({driver_err}); running in generic (skb) mode, which is slower (attach = \"auto\" in [dataplane] would steer on TC instead)"
                );
                Ok((id, AttachMode::Generic))
            }
        },
    }
}

/// The ifindex the XDP or TCX link pinned at `path` is attached to; 0 when
/// its device is gone. aya's `LinkInfo` does not expose it: ask the kernel.
fn pinned_link_ifindex(path: &Path) -> io::Result<u32> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let get = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: attr is valid for the call; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &get as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by the kernel and is ours.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info { u32 type, id, prog_id; (pad) union { ... } }:
    // both xdp and tcx start the union with their u32 ifindex.
    let mut info = [0u64; 16];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    const BPF_LINK_TYPE_XDP: u64 = 6;
    const BPF_LINK_TYPE_TCX: u64 = 11;
    if !matches!(info[0] & 0xffff_ffff, BPF_LINK_TYPE_XDP | BPF_LINK_TYPE_TCX) {
        return Err(io::Error::other(
            "pinned link is neither an XDP nor a TCX link",
        ));
    }
    // The union starts at byte 16; its first u32 is the ifindex.
    Ok((info[2] & 0xffff_ffff) as u32)
}
