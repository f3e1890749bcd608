//! The byte offset of one member of a kernel struct, read from the kernel's
//! own BTF (/sys/kernel/btf/vmlinux).
//!
//! The drop-counting tracepoints get `struct net_device *` arguments and must
//! read `ifindex` from them. Rust eBPF has no CO-RE relocations, so the
//! agent looks the offset up here and hands it to the programs in a map.
use std::path::Path;

use thiserror::Error;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("{0}")]
    Unreadable(String),
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("no struct {0} in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {0} has no member {1} in the kernel's BTF")]
    NoMember(String, String),
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// Byte offset of `member` in `struct name`, looking through anonymous
/// structs and unions, as the C compiler lays it out for this kernel.
pub fn member_offset_from(path: &Path, name: &str, member: &str) -> Result<u32, BtfError> {
    let data = std::fs::read(path)
        .map_err(|e| BtfError::Unreadable(format!("{}: {e}", path.display())))?;
    member_offset(&data, name, member)
}

/// One parsed type: its kind, name offset, and where its members start.
struct TypeEntry {
    kind: u32,
    name_off: u32,
    vlen: u32,
    kind_flag: bool,
    /// Byte offset of the kind-specific data after the 12-byte header.
    extra: usize,
}

struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Indexed by type id; id 0 is void.
    entries: Vec<TypeEntry>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or(BtfError::Malformed("truncated header"))?;
        if magic != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (only little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types = section(u32_at(data, 8)? as usize, u32_at(data, 12)? as usize)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = section(u32_at(data, 16)? as usize, u32_at(data, 20)? as usize)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        let mut entries = vec![TypeEntry {
            kind: 0,
            name_off: 0,
            vlen: 0,
            kind_flag: false,
            extra: 0,
        }];
        let mut off = 0;
        while off < types.len() {
            let name_off = u32_at(types, off)?;
            let info = u32_at(types, off + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = off + 12;
            let tail = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            entries.push(TypeEntry {
                kind,
                name_off,
                vlen,
                kind_flag: info >> 31 == 1,
                extra,
            });
            off = extra + tail;
        }
        Ok(Self {
            types,
            strings,
            entries,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Bit offset of `member` in the struct or union with type id `id`.
    fn member_bits(&self, id: usize, member: &str, depth: u32) -> Result<Option<u32>, BtfError> {
        let t = &self.entries[id];
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return Ok(None);
        }
        for i in 0..t.vlen as usize {
            let at = t.extra + 12 * i;
            let (name_off, ty, raw) = (
                u32_at(self.types, at)?,
                u32_at(self.types, at + 4)?,
                u32_at(self.types, at + 8)?,
            );
            // With kind_flag, the low 24 bits hold the offset, the rest a bitfield size.
            let bits = if t.kind_flag { raw & 0xff_ffff } else { raw };
            if name_off == 0 {
                let inner = self.resolve(ty as usize);
                if let Some(b) = self.member_bits(inner, member, depth + 1)? {
                    return Ok(Some(bits + b));
                }
            } else if self.name(name_off) == member.as_bytes() {
                return Ok(Some(bits));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type tags).
    fn resolve(&self, mut id: usize) -> usize {
        for _ in 0..16 {
            match self.entries.get(id) {
                Some(t) if matches!(t.kind, 8..=11 | 18) => {
                    id = u32_at(self.types, t.extra - 4).unwrap_or(0) as usize;
                }
                _ => break,
            }
        }
        id
    }
}

/// `member_offset_from` on BTF already in memory.
pub fn member_offset(data: &[u8], name: &str, member: &str) -> Result<u32, BtfError> {
    let btf = Btf::parse(data)?;
    let id = (1..btf.entries.len())
        .find(|&id| {
            let t = &btf.entries[id];
            t.kind == KIND_STRUCT && btf.name(t.name_off) == name.as_bytes()
        })
        .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
    let bits = btf
        .member_bits(id, member, 0)?
        .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()))?;
    Ok(bits / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made BTF blob: `struct s { int a; union { int pad; int b; }; int c; }`
    /// with `b` at byte 8 behind a typedef, laid out independently of the parser.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0pad\0b\0c\0t\0";
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        // 1: int (4 bytes, 32 bits)
        push(&[name("int"), info(KIND_INT, 0), 4, 32]);
        // 2: union { int pad; int b; }
        push(&[0, info(KIND_UNION, 2), 4]);
        push(&[name("pad"), 1, 0]);
        push(&[name("b"), 1, 0]);
        // 3: typedef t -> 2
        push(&[name("t"), info(8, 0), 2]);
        // 4: struct s { int a @0; t (anon) @64 bits; int c @96 }
        push(&[name("s"), info(KIND_STRUCT, 3), 16]);
        push(&[name("a"), 1, 0]);
        push(&[0, 3, 64]);
        push(&[name("c"), 1, 96]);
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn offsets_are_found_through_anonymous_unions_and_typedefs() {
        let b = blob();
        assert_eq!(member_offset(&b, "s", "a"), Ok(0));
        assert_eq!(member_offset(&b, "s", "b"), Ok(8));
        assert_eq!(member_offset(&b, "s", "c"), Ok(12));
        assert_eq!(
            member_offset(&b, "s", "zz"),
            Err(BtfError::NoMember("s".into(), "zz".into()))
        );
        assert_eq!(
            member_offset(&b, "nope", "a"),
            Err(BtfError::NoStruct("nope".into()))
        );
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let b = blob();
        for cut in 0..b.len() {
            // Every truncation is an error or a (bounded) answer, never a panic.
            let _ = member_offset(&b[..cut], "s", "c");
        }
        assert!(matches!(
            member_offset(b"\x00\x01garbage", "s", "a"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn this_kernel_has_net_device_ifindex() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIP: no {VMLINUX_BTF}");
            return;
        }
        let off = member_offset_from(Path::new(VMLINUX_BTF), "net_device", "ifindex").unwrap();
        // ifindex sits in the first cache lines of net_device on every kernel.
        assert!(off > 0 && off < 512 && off.is_multiple_of(4), "{off}");
    }
}
