//! Network interfaces of the current namespace, by name and index.
use std::ffi::CString;

use super::error::{DataplaneError, Result};

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

pub(super) fn known_interfaces() -> String {
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
