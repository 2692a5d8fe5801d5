//! The generated API key: with auth on and no key configured anywhere, the service makes
//! one (256 bits from the OS CSPRNG) and keeps it in a file beside its data, so a first run
//! is usable and never open.
//!
//! A key file that exists is trusted only if it is a regular file (not a symlink, opened
//! with `O_NOFOLLOW`), owned by the user the service runs as, and neither readable nor
//! writable by group or others: anyone who could read or plant it could use the API.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Key files are small; a larger one is not ours.
const MAX_LEN: u64 = 4096;

/// Why the key file cannot be used. The message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {why}")]
    Unsafe { path: String, why: String },
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("{path}: the OS random source failed: {error}")]
    Random { path: String, error: getrandom::Error },
}

/// What [`load_or_create`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    Existing,
    Generated,
}

/// 256 bits from the OS CSPRNG, as 64 hex digits.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The rule for an existing key file, on its metadata: a regular file, owned by `euid`,
/// no permission bits for group or others.
pub fn vet(is_file: bool, uid: u32, mode: u32, euid: u32) -> Result<(), String> {
    if !is_file {
        return Err("is not a regular file; remove it (a new key is generated) or put the key in the config".into());
    }
    if uid != euid {
        return Err(format!(
            "is owned by uid {uid}, not by the user the service runs as (uid {euid}); a key file another user \
             controls is never used: chown it or remove it"
        ));
    }
    if mode & 0o077 != 0 {
        return Err(format!(
            "has mode {:04o}: group or others may read or change it; the key may have leaked: \
             remove the file to generate a new key, or `chmod 600` it if you are sure it did not",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Reads the key at `path`, or generates one and writes it there (mode 0600, created
/// without replacing anything that appeared meanwhile).
pub fn load_or_create(path: &Path) -> Result<(String, Origin), KeyFileError> {
    let shown = || path.display().to_string();
    let io_err = |error: io::Error| KeyFileError::Io { path: shown(), error };
    let unsafe_file = |why: String| KeyFileError::Unsafe { path: shown(), why };
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
        Ok(file) => {
            let meta = file.metadata().map_err(io_err)?;
            vet(meta.file_type().is_file(), meta.uid(), meta.mode(), rustix::process::geteuid().as_raw())
                .map_err(unsafe_file)?;
            let mut text = String::new();
            file.take(MAX_LEN).read_to_string(&mut text).map_err(io_err)?;
            let key = text.trim();
            crate::config::check_api_key(key).map_err(|why| unsafe_file(why.to_string()))?;
            Ok((key.to_string(), Origin::Existing))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Err(unsafe_file("is a symbolic link; a key file must be a regular file: remove the link".into()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(io_err)?;
            let key = generate().map_err(|error| KeyFileError::Random { path: shown(), error })?;
            // tempfile creates the file with mode 0600.
            let mut f = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
            f.write_all(key.as_bytes()).map_err(io_err)?;
            f.as_file().sync_all().map_err(io_err)?;
            f.persist_noclobber(path).map_err(|e| io_err(e.error))?;
            Ok((key, Origin::Generated))
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_key_is_256_random_bits_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api_key");
        let (key, origin) = load_or_create(&path).unwrap();
        assert_eq!(origin, Origin::Generated);
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), (key, Origin::Existing));
        // Fresh keys differ (the old generator drew 128 bits from a non-cryptographic PRNG).
        let keys: std::collections::HashSet<String> = (0..64).map(|_| generate().unwrap()).collect();
        assert_eq!(keys.len(), 64);
    }

    #[test]
    fn a_key_file_others_can_read_or_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api_key");
        std::fs::write(&path, "0123456789abcdef0123").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load_or_create(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("has mode 0{mode:o}")) && e.contains(&path.display().to_string()), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create(&path).unwrap().0, "0123456789abcdef0123");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(load_or_create(&link).unwrap_err().to_string().contains("symbolic link"));
        let sub = dir.path().join("a_dir");
        std::fs::create_dir(&sub).unwrap();
        assert!(load_or_create(&sub).unwrap_err().to_string().contains("not a regular file"));
        std::fs::write(&path, "short").unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("at least 16 characters"));
    }

    #[test]
    fn only_the_service_users_own_file_is_trusted() {
        assert!(vet(true, 1000, 0o100600, 1000).is_ok());
        let e = vet(true, 0, 0o100600, 1000).unwrap_err();
        assert!(e.contains("owned by uid 0") && e.contains("uid 1000"), "{e}");
        assert!(vet(false, 1000, 0o040700, 1000).is_err());
        // As root, a real file handed to another user is refused too.
        if rustix::process::geteuid().is_root() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("api_key");
            std::fs::write(&path, "0123456789abcdef0123").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert!(load_or_create(&path).unwrap_err().to_string().contains("owned by uid 65534"));
        }
    }
}
