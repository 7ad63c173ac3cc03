//! Random identifiers shaped like the real ones, drawn from seeded generators so that a run
//! with `--seed` is reproducible.

use rand::Rng;

/// A 64-character lowercase hex ID, the shape of containerd container/sandbox IDs.
pub fn hex_id<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        s.push_str(&format!("{:016x}", rng.random::<u64>()));
    }
    s
}

/// A random (version 4) UUID in canonical form, as Kubernetes pod UIDs are.
pub fn uuid_v4<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `s` looks like a containerd ID (64 lowercase hex characters).
pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn shapes() {
        let mut r = StdRng::seed_from_u64(7);
        let id = hex_id(&mut r);
        assert!(is_hex_id(&id), "{id}");
        let u = uuid_v4(&mut r);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        let mut r2 = StdRng::seed_from_u64(7);
        assert_eq!(hex_id(&mut r2), id, "deterministic with a seed");
    }
}
