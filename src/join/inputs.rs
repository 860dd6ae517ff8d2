//! The inputs of a join, read and validated at start-up: the Embedded Cluster `Config`
//! (which roles exist and the labels each gives), the KOTS `License` (the app slug and
//! whether multi-node is allowed), and the artifacts directory.
//!
//! Everything here ends up in shell commands, file names or node labels, so every value
//! is checked against a grammar that is safe in all three; a bad file stops start-up
//! with a message that names the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::labels;

/// One role a node can be joined with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDef {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The roles of the Embedded Cluster config: the controller role first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub controller: RoleDef,
    pub custom: Vec<RoleDef>,
}

impl Roles {
    /// The role with this name.
    pub fn get(&self, name: &str) -> Option<&RoleDef> {
        std::iter::once(&self.controller)
            .chain(&self.custom)
            .find(|r| r.name == name)
    }

    /// Every role name, the controller's first.
    pub fn names(&self) -> Vec<&str> {
        std::iter::once(&self.controller)
            .chain(&self.custom)
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// What the license says that joins depend on, plus its bytes for the bundle.
#[derive(Debug, Clone)]
pub struct License {
    pub app_slug: String,
    pub license_id: String,
    pub multi_node: bool,
    /// The file as given, copied into every bundle as `license.yaml`.
    pub raw: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document<S> {
    api_version: Option<String>,
    kind: Option<String>,
    spec: Option<S>,
}

#[derive(Deserialize, Default)]
struct ConfigSpec {
    #[serde(default)]
    roles: Option<RolesSpec>,
}

#[derive(Deserialize, Default)]
struct RolesSpec {
    controller: Option<RoleSpec>,
    #[serde(default)]
    custom: Vec<RoleSpec>,
}

#[derive(Deserialize, Default)]
struct RoleSpec {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenseSpec {
    app_slug: Option<String>,
    #[serde(rename = "licenseID")]
    license_id: Option<String>,
    #[serde(default)]
    is_embedded_cluster_multi_node_enabled: bool,
}

/// Reads the roles from an Embedded Cluster `Config` file.
pub fn load_roles(path: &Path) -> Result<Roles, String> {
    let text = read(path, "--ec-config")?;
    parse_roles(&text).map_err(|e| format!("--ec-config {}: {e}", path.display()))
}

/// Parses the roles of an Embedded Cluster `Config` document.
pub fn parse_roles(text: &str) -> Result<Roles, String> {
    let doc: Document<ConfigSpec> =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not a valid Config YAML: {e}"))?;
    expect_kind(&doc, "embeddedcluster.replicated.com/", "Config")?;
    let roles = doc.spec.unwrap_or_default().roles.unwrap_or_default();
    let controller = roles.controller.unwrap_or_default();
    let controller = role_def(
        controller.name.unwrap_or_else(|| "controller".into()),
        controller.labels,
        "spec.roles.controller",
    )?;
    let mut custom = Vec::new();
    for (i, r) in roles.custom.into_iter().enumerate() {
        let at = format!("spec.roles.custom[{i}]");
        let name = r.name.ok_or_else(|| format!("{at}.name is missing"))?;
        custom.push(role_def(name, r.labels, &at)?);
    }
    let all = Roles { controller, custom };
    let names = all.names();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(format!("role {n:?} is defined twice"));
        }
    }
    Ok(all)
}

fn role_def(name: String, labels: BTreeMap<String, String>, at: &str) -> Result<RoleDef, String> {
    labels::check_name(&name).map_err(|p| format!("{at}.name {name:?} is invalid: {p}"))?;
    for (k, v) in &labels {
        labels::check_key(k).map_err(|p| format!("{at}.labels key {k:?} is invalid: {p}"))?;
        labels::check_value(v)
            .map_err(|p| format!("{at}.labels[{k:?}] value {v:?} is invalid: {p}"))?;
    }
    Ok(RoleDef { name, labels })
}

/// Reads a KOTS `License` file.
pub fn load_license(path: &Path) -> Result<License, String> {
    let text = read(path, "--license")?;
    parse_license(&text).map_err(|e| format!("--license {}: {e}", path.display()))
}

/// Parses a KOTS `License` document.
pub fn parse_license(text: &str) -> Result<License, String> {
    let doc: Document<LicenseSpec> =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not a valid License YAML: {e}"))?;
    expect_kind(&doc, "kots.io/", "License")?;
    let spec = doc.spec.ok_or("spec is missing")?;
    let app_slug = spec.app_slug.ok_or("spec.appSlug is missing")?;
    check_slug(&app_slug)?;
    Ok(License {
        app_slug,
        license_id: spec.license_id.unwrap_or_default(),
        multi_node: spec.is_embedded_cluster_multi_node_enabled,
        raw: text.as_bytes().to_vec(),
    })
}

/// The app slug names a file and a command: lowercase letters, digits and '-' only.
fn check_slug(slug: &str) -> Result<(), String> {
    let b = slug.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "spec.appSlug {slug:?} is invalid: use lowercase letters, digits and '-'"
        ))
    }
}

fn expect_kind<S>(doc: &Document<S>, group: &str, kind: &str) -> Result<(), String> {
    match (&doc.api_version, &doc.kind) {
        (Some(v), Some(k)) if v.starts_with(group) && k == kind => Ok(()),
        (v, k) => Err(format!(
            "expected apiVersion {group}... and kind {kind}, found apiVersion {} and kind {}",
            v.as_deref().unwrap_or("(none)"),
            k.as_deref().unwrap_or("(none)")
        )),
    }
}

