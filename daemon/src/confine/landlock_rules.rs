//! Landlock: which rights where. The ruleset grants everything on each
//! sibling of the paths leading to a protected path, since Landlock only
//! grants ([`plan`]).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use landlock::{AccessFs, BitFlags, ABI};

/// The access rights the ruleset handles: every write-like right of ABI 5
/// (pinned, so a newer kernel or crate adds no semantics nobody tested) and
/// reading files (the keys). Executing and listing directories stay
/// unrestricted. On older kernels the crate drops what they lack (best
/// effort) and [`Confinement::describe`] records the ABI.
pub(super) fn handled() -> BitFlags<AccessFs> {
    AccessFs::from_write(ABI::V5) | AccessFs::ReadFile
}

/// Everywhere else: everything handled except creating device nodes (a
/// root agent could otherwise `mknod` the disk under /tmp and write to it).
pub(super) fn normal() -> BitFlags<AccessFs> {
    handled() & !(AccessFs::MakeBlock | AccessFs::MakeChar)
}

pub(super) fn read_only() -> BitFlags<AccessFs> {
    AccessFs::ReadFile.into()
}

pub(super) fn no_access() -> BitFlags<AccessFs> {
    BitFlags::EMPTY
}

/// Rights that mean something on a non-directory.
pub(super) fn file_rights() -> BitFlags<AccessFs> {
    AccessFs::from_file(ABI::V5)
}

/// Devices under the read-only `/dev` that agents still use normally.
pub(super) const WRITABLE_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
];

/// A subtree and the rights in it (the nearest zone above a path decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    pub path: PathBuf,
    pub access: BitFlags<AccessFs>,
}

/// What Warden protects, as absolute, canonical paths.
#[derive(Debug, Clone, Default)]
pub(crate) struct Protected {
    /// No access: the database and the keys.
    pub state_dir: Option<PathBuf>,
    /// No access (it cannot be removed or replaced; connecting is not a
    /// file access Landlock checks before ABI 9).
    pub socket: Option<PathBuf>,
    /// Read only.
    pub policy_dir: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub cgroup2: Vec<PathBuf>,
    pub bpffs: Vec<PathBuf>,
    pub executables: Vec<PathBuf>,
}

/// The zones for `protected`; the root zone `/` comes first.
pub(crate) fn zones(protected: &Protected) -> Vec<Zone> {
    let zone = |path: &Path, access| Zone {
        path: path.to_path_buf(),
        access,
    };
    let mut zones = vec![
        zone(Path::new("/"), normal()),
        // sysfs holds the cgroup2 hierarchy and bpffs on most hosts; it is
        // kernel configuration an agent has no business writing.
        zone(Path::new("/sys"), read_only()),
        zone(Path::new("/dev"), read_only()),
    ];
    zones.extend(
        WRITABLE_DEVICES
            .iter()
            .map(|d| zone(Path::new(d), normal())),
    );
    let read = protected
        .cgroup2
        .iter()
        .chain(&protected.bpffs)
        .chain(&protected.pin_dir)
        .chain(&protected.policy_dir)
        .chain(&protected.executables);
    zones.extend(read.map(|p| zone(p, read_only())));
    let none = protected.state_dir.iter().chain(&protected.socket);
    zones.extend(none.map(|p| zone(p, no_access())));
    zones
}

/// One Landlock rule: `access` beneath `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub path: PathBuf,
    pub access: BitFlags<AccessFs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
}

/// The file system as the planner sees it (a seam for the unit tests).
pub(crate) trait Tree {
    fn kind(&self, path: &Path) -> io::Result<Kind>;
    fn children(&self, dir: &Path) -> io::Result<Vec<(OsString, Kind)>>;
}

/// Rules that give every existing path the rights of its nearest zone.
///
/// Landlock rights are a union over a path's ancestors, so a zone with fewer
/// rights than the zone around it cannot sit beneath a rule granting more.
/// At each directory the planner grants what every zone beneath it shares;
/// where that is less than its own zone's rights, it lists the directory and
/// grants its zone's rights on each entry that leads to no zone (skipping
/// symlinks: access through one is decided at its target) and descends into
/// the entries that do. Entries created later in such a directory get only
/// what was granted above it: less, never more.
pub(crate) fn plan(zones: &[Zone], tree: &dyn Tree) -> io::Result<Vec<Rule>> {
    let mut by_path: BTreeMap<PathBuf, BitFlags<AccessFs>> = BTreeMap::new();
    for z in zones {
        by_path
            .entry(z.path.clone())
            .and_modify(|a| *a &= z.access)
            .or_insert(z.access);
    }
    let mut rules = Vec::new();
    if let Some(root_access) = by_path.get(Path::new("/")).copied() {
        visit(
            Path::new("/"),
            root_access,
            BitFlags::EMPTY,
            &by_path,
            tree,
            &mut rules,
        )?;
    }
    Ok(rules)
}

