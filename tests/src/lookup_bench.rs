//! The key-size bench's objects: the bench object's `bg_lookup_key40` and
//! `bg_lookup_key12`, each one LRU hash lookup of a TCP segment's flow,
//! with today's 40-byte `FlowKey` and with a 12-byte IPv4 4-tuple.
use anyhow::{Context as _, Result, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap,
    programs::{TestRun, TestRunOptions, Xdp},
};
use bg_common::{FAMILY_IPV4, FLOW_OPEN, FlowKey, FlowValue, PROTO_TCP};

/// The two lookup programs, the no-op first: the bench times them in turn.
pub const PROGRAMS: [&str; 3] = ["bg_noop", "bg_lookup_key40", "bg_lookup_key12"];

/// The bench object with its two lookup tables of `entries` each, and the
/// programs of `PROGRAMS` loaded.
pub fn load(entries: u32) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("LOOKUP_KEY40", entries)
        .map_max_entries("LOOKUP_KEY12", entries)
        .load(bluegreen::dataplane::BENCH_OBJECT)?;
    for name in PROGRAMS {
        let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        p.load()?;
    }
    Ok(ebpf)
}

/// Both keys of the flow of an IPv4 TCP frame without IP options, built
/// from the frame's bytes (addresses at 26 and 30, ports at 34 and 36).
pub fn keys(frame: &[u8]) -> Result<(FlowKey, [u32; 3])> {
    ensure!(
        frame.len() >= 38
            && frame[12..14] == [0x08, 0x00]
            && frame[14] == 0x45
            && frame[23] == PROTO_TCP,
        "not an IPv4 TCP frame without options"
    );
    let word = |o: usize| u32::from_ne_bytes([frame[o], frame[o + 1], frame[o + 2], frame[o + 3]]);
    let port = |o: usize| u16::from_ne_bytes([frame[o], frame[o + 1]]);
    let key40 = FlowKey {
        client_be: [word(26), 0, 0, 0],
        server_be: [word(30), 0, 0, 0],
        client_port_be: port(34),
        server_port_be: port(36),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    Ok((key40, [word(26), word(30), word(34)]))
}

/// Puts the flow of `frame` in both tables, as an established flow.
pub fn insert_flow(ebpf: &mut Ebpf, frame: &[u8]) -> Result<()> {
    let (key40, key12) = keys(frame)?;
    let value = FlowValue {
        last_seen_jiffies: 0,
        colour: 0,
        state: FLOW_OPEN,
    };
    let mut t40: HashMap<_, FlowKey, FlowValue> =
        HashMap::try_from(ebpf.map_mut("LOOKUP_KEY40").context("LOOKUP_KEY40")?)?;
    t40.insert(key40, value, 0)?;
    let mut t12: HashMap<_, [u32; 3], FlowValue> =
        HashMap::try_from(ebpf.map_mut("LOOKUP_KEY12").context("LOOKUP_KEY12")?)?;
    t12.insert(key12, value, 0)?;
    Ok(())
}

/// One run of `program` on `frame`: its verdict (XDP_PASS for a hit,
/// XDP_DROP for a miss, XDP_ABORTED for a frame it cannot key).
pub fn verdict(ebpf: &Ebpf, program: &str, frame: &[u8]) -> Result<u32> {
    let p: &Xdp = ebpf
        .program(program)
        .context(program.to_owned())?
        .try_into()?;
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    Ok(p.test_run(opts)?.return_value)
}
