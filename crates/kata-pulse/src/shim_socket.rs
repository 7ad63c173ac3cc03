//! Connecting to a sandbox's `shim-monitor.sock` and nothing else.
//!
//! The agent runs as root, and whoever can write in a sandbox root can put
//! anything at `<root>/<id>/shim-monitor.sock`: a symlink to the CRI's
//! socket, a hard link to it, a FIFO. So the name is not what is trusted:
//!
//! - the sandbox folder is opened `O_PATH | O_NOFOLLOW | O_DIRECTORY` (a
//!   symlinked folder fails), the socket `O_PATH | O_NOFOLLOW` inside that
//!   opened folder (reached as `/proc/self/fd/<folder>/shim-monitor.sock`);
//! - the socket's own descriptor is checked by [`refusal`]: a socket, not a
//!   symlink, with exactly one link (a second link means the inode is also
//!   some other socket, such as the CRI's);
//! - the connect goes to `/proc/self/fd/<socket>`, which is the very inode
//!   checked whatever was renamed or swapped in between. That short path
//!   also lifts the 108-byte `sun_path` limit: a 128-character id under a
//!   long root is reachable.
//!
//! What is left: the root path's own components are followed (the operator
//! chose them), and a hard link made after the check does not change which
//! inode is connected to. It needs `/proc` (every container has it).

use std::fs::{File, Metadata, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::shim_client::ShimError;

/// Why a file found at a shim socket's name is not connected to; `None`
/// for a socket that may be. Labels of `kata_pulse_discovery_refused_total`.
pub fn refusal(m: &Metadata) -> Option<&'static str> {
    let kind = m.file_type();
    if kind.is_symlink() {
        Some("symlink")
    } else if !kind.is_socket() {
        Some("not_socket")
    } else if m.nlink() > 1 {
        Some("hard_link")
    } else {
        None
    }
}

/// A descriptor of `path` itself (never of what a symlink points to).
fn open_path(path: &Path, directory: bool) -> std::io::Result<File> {
    let mut flags = libc::O_PATH | libc::O_NOFOLLOW;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Connects to the shim socket `socket` (`<sandbox folder>/<name>`) after
/// the checks above.
pub async fn connect(socket: &Path) -> Result<UnixStream, ShimError> {
    let connect_err = |source| ShimError::Connect {
        socket: socket.display().to_string(),
        source,
    };
    let refused = |why| ShimError::Refused {
        socket: socket.display().to_string(),
        why,
    };
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return Err(connect_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a path inside a sandbox folder",
        )));
    };
    let folder = open_path(dir, true).map_err(|e| match e.raw_os_error() {
        // O_NOFOLLOW | O_DIRECTORY on a symlink.
        Some(libc::ENOTDIR) | Some(libc::ELOOP) => refused("the sandbox folder is not a folder"),
        _ => connect_err(e),
    })?;
    let file = open_path(&fd_path(&folder).join(name), false).map_err(connect_err)?;
    let meta = file.metadata().map_err(connect_err)?;
    if let Some(why) = refusal(&meta) {
        return Err(refused(why));
    }
    UnixStream::connect(fd_path(&file))
        .await
        .map_err(connect_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A listener bound inside `dir` through a short `/proc` path, so the
    /// folder's own path may be longer than `sun_path` allows.
    fn bind_in(dir: &Path, name: &str) -> UnixListener {
        let folder = open_path(dir, true).unwrap();
        UnixListener::bind(fd_path(&folder).join(name)).unwrap()
    }

    async fn accepted(listener: &UnixListener, socket: &Path) -> bool {
        listener.set_nonblocking(true).unwrap();
        let stream = connect(socket).await;
        let accepted = listener.accept().is_ok();
        assert_eq!(stream.is_ok(), accepted, "{stream:?}");
        accepted
    }

    #[tokio::test]
    async fn a_plain_socket_is_connected_to_even_past_the_unix_path_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let id = "a".repeat(crate::sandbox_id::MAX_LEN);
        let dir = tmp.path().join(&id);
        std::fs::create_dir(&dir).unwrap();
        let listener = bind_in(&dir, "shim-monitor.sock");
        let socket = dir.join("shim-monitor.sock");
        assert!(socket.as_os_str().len() > 108, "{}", socket.display());
        assert!(accepted(&listener, &socket).await);
    }

    #[tokio::test]
    async fn links_and_non_sockets_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        // Some other socket on the node (the CRI's, say).
        let other_dir = tmp.path().join("cri");
        std::fs::create_dir(&other_dir).unwrap();
        let other = bind_in(&other_dir, "cri.sock");
        let target = other_dir.join("cri.sock");

        let sandbox = |name: &str| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir.join("shim-monitor.sock")
        };
        let symlinked = sandbox("symlink");
        std::os::unix::fs::symlink(&target, &symlinked).unwrap();
        let hard = sandbox("hardlink");
        std::fs::hard_link(&target, &hard).unwrap();
        let fifo = sandbox("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let file = sandbox("file");
        std::fs::write(&file, b"x").unwrap();
        // A symlinked sandbox folder, with a good socket in its target.
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let _real_listener = bind_in(&real, "shim-monitor.sock");
        std::os::unix::fs::symlink(&real, tmp.path().join("linked-folder")).unwrap();
        let via_folder = tmp.path().join("linked-folder/shim-monitor.sock");

        for (socket, why) in [
            (&symlinked, "symlink"),
            (&hard, "hard_link"),
            (&fifo, "not_socket"),
            (&file, "not_socket"),
            (&via_folder, "the sandbox folder is not a folder"),
        ] {
            match connect(socket).await {
                Err(ShimError::Refused { why: got, .. }) => assert_eq!(got, why, "{socket:?}"),
                other => panic!("{}: {other:?}", socket.display()),
            }
        }
        // Nothing reached the other socket.
        other.set_nonblocking(true).unwrap();
        assert!(other.accept().is_err());
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = connect(&tmp.path().join("none/shim-monitor.sock"))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "connect", "{err}");
        let err = connect(&tmp.path().join("shim-monitor.sock"))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "connect", "{err}");
    }
}
