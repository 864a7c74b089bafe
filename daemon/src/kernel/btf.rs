//! Field offsets of kernel structs, from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the exec and open programs.
//!
//! aya-ebpf has no CO-RE relocations, so the programs read kernel structs
//! at offsets the daemon passes in `.rodata` (`KernelOffsets`). This is a
//! minimal BTF reader, enough to find the byte offset of a member: it walks
//! struct and union members, goes into anonymous members (`dentry.d_name.len`
//! sits in an anonymous union inside an anonymous struct on 6.x), and
//! follows typedef/const/volatile. (aya-obj parses BTF too, but keeps its
//! type and string lookups crate-private.)
//!
//! Every offset is checked against the width the program reads it with, and
//! bitfields are refused, so a kernel whose layout differs fails here, at
//! load, naming the struct and field, instead of misreading at run time.

use std::collections::HashMap;

use warden_common::{KernelOffsets, DENTRY_SPAN_BYTES};

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("read {path}: {message}")]
    Read { path: String, message: String },
    #[error("not little-endian BTF (bad magic or header)")]
    BadHeader,
    #[error("BTF is truncated at byte {0}")]
    Truncated(usize),
    #[error("BTF has a type of unknown kind {kind} (id {id})")]
    UnknownKind { kind: u32, id: usize },
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's BTF has no field {field} in struct {strukt}")]
    NoField { strukt: String, field: String },
    #[error("struct {strukt} field {field} is a bitfield; the programs cannot read it")]
    Bitfield { strukt: String, field: String },
    #[error("struct dentry lays out d_parent at {parent}, d_name.len at {len} and d_name.name at {name}; the path walk reads them as one {DENTRY_SPAN_BYTES}-byte span from d_parent")]
    DentryLayout { parent: u32, len: u32, name: u32 },
    #[error("struct {strukt} field {field} is {got} bytes wide; the programs read {want}")]
    Width {
        strukt: String,
        field: String,
        got: u32,
        want: u32,
    },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

const MAGIC: u16 = 0xeb9f;

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: String,
    kind: u32,
    /// Size (int, struct, union, enum) or the referenced type (ptr,
    /// typedef, qualifiers).
    size_or_type: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob: its types, and named structs by name.
pub struct Btf {
    /// Indexed by type id; id 0 is void.
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = d.get(at..at + 4).ok_or(BtfError::Truncated(at))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// A found member: its bit offset from the start of the outer struct, its
/// type and its bitfield size (0 for a plain member).
struct Found {
    bit_offset: u32,
    type_id: u32,
    bitfield_size: u32,
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let data = std::fs::read(VMLINUX_BTF).map_err(|e| BtfError::Read {
            path: VMLINUX_BTF.into(),
            message: e.to_string(),
        })?;
        Self::parse(&data)
    }

