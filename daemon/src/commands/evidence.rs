//! `warden evidence export|verify`: the bundle an auditor checks elsewhere.

use std::path::Path;

use super::Result;
use crate::{
    clock,
    config::Paths,
    export::{self, BundleReport, Manifest, Window},
};

/// `warden evidence export --out DIR [--from T] [--to T] [--agent A]
/// [--full-chain]`; times are RFC 3339 UTC or unix seconds.
pub fn evidence_export(
    paths: &Paths,
    out: &Path,
    from: Option<&str>,
    to: Option<&str>,
    agent: Option<String>,
    full_chain: bool,
) -> Result<Manifest> {
    let window = Window {
        from_ns: from.map(clock::parse_time).transpose()?,
        to_ns: to.map(clock::parse_time).transpose()?,
        agent,
    };
    let span = if full_chain {
        export::bundle::ChainSpan::Full
    } else {
        export::bundle::ChainSpan::Window
    };
    Ok(export::bundle::export_span(paths, out, &window, span)?)
}

/// `warden evidence archive --before T --out DIR`.
pub fn evidence_archive(
    paths: &Paths,
    before: &str,
    out: &Path,
) -> Result<export::archive::Archived> {
    let before_ns = clock::parse_time(before)?;
    Ok(export::archive::archive(paths, before_ns, out)?)
}

/// `warden evidence verify DIR [--key HEX]`: a bundle's problems are in the
/// report, not an error; errors are only for a bundle that cannot be read.
pub fn evidence_verify(dir: &Path, key: Option<&str>) -> Result<BundleReport> {
    Ok(export::verify(dir, key)?)
}
