#![no_std]
// The eBPF programs live in the binary target (src/main.rs); this empty library
// lets bg-userspace declare a build-dependency so cargo rebuilds it on change.
