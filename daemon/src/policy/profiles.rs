//! Shipped profiles (`include: [loader, ...]`): policies/profiles/*.yaml,
//! built into the binary, so the profile a policy includes is the one of
//! the Warden that loads it (its content is in the policy's snapshot).

/// (name, file shown in errors, text).
const PROFILES: &[(&str, &str, &str)] = &[
    (
        "loader",
        "policies/profiles/loader.yaml",
        include_str!("../../../policies/profiles/loader.yaml"),
    ),
    (
        "locale",
        "policies/profiles/locale.yaml",
        include_str!("../../../policies/profiles/locale.yaml"),
    ),
    (
        "python",
        "policies/profiles/python.yaml",
        include_str!("../../../policies/profiles/python.yaml"),
    ),
    (
        "git",
        "policies/profiles/git.yaml",
        include_str!("../../../policies/profiles/git.yaml"),
    ),
    (
        "rust-toolchain",
        "policies/profiles/rust-toolchain.yaml",
        include_str!("../../../policies/profiles/rust-toolchain.yaml"),
    ),
];

/// The file name and text of the profile `name`.
pub fn profile(name: &str) -> Option<(&'static str, &'static str)> {
    PROFILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, file, text)| (file, text))
}

/// Every shipped profile's name.
pub fn names() -> impl Iterator<Item = &'static str> {
    PROFILES.iter().map(|(n, _, _)| *n)
}
