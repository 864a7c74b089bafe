//! The detection rules Warden ships (`policies/detections/`, Sigma over the
//! OCSF stream), built into the binary so an evidence bundle carries the
//! exact rules in force beside the alerts they would raise.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// (file name, text) of every shipped rule.
pub const SHIPPED: [(&str, &str); 4] = [
    (
        "warden-blocked-egress-admin-ports.yml",
        include_str!("../../../policies/detections/warden-blocked-egress-admin-ports.yml"),
    ),
    (
        "warden-credential-file-access.yml",
        include_str!("../../../policies/detections/warden-credential-file-access.yml"),
    ),
    (
        "warden-new-shell-or-netcat-exec.yml",
        include_str!("../../../policies/detections/warden-new-shell-or-netcat-exec.yml"),
    ),
    (
        "warden-sentinel-rate-rise.yml",
        include_str!("../../../policies/detections/warden-sentinel-rate-rise.yml"),
    ),
];

/// One rule as the bundle lists it (`detections.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DetectionRule {
    pub file: String,
    /// The rule's `id` and `title`, as the rule file says.
    pub id: String,
    pub title: String,
    pub sha256: String,
    /// The Sigma YAML itself.
    pub sigma: String,
}

/// Every shipped rule, with its id, title and hash.
pub fn shipped() -> Vec<DetectionRule> {
    SHIPPED
        .iter()
        .map(|(file, text)| {
            let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
            let field = |k: &str| {
                doc.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            DetectionRule {
                file: (*file).to_string(),
                id: field("id"),
                title: field("title"),
                sha256: hex::encode(Sha256::digest(text.as_bytes())),
                sigma: (*text).to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_in_the_directory_is_built_in_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/detections");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let built: Vec<String> = SHIPPED.iter().map(|(f, _)| (*f).to_string()).collect();
        assert_eq!(built, on_disk, "add the new rule to SHIPPED");
        for r in shipped() {
            assert!(!r.title.is_empty() && !r.id.is_empty(), "{}", r.file);
            assert!(
                super::super::sigma::Rule::parse(&r.file, &r.sigma).is_ok(),
                "{}",
                r.file
            );
        }
    }
}
