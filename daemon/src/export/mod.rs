//! Export: evidence bundles an auditor verifies on another machine, the
//! control map, and the HTML report.

pub mod archive;
pub mod bundle;
pub mod control_map;
pub mod detections;
pub mod ocsf;
pub mod report;
pub mod sigma;
pub mod summary;

pub use bundle::{export, verify, BundleError, BundleReport, Manifest, Window};