pub(super) fn visit(
    dir: &Path,
    zone: BitFlags<AccessFs>,
    granted: BitFlags<AccessFs>,
    zones: &BTreeMap<PathBuf, BitFlags<AccessFs>>,
    tree: &dyn Tree,
    rules: &mut Vec<Rule>,
) -> io::Result<()> {
    fn grant(rules: &mut Vec<Rule>, path: &Path, access: BitFlags<AccessFs>) {
        if !access.is_empty() {
            rules.push(Rule {
                path: path.to_path_buf(),
                access,
            });
        }
    }
    let kind = match tree.kind(dir) {
        Ok(k) => k,
        // A protected path that does not exist has nothing to protect yet;
        // if it appears later it gets what its parent has.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match kind {
        Kind::Symlink => return Ok(()),
        Kind::File => {
            grant(rules, dir, (zone & !granted) & file_rights());
            return Ok(());
        }
        Kind::Dir => {}
    }
    let beneath: Vec<(&PathBuf, BitFlags<AccessFs>)> = zones
        .iter()
        .filter(|(p, _)| p.as_path() != dir && p.starts_with(dir))
        .map(|(p, a)| (p, *a))
        .collect();
    let shared = beneath.iter().fold(zone, |acc, (_, a)| acc & *a);
    grant(rules, dir, shared & !granted);
    let granted = granted | shared;
    // The entry of `dir` that leads to each zone beneath it.
    let mut next: BTreeMap<OsString, ()> = BTreeMap::new();
    for (p, _) in &beneath {
        if let Some(first) = p
            .strip_prefix(dir)
            .ok()
            .and_then(|rest| rest.components().next())
        {
            next.insert(first.as_os_str().to_os_string(), ());
        }
    }
    let descend = |name: &OsString, rules: &mut Vec<Rule>| {
        let child = dir.join(name);
        let child_zone = zones.get(&child).copied().unwrap_or(zone);
        visit(&child, child_zone, granted, zones, tree, rules)
    };
    if granted.contains(zone) {
        // Everything here already has its zone's rights; only zones with
        // more rights beneath need rules.
        for name in next.keys() {
            descend(name, rules)?;
        }
        return Ok(());
    }
    let mut children = tree.children(dir)?;
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in children {
        if next.contains_key(&name) {
            descend(&name, rules)?;
            continue;
        }
        let access = zone & !granted;
        match kind {
            Kind::Symlink => {}
            Kind::File => grant(rules, &dir.join(&name), access & file_rights()),
            Kind::Dir => grant(rules, &dir.join(&name), access),
        }
    }
    Ok(())
}

/// The real file system, never following symlinks.
pub(super) struct Fs;

pub(super) fn kind_of(t: std::fs::FileType) -> Kind {
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    }
}

impl Tree for Fs {
    fn kind(&self, path: &Path) -> io::Result<Kind> {
        Ok(kind_of(std::fs::symlink_metadata(path)?.file_type()))
    }
    fn children(&self, dir: &Path) -> io::Result<Vec<(OsString, Kind)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = match entry.file_type() {
                Ok(t) => kind_of(t),
                // Gone since the listing: nothing to grant.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push((entry.file_name(), kind));
        }
        Ok(out)
    }
}

/// Opens a planned path without following any symlink on the way (the plan
/// has only canonical paths, so one found now was swapped in since): a
/// rule must never land on a symlink's target.
pub(super) fn open_beneath(path: &Path) -> io::Result<Option<OwnedFd>> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(libc::AT_FDCWD, path, how) {
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The running kernel's Landlock ABI version, or why there is none.
pub(super) fn landlock_abi() -> Result<i32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v > 0 {
        return Ok(v as i32);
    }
    Err(match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) => "not built into this kernel".into(),
        Some(libc::EOPNOTSUPP) => "built in but not enabled (add landlock to lsm=)".into(),
        other => format!("landlock_create_ruleset: errno {other:?}"),
    })
}
