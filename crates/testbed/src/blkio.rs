//! cgroup v1 block I/O accounting on the test machine's disk.

use std::path::Path;

use anyhow::{Context, Result};

/// Makes the kernel account cgroup v1 block I/O on the disk holding `dir`
/// (for containerd, its root: the native snapshotter keeps the containers'
/// root filesystems there). A no-op without a v1 blkio hierarchy.
///
/// Recent kernels (seen on 6.18) set blk-throttle up on a disk only when a
/// throttle rule is first written for it, and until then every cgroup v1
/// `blkio.throttle.*` file of that disk stays empty (`Total 0`), for the
/// root cgroup too. A rule far above any real rate (1 TiB/s), written on a
/// cgroup of our own that holds no task and is removed at once, sets it up
/// without limiting anything. cgroup v2 (`io.stat`) needs none of this.
pub fn activate_blkio_accounting(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let root = Path::new("/sys/fs/cgroup/blkio");
    if !root.is_dir() {
        return Ok(());
    }
    let dev = std::fs::metadata(dir)?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    // Rules take whole disks: a partition's parent folder is its disk.
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))?;
    let disk = if sys.join("partition").exists() {
        sys.parent()
            .context("partition without a disk")?
            .to_path_buf()
    } else {
        sys
    };
    let disk_dev = std::fs::read_to_string(disk.join("dev"))?
        .trim()
        .to_string();
    let cg = root.join(format!("testbed-blkio-{}", std::process::id()));
    std::fs::create_dir_all(&cg)?;
    let res = std::fs::write(
        cg.join("blkio.throttle.write_bps_device"),
        format!("{disk_dev} {}", 1u64 << 40),
    );
    std::fs::remove_dir(&cg)?;
    res.with_context(|| format!("throttle rule for {disk_dev}"))
}