/// Inputs are small YAML files; anything larger is a wrong path.
fn read(path: &Path, flag: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if meta.len() > 4 << 20 {
        return Err(format!(
            "{flag} {}: the file is {} bytes; a YAML document of at most 4 MiB is expected",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// One file of the artifacts directory, to be shipped in every bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Name inside the bundle (relative to the artifacts directory).
    pub name: String,
    pub path: PathBuf,
    pub mode: u32,
    /// Device, inode and size when scanned: bundles refuse any other file at `path`.
    pub scanned: super::entry::Identity,
}

/// Lists the artifacts directory: the application binary (named after the app slug,
/// required, shipped 0755) and every other regular file (0644 unless executable),
/// sorted by name. Subdirectories are walked; symlinks are refused.
pub fn scan_artifacts(dir: &Path, app_slug: &str) -> Result<Vec<Artifact>, String> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let Some(app) = out.iter_mut().find(|a| a.name == app_slug) else {
        return Err(format!(
            "--artifacts-dir {}: the application binary {app_slug:?} (named after the \
             license's appSlug) is missing",
            dir.display()
        ));
    };
    app.mode = 0o755;
    let reserved = [
        "license.yaml",
        "cluster-seed.json",
        "k0s-join-token",
        "SHA256SUMS",
    ];
    if let Some(a) = out.iter().find(|a| reserved.contains(&a.name.as_str())) {
        return Err(format!(
            "--artifacts-dir {}: {:?} is a name joinery writes into every bundle; rename it",
            dir.display(),
            a.name
        ));
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Artifact>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("--artifacts-dir {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("--artifacts-dir {}: {e}", dir.display()))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("--artifacts-dir {}: {e}", path.display()))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            let name = path
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .ok_or_else(|| {
                    format!(
                        "--artifacts-dir: {} has a name that is not UTF-8",
                        path.display()
                    )
                })?
                .to_string();
            // Checked now, so a name no bundle could carry stops start-up rather than
            // every download.
            super::entry::validate_name(&name).map_err(|e| {
                format!(
                    "--artifacts-dir: {}: {}; rename the file",
                    path.display(),
                    e.to_string().trim_start_matches("join bundle: ")
                )
            })?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            out.push(Artifact {
                name,
                path,
                mode,
                scanned: super::entry::Identity::of(&meta),
            });
        } else {
            return Err(format!(
                "--artifacts-dir: {} is not a regular file or directory (symlinks are not followed)",
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
apiVersion: embeddedcluster.replicated.com/v1beta1
kind: Config
spec:
  roles:
    controller:
      name: management
      labels:
        management: \"true\"
    custom:
    - name: app
      labels:
        app: \"true\"
    - name: gpu
";

    #[test]
    fn roles_parse() {
        let r = parse_roles(CONFIG).unwrap();
        assert_eq!(r.names(), ["management", "app", "gpu"]);
        assert_eq!(r.get("app").unwrap().labels["app"], "true");
        assert!(r.get("nope").is_none());
        let minimal =
            "apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec: {}\n";
        assert_eq!(parse_roles(minimal).unwrap().names(), ["controller"]);
    }

    #[test]
    fn bad_configs_are_named() {
        for (text, needle) in [
            ("kind: License\napiVersion: kots.io/v1beta1\n", "kind Config"),
            ("apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n    custom:\n    - labels: {}\n", "custom[0].name"),
            ("apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n    custom:\n    - name: \"a;b\"\n", "a;b"),
            ("apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n    custom:\n    - name: controller\n", "twice"),
            ("apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n    controller:\n      labels:\n        \"bad key\": x\n", "bad key"),
            ("[", "YAML"),
        ] {
            let err = parse_roles(text).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn licenses() {
        let l = parse_license(
            "apiVersion: kots.io/v1beta1\nkind: License\nspec:\n  appSlug: my-app\n  licenseID: abc\n  isEmbeddedClusterMultiNodeEnabled: true\n",
        )
        .unwrap();
        assert_eq!(l.app_slug, "my-app");
        assert!(l.multi_node);
        let single =
            parse_license("apiVersion: kots.io/v1beta1\nkind: License\nspec:\n  appSlug: x\n")
                .unwrap();
        assert!(!single.multi_node);
        for (text, needle) in [
            (
                "apiVersion: kots.io/v1beta1\nkind: License\nspec:\n  appSlug: \"$(reboot)\"\n",
                "appSlug",
            ),
            (
                "apiVersion: kots.io/v1beta1\nkind: License\nspec: {}\n",
                "appSlug is missing",
            ),
            ("apiVersion: v1\nkind: Secret\n", "kind License"),
        ] {
            let err = parse_license(text).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn artifacts_scan() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("my-app"), b"bin").unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/air.tar"), b"x").unwrap();
        let a = scan_artifacts(dir.path(), "my-app").unwrap();
        let names: Vec<&str> = a.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["images/air.tar", "my-app"]);
        assert_eq!(a[1].mode, 0o755);
        assert!(scan_artifacts(dir.path(), "other")
            .unwrap_err()
            .contains("\"other\""));
        std::fs::write(dir.path().join("SHA256SUMS"), b"x").unwrap();
        assert!(scan_artifacts(dir.path(), "my-app")
            .unwrap_err()
            .contains("SHA256SUMS"));
    }
}
