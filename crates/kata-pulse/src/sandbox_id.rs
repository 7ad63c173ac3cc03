//! Sandbox ids become file paths (`<root>/<id>/shim-monitor.sock`) and label
//! values, so every id, from a folder name or an HTTP query, is checked here
//! first. kata-monitor joined query ids into paths unchecked (`../` escapes).

/// Longest id accepted; CRI ids are 64 hex characters.
pub const MAX_LEN: usize = 128;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("sandbox id is empty")]
    Empty,
    #[error("sandbox id is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("sandbox id must start with a letter or digit and contain only letters, digits, '.', '_' and '-'")]
    BadCharacters,
}

/// Accepts containerd/CRI-O style ids: `[A-Za-z0-9][A-Za-z0-9._-]*`. The
/// first-character rule excludes `.`, `..` and hidden folders.
pub fn validate(id: &str) -> Result<&str, InvalidId> {
    let bytes = id.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(InvalidId::Empty);
    };
    if bytes.len() > MAX_LEN {
        return Err(InvalidId::TooLong);
    }
    if !first.is_ascii_alphanumeric()
        || !bytes
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err(InvalidId::BadCharacters);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_cri_ids() {
        let id = "6fcf0a90b01e90d8747177aa466c3462d02e02a878bc393649df83d4c314af0c";
        assert_eq!(validate(id), Ok(id));
        assert!(validate("pod-1.a_b").is_ok());
    }

    #[test]
    fn rejects_path_tricks() {
        for bad in [
            "..", ".", "../etc", "a/b", "/abs", ".hidden", "a\0b", "a b", "é",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(validate(""), Err(InvalidId::Empty));
        assert_eq!(validate(&"a".repeat(129)), Err(InvalidId::TooLong));
    }
}
