//! The join service: the validated inputs of joins and the state they share (ticket
//! book, bundle cache), assembled once at start-up.

use std::path::Path;

use super::cache::BundleCache;
use super::entry::Entry;
use super::inputs::{self, Artifact, License, Roles};
use super::seed::SeedSigner;
use super::ticket::Tickets;
use crate::kube;

/// Everything `create-join-command` and `join-bundle` need besides the request.
pub struct JoinService {
    pub roles: Roles,
    pub license: License,
    pub artifacts: Vec<Artifact>,
    pub cache: BundleCache,
    pub tickets: Tickets,
    /// Signs each join's cluster seed with the serving TLS key.
    pub seed_signer: SeedSigner,
}

impl JoinService {
    /// Reads and checks `--ec-config`, `--license` and `--artifacts-dir`; the error names
    /// the flag and the problem.
    pub fn load(
        ec_config: &Path,
        license: &Path,
        artifacts_dir: &Path,
        data_dir: &Path,
        kube: kube::Client,
        namespace: &str,
        seed_signer: SeedSigner,
    ) -> Result<JoinService, String> {
        let roles = inputs::load_roles(ec_config)?;
        let license = inputs::load_license(license)?;
        let artifacts = inputs::scan_artifacts(artifacts_dir, &license.app_slug)?;
        let cache_dir = data_dir.join("bundle-cache");
        let cache = BundleCache::new(cache_dir.clone())
            .map_err(|e| format!("--data-dir: cannot create {}: {e}", cache_dir.display()))?;
        Ok(JoinService {
            roles,
            license,
            artifacts,
            cache,
            tickets: Tickets::new(kube, namespace),
            seed_signer,
        })
    }

    /// The artifacts as bundle entries, in name order, each bound to the file the
    /// start-up scan saw.
    pub fn artifact_entries(&self) -> Vec<Entry> {
        self.artifacts
            .iter()
            .map(|a| Entry::scanned_file(a.name.clone(), a.path.clone(), a.mode, a.scanned))
            .collect()
    }

    /// Checks that every artifact is still the file scanned at start-up: there, a
    /// regular file reached without a symlink, same device, inode and size. The error
    /// names the first that is not (paths are the operator's, no secret).
    pub fn check_artifacts(&self) -> Result<(), String> {
        for a in &self.artifacts {
            super::entry::stat_regular(&a.path, Some(&a.scanned)).map_err(|e| {
                e.to_string()
                    .trim_start_matches("join bundle: ")
                    .to_string()
            })?;
        }
        Ok(())
    }

    /// Compresses and hashes every artifact into the cache, then drops stale cache
    /// files. Run from a background thread at start-up so the first join is served
    /// from cache; it ends by itself, or at its next step once `stop` is set.
    pub fn warm_cache(&self, stop: &std::sync::atomic::AtomicBool) {
        let entries = self.artifact_entries();
        let started = std::time::Instant::now();
        match self
            .cache
            .prepare(&entries, Some(stop))
            .and_then(|_| self.cache.prune(&entries))
        {
            Ok(pruned) => crate::log::info(
                "bundle cache ready",
                &[
                    ("artifacts", entries.len().into()),
                    ("pruned", pruned.into()),
                    ("seconds", started.elapsed().as_secs_f64().into()),
                ],
            ),
            Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => {
                crate::log::info("bundle cache warm-up stopped (shutting down)", &[])
            }
            Err(e) => crate::log::warn(
                "bundle cache warm-up failed; bundles will build it as they go",
                &[("error", e.to_string().into())],
            ),
        }
    }
}