    /// Parses a BTF blob (header, type section, string section).
    pub fn parse(d: &[u8]) -> Result<Self, BtfError> {
        if d.len() < 24 || u16::from_le_bytes([d[0], d[1]]) != MAGIC {
            return Err(BtfError::BadHeader);
        }
        let hdr_len = u32_at(d, 4)? as usize;
        let type_off = hdr_len + u32_at(d, 8)? as usize;
        let type_len = u32_at(d, 12)? as usize;
        let str_off = hdr_len + u32_at(d, 16)? as usize;
        let str_len = u32_at(d, 20)? as usize;
        let strings = d
            .get(str_off..str_off + str_len)
            .ok_or(BtfError::Truncated(str_off))?;
        let string = |at: u32| -> String {
            let at = at as usize;
            let tail = strings.get(at..).unwrap_or_default();
            let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
            String::from_utf8_lossy(&tail[..end]).into_owned()
        };
        let mut types = vec![Type {
            name: String::new(),
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut p = type_off;
        let end = type_off + type_len;
        if end > d.len() {
            return Err(BtfError::Truncated(d.len()));
        }
        while p < end {
            let name_off = u32_at(d, p)?;
            let info = u32_at(d, p + 4)?;
            let size_or_type = u32_at(d, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => p += 4,
                KIND_ARRAY => p += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(d, p + 8)?;
                        let (bit_offset, bitfield_size) = if kflag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name: string(u32_at(d, p)?),
                            type_id: u32_at(d, p + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                        p += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => p += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => p += 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                kind => {
                    return Err(BtfError::UnknownKind {
                        kind,
                        id: types.len(),
                    })
                }
            }
            types.push(Type {
                name: string(name_off),
                kind,
                size_or_type,
                members,
            });
        }
        let mut structs = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.name.is_empty() {
                // The first definition with members wins over empty ones.
                let entry = structs.entry(t.name.clone()).or_insert(id as u32);
                if types[*entry as usize].members.is_empty() && !t.members.is_empty() {
                    *entry = id as u32;
                }
            }
        }
        Ok(Self { types, structs })
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers to the real type.
    fn strip(&self, mut id: u32) -> u32 {
        // Bounded: a malformed blob could loop.
        for _ in 0..64 {
            match self.get(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Finds `name` in struct/union `id`, descending into anonymous members.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<Found> {
        let t = self.get(self.strip(id))?;
        if (t.kind != KIND_STRUCT && t.kind != KIND_UNION) || depth > 8 {
            return None;
        }
        if let Some(m) = t.members.iter().find(|m| m.name == name) {
            return Some(Found {
                bit_offset: m.bit_offset,
                type_id: m.type_id,
                bitfield_size: m.bitfield_size,
            });
        }
        t.members
            .iter()
            .filter(|m| m.name.is_empty())
            .find_map(|m| {
                self.find_member(m.type_id, name, depth + 1).map(|f| Found {
                    bit_offset: m.bit_offset + f.bit_offset,
                    ..f
                })
            })
    }

    /// Byte offset of `path` (`"f_path.dentry"`) in struct `strukt`, and the
    /// width of the member in bytes (0 for kinds that have none).
    pub fn member(&self, strukt: &str, path: &str) -> Result<(u32, u32), BtfError> {
        let mut id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut bits = 0u32;
        for part in path.split('.') {
            let found = self
                .find_member(id, part, 0)
                .ok_or_else(|| BtfError::NoField {
                    strukt: strukt.into(),
                    field: path.into(),
                })?;
            if found.bitfield_size != 0 || found.bit_offset % 8 != 0 {
                return Err(BtfError::Bitfield {
                    strukt: strukt.into(),
                    field: path.into(),
                });
            }
            bits += found.bit_offset;
            id = found.type_id;
        }
        let width = match self.get(self.strip(id)) {
            Some(t) if t.kind == KIND_PTR => 8,
            Some(t)
                if matches!(
                    t.kind,
                    KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION
                ) =>
            {
                t.size_or_type
            }
            _ => 0,
        };
        Ok((bits / 8, width))
    }

    /// Offset of a member the programs read as `want` bytes.
    pub fn offset(&self, strukt: &str, path: &str, want: u32) -> Result<u32, BtfError> {
        let (offset, got) = self.member(strukt, path)?;
        if got != want {
            return Err(BtfError::Width {
                strukt: strukt.into(),
                field: path.into(),
                got,
                want,
            });
        }
        Ok(offset)
    }

    /// Every offset the exec and open programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let offsets = KernelOffsets {
            bprm_file: self.offset("linux_binprm", "file", 8)?,
            bprm_filename: self.offset("linux_binprm", "filename", 8)?,
            file_f_inode: self.offset("file", "f_inode", 8)?,
            file_f_mode: self.offset("file", "f_mode", 4)?,
            file_f_path_dentry: self.offset("file", "f_path.dentry", 8)?,
            file_f_path_mnt: self.offset("file", "f_path.mnt", 8)?,
            inode_i_ino: self.offset("inode", "i_ino", 8)?,
            inode_i_sb: self.offset("inode", "i_sb", 8)?,
            sb_s_dev: self.offset("super_block", "s_dev", 4)?,
            dentry_d_parent: self.offset("dentry", "d_parent", 8)?,
            dentry_d_name_name: self.offset("dentry", "d_name.name", 8)?,
            dentry_d_name_len: self.offset("dentry", "d_name.len", 4)?,
            vfsmount_mnt_root: self.offset("vfsmount", "mnt_root", 8)?,
            // Used for container_of only: any width.
            mount_mnt: self.member("mount", "mnt")?.0,
            mount_mnt_parent: self.offset("mount", "mnt_parent", 8)?,
            mount_mnt_mountpoint: self.offset("mount", "mnt_mountpoint", 8)?,
            task_files: self.offset("task_struct", "files", 8)?,
            files_fdt: self.offset("files_struct", "fdt", 8)?,
            fdtable_fd: self.offset("fdtable", "fd", 8)?,
            fdtable_max_fds: self.offset("fdtable", "max_fds", 4)?,
            pt_regs_orig_ax: self.offset("pt_regs", "orig_ax", 8)?,
            task_ti_status: self.offset("task_struct", "thread_info.status", 4)?,
            valid: 1,
            file_f_flags: self.offset("file", "f_flags", 4)?,
            task_start_time: self.offset("task_struct", "start_time", 8)?,
            sb_s_magic: self.offset("super_block", "s_magic", 8)?,
            task_nsproxy: self.offset("task_struct", "nsproxy", 8)?,
            nsproxy_mnt_ns: self.offset("nsproxy", "mnt_ns", 8)?,
            mnt_namespace_root: self.offset("mnt_namespace", "root", 8)?,
            pt_regs_di: self.offset("pt_regs", "di", 8)?,
            pt_regs_si: self.offset("pt_regs", "si", 8)?,
            pt_regs_dx: self.offset("pt_regs", "dx", 8)?,
            pt_regs_r10: self.offset("pt_regs", "r10", 8)?,
            task_fs: self.offset("task_struct", "fs", 8)?,
            fs_pwd_mnt: self.offset("fs_struct", "pwd.mnt", 8)?,
            fs_pwd_dentry: self.offset("fs_struct", "pwd.dentry", 8)?,
            task_tgid: self.offset("task_struct", "tgid", 4)?,
            task_cgroups: self.offset("task_struct", "cgroups", 8)?,
            css_set_dfl_cgrp: self.offset("css_set", "dfl_cgrp", 8)?,
            cgroup_kn: self.offset("cgroup", "kn", 8)?,
            kernfs_node_id: self.offset("kernfs_node", "id", 8)?,
            cgroup_level: self.offset("cgroup", "level", 4)?,
            // A flexible array of pointers: any width.
            cgroup_ancestors: self.member("cgroup", "ancestors")?.0,
            _pad_escape: 0,
            pt_regs_bx: self.offset("pt_regs", "bx", 8)?,
            pt_regs_cx: self.offset("pt_regs", "cx", 8)?,
            inode_i_nlink: 0,
            inode_i_generation: 0,
            inode_i_ctime_sec: 0,
            inode_i_ctime_nsec: 0,
            cache_valid: 0,
            _pad_cache: 0,
            dentry_d_sb: self.offset("dentry", "d_sb", 8)?,
            sb_s_mounts: 0,
            mount_sb_link: 0,
            sb_mounts_kind: 0,
            task_cred: self.offset("task_struct", "cred", 8)?,
            task_real_cred: self.offset("task_struct", "real_cred", 8)?,
            mount_mnt_ns: self.offset("mount", "mnt_ns", 8)?,
            _pad_mnt_ns: 0,
        };
        check_dentry_span(&offsets)?;
        let mut offsets = offsets;
        if let Some(c) = self.cache_offsets() {
            offsets.inode_i_nlink = c[0];
            offsets.inode_i_generation = c[1];
            offsets.inode_i_ctime_sec = c[2];
            offsets.inode_i_ctime_nsec = c[3];
            offsets.cache_valid = 1;
        }
        if let Some((head, link, kind)) = self.sb_mounts() {
            offsets.sb_s_mounts = head;
            offsets.mount_sb_link = link;
            offsets.sb_mounts_kind = kind;
        }
        Ok(offsets)
    }
}

impl Btf {
    /// How a super block lists its mounts: (`s_mounts`, the link in
    /// `struct mount`, kind), kind 1 a `list_head` through
    /// `mount.mnt_instance` (before 6.16), 2 a NULL-ended chain of
    /// `mount.mnt_next_for_sb` pointers from the `s_mounts` pointer (6.16
    /// on); `None` for another shape (the inode hooks then refuse agents).
    fn sb_mounts(&self) -> Option<(u32, u32, u32)> {
        if let Ok(link) = self.offset("mount", "mnt_next_for_sb", 8) {
            let head = self.offset("super_block", "s_mounts", 8).ok()?;
            return Some((head, link, 2));
        }
        let (head, width) = self.member("super_block", "s_mounts").ok()?;
        let (link, link_width) = self.member("mount", "mnt_instance").ok()?;
        (width == 16 && link_width == 16).then_some((head, link, 1))
    }
}

impl Btf {
    /// The decision cache's inode fields (`i_nlink`, `i_generation`, ctime
    /// seconds and nanoseconds), or `None` (the cache stays off) where
    /// this kernel's `struct inode` has another shape. The ctime is
    /// `i_ctime_sec`/`i_ctime_nsec` since 6.11, `__i_ctime` (6.6-6.10) or
    /// `i_ctime` before: a `timespec64`, seconds then nanoseconds.
    fn cache_offsets(&self) -> Option<[u32; 4]> {
        let nlink = self.offset("inode", "i_nlink", 4).ok()?;
        let generation = self.offset("inode", "i_generation", 4).ok()?;
        let (sec, nsec) = match (
            self.offset("inode", "i_ctime_sec", 8),
            self.offset("inode", "i_ctime_nsec", 4),
        ) {
            (Ok(s), Ok(n)) => (s, n),
            _ => {
                let base = self
                    .member("inode", "__i_ctime")
                    .or_else(|_| self.member("inode", "i_ctime"))
                    .ok()?;
                if base.1 != 16 {
                    return None;
                }
                (base.0, base.0 + 8)
            }
        };
        Some([nlink, generation, sec, nsec])
    }
}

/// The walk's one read per step (`DENTRY_SPAN_BYTES` from `d_parent`) must
/// cover `d_name.name` (8 bytes, 8-aligned from `d_parent`) and
/// `d_name.len` (4 bytes, 4-aligned). True of every kernel since 2.6: `d_name`
/// follows `d_parent`.
fn check_dentry_span(o: &KernelOffsets) -> Result<(), BtfError> {
    let (parent, name, len) = (o.dentry_d_parent, o.dentry_d_name_name, o.dentry_d_name_len);
    let within = |field: u32, width: u32| {
        field
            .checked_sub(parent)
            .is_some_and(|rel| rel >= 8 && rel % width == 0 && rel + width <= DENTRY_SPAN_BYTES)
    };
    if within(name, 8) && within(len, 4) {
        Ok(())
    } else {
        Err(BtfError::DentryLayout { parent, len, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob type by type, as the kernel lays it out.
    #[derive(Default)]
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Blob {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            at
        }
        fn header(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            kflag: bool,
            size_or_type: u32,
        ) -> u32 {
            let name = self.string(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for v in [name, info, size_or_type] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.header(name, KIND_INT, 0, false, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }
        fn ptr(&mut self, to: u32) -> u32 {
            self.header("", KIND_PTR, 0, false, to)
        }
        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.header(name, KIND_TYPEDEF, 0, false, to)
        }
        /// Members: (name, type, bit offset, bitfield bits).
        fn compound(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kflag = members.iter().any(|m| m.3 != 0);
            let id = self.header(name, kind, members.len() as u32, kflag, size);
            for &(mname, ty, bits, bf) in members {
                let mname = self.string(mname);
                let offset = if kflag { (bf << 24) | bits } else { bits };
                for v in [mname, ty, offset] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }
        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A `struct dentry` shaped like 6.x: d_name inside an anonymous union
    /// inside an anonymous struct, behind a typedef.
    fn sample() -> Vec<u8> {
        let mut b = Blob::new();
        let u32_t = b.int("unsigned int", 4);
        let u64_t = b.int("long long unsigned int", 8);
        let uchar = b.int("unsigned char", 1);
        let name_ptr = b.ptr(uchar);
        let anon_struct = b.compound(
            KIND_STRUCT,
            "",
            8,
            &[("hash", u32_t, 0, 0), ("len", u32_t, 32, 0)],
        );
        let anon_union = b.compound(
            KIND_UNION,
            "",
            8,
            &[("", anon_struct, 0, 0), ("hash_len", u64_t, 0, 0)],
        );
        let qstr = b.compound(
            KIND_STRUCT,
            "qstr",
            16,
            &[("", anon_union, 0, 0), ("name", name_ptr, 64, 0)],
        );
        let qstr_td = b.typedef("qstr_t", qstr);
        let fwd_dentry_ptr = b.ptr(0);
        b.compound(
            KIND_STRUCT,
            "dentry",
            64,
            &[
                ("d_flags", u32_t, 0, 0),
                ("d_bits", u32_t, 32, 3),
                ("d_parent", fwd_dentry_ptr, 192, 0),
                ("d_name", qstr_td, 256, 0),
            ],
        );
        b.bytes()
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_typedefs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("dentry", "d_parent").unwrap(), (24, 8));
        assert_eq!(btf.member("dentry", "d_name.name").unwrap(), (40, 8));
        assert_eq!(btf.offset("dentry", "d_name.len", 4).unwrap(), 36);
        assert_eq!(btf.member("dentry", "d_name.hash_len").unwrap(), (32, 8));
    }

    #[test]
    fn errors_name_the_struct_and_field() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(
            btf.offset("dentry", "d_name.len", 8)
                .unwrap_err()
                .to_string(),
            "struct dentry field d_name.len is 4 bytes wide; the programs read 8"
        );
        assert_eq!(
            btf.member("dentry", "d_inode").unwrap_err().to_string(),
            "the kernel's BTF has no field d_inode in struct dentry"
        );
        assert_eq!(
            btf.member("linux_binprm", "file").unwrap_err().to_string(),
            "the kernel's BTF has no struct linux_binprm"
        );
        assert!(matches!(
            btf.member("dentry", "d_bits"),
            Err(BtfError::Bitfield { .. })
        ));
        // The sample lacks most structs the programs need: the first missing
        // one is named.
        assert_eq!(
            btf.kernel_offsets().unwrap_err(),
            BtfError::NoStruct("linux_binprm".into())
        );
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        assert_eq!(Btf::parse(&[0; 10]).err(), Some(BtfError::BadHeader));
        let mut blob = sample();
        blob.truncate(blob.len() - 20);
        assert!(Btf::parse(&blob).is_err());
        let mut blob = sample();
        // Kind 31 does not exist.
        blob[24 + 4 + 3] = 31;
        assert!(matches!(
            Btf::parse(&blob),
            Err(BtfError::UnknownKind { kind: 31, .. })
        ));
    }

    /// On a machine with kernel BTF, every offset the programs need is found
    /// (skipped where /sys/kernel/btf/vmlinux is missing).
    #[test]
    fn running_kernel_has_every_offset() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no {VMLINUX_BTF}: skipped");
            return;
        };
        let o = btf.kernel_offsets().unwrap();
        assert_eq!(o.valid, 1);
        assert_ne!(o.dentry_d_name_name, o.dentry_d_name_len);
        // The inode hooks' list of a super block's mounts: one of the two
        // shapes (this host's 6.18: the pointer chain).
        assert_ne!(o.sb_mounts_kind, 0);
    }

    /// The walk's single read per step needs `d_name` right after `d_parent`.
    #[test]
    fn a_dentry_layout_the_walk_cannot_read_in_one_span_is_refused() {
        // 6.x: d_parent 24, d_name.len 36, d_name.name 40.
        let mut o = KernelOffsets {
            dentry_d_parent: 24,
            dentry_d_name_len: 36,
            dentry_d_name_name: 40,
            ..KernelOffsets::default()
        };
        check_dentry_span(&o).unwrap();
        o.dentry_d_name_name = 56; // beyond the span
        assert!(matches!(
            check_dentry_span(&o),
            Err(BtfError::DentryLayout { name: 56, .. })
        ));
        o.dentry_d_name_name = 40;
        o.dentry_d_name_len = 16; // before d_parent
        assert!(check_dentry_span(&o).is_err());
    }
}
