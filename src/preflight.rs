//! The files a `serve` configuration names, read once before anything starts.
//!
//! A wrong kubeconfig, TLS pair, password hash, signing key or join input is the
//! operator's to fix: restarting cannot help, so it must be a configuration error (exit
//! 2, which the unit's `RestartPreventExitStatus=2` honours) and never a restart loop.
//! `joinery serve` runs these checks before it starts, and `joinery install` runs them
//! (under `--root`) before it writes anything. The daemon loads the files again as it
//! starts; a file that changes in between is a start-up failure (exit 1).

use std::path::Path;

use crate::auth::store::{PasswordHashes, SigningKeys};
use crate::config::{Config, ConfigError, KubeSource};
use crate::fsutil::under;
use crate::http::tls;
use crate::join::inputs;

/// Checks every file `cfg` names, as seen under `root`. The kubeconfig is parsed only
/// when `kubeconfig` is true (install only checks that an explicit one exists: k0s may
/// write the default one later).
pub fn check(cfg: &Config, root: &Path, kubeconfig: bool) -> Result<(), ConfigError> {
    // Under `/` a path is the operator's as typed: a relative one stays relative to the
    // working directory, as the daemon will read it.
    let at = |p: &Path| {
        if root == Path::new("/") {
            p.to_path_buf()
        } else {
            under(root, p)
        }
    };
    let fail = |e: String| ConfigError(e);
    if let (true, KubeSource::Kubeconfig(p)) = (kubeconfig, &cfg.kube) {
        crate::daemon::kube_client(&KubeSource::Kubeconfig(at(p)), cfg.kube_timeout)
            .map_err(|e| ConfigError(format!("--kubeconfig {}: {e}", p.display())))?;
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        tls::load(&at(cert), &at(key)).map_err(|e| fail(e.to_string()))?;
    }
    if let Some(p) = &cfg.password_hash_file {
        PasswordHashes::from_file(&at(p)).map_err(fail)?;
    }
    if let Some(p) = &cfg.signing_key_file {
        SigningKeys::from_file(&at(p)).map_err(fail)?;
    }
    if let Some(j) = &cfg.join {
        inputs::load_roles(&at(&j.ec_config)).map_err(fail)?;
        let license = inputs::load_license(&at(&j.license)).map_err(fail)?;
        inputs::scan_artifacts(&at(&j.artifacts_dir), &license.app_slug).map_err(fail)?;
    }
    Ok(())
}
