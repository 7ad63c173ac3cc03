//! OCI images built locally, since test machines reach no image registry.
//!
//! The pause image is a static C program packed as an OCI image layout tar
//! that `ctr images import` accepts. The packing is written here (no Docker,
//! no buildah) and is deterministic, so the cached tar only changes when the
//! source or this code changes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::util::{require_program, target_dir};

/// Name under which the pause image is imported. Fully qualified, because
/// the CRI plugin normalises short names to `docker.io/...` when it looks
/// images up; `localhost/...` is left alone.
pub const PAUSE_IMAGE: &str = "localhost/kata-pulse-testbed/pause:1";

const PAUSE_SOURCE: &str = include_str!("../pause/pause.c");

/// Bump when the packing below changes, to invalidate cached tars.
const FORMAT_VERSION: &str = "1";

/// A file to put into an image layer.
pub struct LayerFile<'a> {
    /// Path inside the image, without a leading `/`.
    pub path: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn tar_header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h.set_cksum();
    Ok(h)
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> Result<()> {
    let h = tar_header(path, data.len() as u64, mode, tar::EntryType::Regular)?;
    b.append(&h, data)?;
    Ok(())
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let h = tar_header(path, 0, 0o755, tar::EntryType::Directory)?;
    b.append(&h, std::io::empty())?;
    Ok(())
}

/// Packs `files` as a one-layer OCI image layout tar (the format of
/// `ctr images import` and `oci-archive:`), named `ref_name` in `index.json`.
pub fn oci_image_tar(
    ref_name: &str,
    files: &[LayerFile<'_>],
    entrypoint: &[&str],
) -> Result<Vec<u8>> {
    // The layer: a plain tar of the files, gzip-compressed. The config names
    // the uncompressed digest (diff_id), the manifest the compressed one.
    let mut layer = tar::Builder::new(Vec::new());
    for f in files {
        append_file(&mut layer, f.path, f.contents, f.mode)?;
    }
    let layer = layer.into_inner()?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer)?;
    let layer_gz = gz.finish()?;

    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Entrypoint": entrypoint, "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", sha256_hex(&layer_gz)),
            "size": layer_gz.len(),
        }],
    }))?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&manifest)),
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": ref_name },
        }],
    }))?;

    let mut out = tar::Builder::new(Vec::new());
    append_file(
        &mut out,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    append_file(&mut out, "index.json", &index, 0o644)?;
    append_dir(&mut out, "blobs/")?;
    append_dir(&mut out, "blobs/sha256/")?;
    for blob in [&config, &manifest, &layer_gz] {
        let path = format!("blobs/sha256/{}", sha256_hex(blob));
        append_file(&mut out, &path, blob, 0o644)?;
    }
    Ok(out.into_inner()?)
}

/// Compiles the pause program statically into `out`.
fn compile_pause(out: &Path) -> Result<()> {
    let gcc = require_program("gcc", "gcc libc6-dev")?;
    let dir = tempfile::Builder::new().prefix("kp-pause-").tempdir()?;
    let src = dir.path().join("pause.c");
    std::fs::write(&src, PAUSE_SOURCE)?;
    let output = Command::new(gcc)
        .args(["-static", "-Os", "-s", "-Wall", "-o"])
        .arg(out)
        .arg(&src)
        .output()
        .context("running gcc")?;
    if !output.status.success() {
        bail!(
            "gcc -static failed ({}); a static libc (Debian: libc6-dev) is needed:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Builds the pause image tar into `dir` unless an identical one is there.
pub fn build_pause_image(dir: &Path) -> Result<PathBuf> {
    let key = sha256_hex(
        format!(
            "{FORMAT_VERSION}\n{PAUSE_IMAGE}\n{}\n{PAUSE_SOURCE}",
            oci_arch()
        )
        .as_bytes(),
    );
    let path = dir.join(format!("pause-{}.tar", &key[..16]));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Build under unique names and rename into place, so test processes
    // running in parallel never see a half-written tar.
    let tmp = tempfile::Builder::new().prefix(".pause-").tempdir_in(dir)?;
    let bin = tmp.path().join("pause");
    compile_pause(&bin)?;
    let contents = std::fs::read(&bin)?;
    let tar = oci_image_tar(
        PAUSE_IMAGE,
        &[LayerFile {
            path: "pause",
            contents: &contents,
            mode: 0o755,
        }],
        &["/pause"],
    )?;
    let staged = tmp.path().join("image.tar");
    std::fs::write(&staged, tar)?;
    std::fs::rename(&staged, &path)?;
    Ok(path)
}

/// The pause image tar, built once per process and cached under the cargo
/// target dir (`<target>/testbed/`) across runs.
pub fn pause_image_tar() -> Result<PathBuf> {
    static CACHED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CACHED
        .get_or_init(|| {
            let dir = target_dir()
                .map(|t| t.join("testbed"))
                .unwrap_or_else(|| std::env::temp_dir().join("kata-pulse-testbed"));
            build_pause_image(&dir).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("building the pause image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    fn entries(tar_bytes: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = HashMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, data);
        }
        out
    }

    fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let data = &files[&format!("blobs/sha256/{hex}")];
        assert_eq!(sha256_hex(data), hex, "blob content matches its digest");
        data
    }

    #[test]
    fn image_layout_is_consistent_and_deterministic() {
        let files = [LayerFile {
            path: "hello",
            contents: b"hi",
            mode: 0o755,
        }];
        let a = oci_image_tar("localhost/x:1", &files, &["/hello"]).unwrap();
        let b = oci_image_tar("localhost/x:1", &files, &["/hello"]).unwrap();
        assert_eq!(a, b);

        let files = entries(&a);
        assert!(files.contains_key("oci-layout"));
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"],
            "localhost/x:1"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(blob(&files, desc["digest"].as_str().unwrap())).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(blob(&files, manifest["config"]["digest"].as_str().unwrap()))
                .unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/hello");
        let layer_gz = blob(&files, manifest["layers"][0]["digest"].as_str().unwrap());
        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(layer_gz)
            .read_to_end(&mut layer)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&layer))
        );
        assert_eq!(entries(&layer)["hello"], b"hi");
    }

    #[test]
    fn pause_sleeps_until_sigterm_and_exits_0() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("pause");
        compile_pause(&bin).unwrap();
        let mut child = Command::new(&bin).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "pause exited early");
        crate::util::signal(child.id(), libc::SIGTERM);
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn builds_the_pause_image() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::Instant::now();
        let path = build_pause_image(dir.path()).unwrap();
        eprintln!("pause image built in {:?}", t.elapsed());
        let files = entries(&std::fs::read(&path).unwrap());
        assert!(files.contains_key("index.json"));
        // A second call reuses the cached tar.
        assert_eq!(build_pause_image(dir.path()).unwrap(), path);
    }
}
