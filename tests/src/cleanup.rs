//! What this process created (namespaces, pin roots, mounts), so an
//! interrupt can remove it all: Drop does not run when SIGINT or SIGTERM
//! ends a process.
use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PIN_ROOTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static MOUNTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn track_netns(name: &str) {
    NAMESPACES.lock().expect("poisoned").push(name.to_owned());
}

pub fn untrack_netns(name: &str) {
    NAMESPACES.lock().expect("poisoned").retain(|n| n != name);
}

pub fn track_pins(root: &Path) {
    PIN_ROOTS.lock().expect("poisoned").push(root.to_owned());
}

pub fn untrack_pins(root: &Path) {
    PIN_ROOTS.lock().expect("poisoned").retain(|r| r != root);
}

pub fn track_mount(dir: &Path) {
    MOUNTS.lock().expect("poisoned").push(dir.to_owned());
}

pub fn untrack_mount(dir: &Path) {
    MOUNTS.lock().expect("poisoned").retain(|d| d != dir);
}

/// Kills what runs in our namespaces, deletes them, unmounts our mounts
/// and removes our pins.
pub fn remove_everything() {
    let names = std::mem::take(&mut *NAMESPACES.lock().expect("poisoned"));
    for name in names {
        crate::netns::delete(&name);
    }
    let mounts = std::mem::take(&mut *MOUNTS.lock().expect("poisoned"));
    for dir in mounts {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&dir)
            .status();
    }
    let roots = std::mem::take(&mut *PIN_ROOTS.lock().expect("poisoned"));
    for root in roots {
        crate::lab::remove_pins(&root);
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts
/// afterwards, and starts one thread that waits for them: it removes
/// everything this process created, then exits with 130. Call it first in
/// `main`, before any other thread exists.
pub fn remove_everything_on_interrupt() {
    // SAFETY: signal-set calls on a local set; sigwait in a dedicated thread
    // is the async-signal-safe way to react (no work in a handler).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            eprintln!("interrupted: removing the namespaces and pins this run created");
            remove_everything();
            std::process::exit(130);
        });
    }
}
