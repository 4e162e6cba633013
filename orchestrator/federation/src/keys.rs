//! CURVE keys: this host's secret key file, peers' public keys, and Z85.
//!
//! A host has one key pair. `<host>.key` holds the secret key and
//! `<host>.pub` the public key, each as 40 Z85 characters and a newline.
//! The secret is refused, as ssh refuses a private key, when group or others
//! may access its file: a key anyone on the host can read authenticates
//! nobody.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A key's length in bytes, and in Z85 characters.
pub const KEY_BYTES: usize = 32;
pub const KEY_Z85_CHARS: usize = 40;

const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Why a string is not a Z85 CURVE key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("a CURVE key is {KEY_Z85_CHARS} Z85 characters, found {0}")]
    Length(usize),
    #[error("`{0}` is not a Z85 character")]
    Character(char),
    #[error("characters {0}..{end} do not encode 4 bytes", end = .0 + 5)]
    Overflow(usize),
    #[error("libzmq could not derive the public key (is it built with CURVE?)")]
    Derive,
}

/// Decodes 40 Z85 characters into a 32-byte key.
pub fn z85_decode_key(text: &str) -> Result<[u8; KEY_BYTES], KeyFormatError> {
    let chars = text.as_bytes();
    if chars.len() != KEY_Z85_CHARS {
        return Err(KeyFormatError::Length(text.chars().count()));
    }
    let mut out = [0u8; KEY_BYTES];
    for (i, group) in chars.chunks(5).enumerate() {
        let mut value: u64 = 0;
        for &c in group {
            let digit = Z85
                .iter()
                .position(|&z| z == c)
                .ok_or_else(|| KeyFormatError::Character(char::from(c)))?;
            value = value * 85 + digit as u64;
        }
        let word = u32::try_from(value).map_err(|_| KeyFormatError::Overflow(i * 5))?;
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    Ok(out)
}

/// Encodes a 32-byte key as 40 Z85 characters.
pub fn z85_encode_key(key: &[u8; KEY_BYTES]) -> String {
    let mut out = String::with_capacity(KEY_Z85_CHARS);
    for word in key.chunks(4) {
        let mut value = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        let mut group = [0u8; 5];
        for slot in group.iter_mut().rev() {
            *slot = Z85[(value % 85) as usize];
            value /= 85;
        }
        out.extend(group.iter().map(|&c| char::from(c)));
    }
    out
}

/// A CURVE public key: a peer's identity on the bus.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_BYTES]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    pub fn to_z85(&self) -> String {
        z85_encode_key(&self.0)
    }
}

impl FromStr for PublicKey {
    type Err = KeyFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        z85_decode_key(s).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

/// This host's CURVE secret key, with the public key that goes with it.
#[derive(Clone)]
pub struct SecretKey {
    secret: [u8; KEY_BYTES],
    public: PublicKey,
}

impl SecretKey {
    /// The secret key given as Z85; the public key is derived from it.
    pub fn from_z85(text: &str) -> Result<Self, KeyFormatError> {
        let secret = z85_decode_key(text)?;
        let public = PublicKey(derive_public(text)?);
        Ok(SecretKey { secret, public })
    }

    /// A fresh random key pair from libzmq.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = zmq::CurveKeyPair::new().map_err(KeyError::Generate)?;
        Ok(SecretKey {
            secret: pair.secret_key,
            public: PublicKey(pair.public_key),
        })
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.secret
    }

    fn to_z85(&self) -> String {
        z85_encode_key(&self.secret)
    }
}

impl fmt::Debug for SecretKey {
    /// Never prints the secret: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public)
    }
}

unsafe extern "C" {
    // libzmq's own derivation (Curve25519 scalar multiplication); the `zmq`
    // crate does not wrap it. Available in every libzmq with CURVE.
    fn zmq_curve_public(
        z85_public_key: *mut std::ffi::c_char,
        z85_secret_key: *const std::ffi::c_char,
    ) -> std::ffi::c_int;
}

fn derive_public(secret_z85: &str) -> Result<[u8; KEY_BYTES], KeyFormatError> {
    let mut secret = [0u8; KEY_Z85_CHARS + 1];
    secret[..KEY_Z85_CHARS].copy_from_slice(secret_z85.as_bytes());
    let mut public = [0u8; KEY_Z85_CHARS + 1];
    // SAFETY: both buffers are 41 bytes, what zmq_curve_public reads and
    // writes (40 Z85 characters and a NUL); the secret is NUL-terminated.
    let rc = unsafe { zmq_curve_public(public.as_mut_ptr().cast(), secret.as_ptr().cast()) };
    // The input was checked as Z85 already, so a failure can only mean a
    // libzmq without CURVE.
    if rc != 0 {
        return Err(KeyFormatError::Derive);
    }
    let text = std::str::from_utf8(&public[..KEY_Z85_CHARS]).map_err(|_| KeyFormatError::Derive)?;
    z85_decode_key(text)
}

/// What went wrong with a key file. Every message names the file and says
/// how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{0}` is not a host name (letters, digits, `_`, `-`, `.`)")]
    InvalidHost(String),
    #[error("{} already exists; remove it first to make a new key pair (every peer must then be given the new public key)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("secret key file {} does not exist; create the key pair with `orchestratorctl keys generate` or set `federation.keys.secret_key_file`", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read secret key file {}: {source}; check its owner and mode (0600)", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("{} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}`", path.display(), path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{} does not hold a CURVE secret key: {reason}; generate a new key pair", path.display())]
    Malformed {
        path: PathBuf,
        reason: KeyFormatError,
    },
    #[error("libzmq could not make a key pair (is it built with CURVE?): {0}")]
    Generate(zmq::Error),
}

/// The files [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKeys {
    pub secret_file: PathBuf,
    pub public_file: PathBuf,
    pub public: PublicKey,
}

/// Writes a new key pair for `host` into `dir` (created if missing):
/// `<host>.key` (mode 0600) and `<host>.pub`. Refuses to replace either.
pub fn generate(dir: &Path, host: &str) -> Result<GeneratedKeys, KeyError> {
    if !crate::wire::valid_host(host) {
        return Err(KeyError::InvalidHost(host.to_owned()));
    }
    let secret_file = dir.join(format!("{host}.key"));
    let public_file = dir.join(format!("{host}.pub"));
    for path in [&secret_file, &public_file] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let key = SecretKey::generate()?;
    write_new(&secret_file, 0o600, &key.to_z85())?;
    write_new(&public_file, 0o644, &key.public().to_z85())?;
    Ok(GeneratedKeys {
        secret_file,
        public_file,
        public: key.public(),
    })
}

fn write_new(path: &Path, mode: u32, line: &str) -> Result<(), KeyError> {
    let err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            KeyError::Write {
                path: path.to_owned(),
                source,
            }
        }
    };
    // create_new: never truncate a key that appeared since the check above.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(err)?;
    file.sync_all().map_err(err)
}

/// Reads this host's secret key, refusing a file that group or others may
/// access.
pub fn load_secret(path: &Path) -> Result<SecretKey, KeyError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(KeyError::Unreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    SecretKey::from_z85(text.trim_end()).map_err(|reason| KeyError::Malformed {
        path: path.to_owned(),
        reason,
    })
}

/// Reads a `<host>.pub` file.
pub fn load_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    text.trim_end()
        .parse()
        .map_err(|reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Z85 specification (ZeroMQ RFC 32).
    #[test]
    fn z85_matches_the_specification_vector() {
        let mut key = [0u8; KEY_BYTES];
        let spec = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        for (i, chunk) in key.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&spec);
            chunk[0] ^= i as u8;
        }
        let text = z85_encode_key(&key);
        assert!(text.starts_with("HelloWorld"), "{text}");
        assert_eq!(z85_decode_key(&text), Ok(key));
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        let good = SecretKey::generate().expect("curve").public().to_z85();
        assert_eq!(z85_decode_key(&good[..39]), Err(KeyFormatError::Length(39)));
        let bad_char = format!("{}\"", &good[..39]);
        assert_eq!(
            z85_decode_key(&bad_char),
            Err(KeyFormatError::Character('"'))
        );
        let overflow = format!("#####{}", &good[5..]);
        assert_eq!(z85_decode_key(&overflow), Err(KeyFormatError::Overflow(0)));
    }

    #[test]
    fn the_public_key_derived_from_a_secret_is_the_generated_one() {
        let key = SecretKey::generate().expect("curve");
        let again = SecretKey::from_z85(&key.to_z85()).expect("valid");
        assert_eq!(again.public(), key.public());
        assert_eq!(again.secret_bytes(), key.secret_bytes());
    }

    #[test]
    fn generate_writes_a_private_secret_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = generate(dir.path(), "mainpc").expect("generate");
        let mode = fs::metadata(&made.secret_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = load_secret(&made.secret_file).expect("load");
        assert_eq!(loaded.public(), made.public);
        assert_eq!(load_public(&made.public_file).expect("pub"), made.public);
        let err = generate(dir.path(), "mainpc").expect_err("exists");
        assert!(
            matches!(err, KeyError::Exists { ref path } if path == &made.secret_file),
            "{err}"
        );
        // The existing key is untouched.
        assert_eq!(
            load_secret(&made.secret_file).expect("load").public(),
            made.public
        );
    }

    #[test]
    fn generate_refuses_a_host_that_is_not_a_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = generate(dir.path(), "../etc/x").expect_err("refused");
        assert!(matches!(err, KeyError::InvalidHost(_)), "{err}");
    }

    #[test]
    fn load_secret_refuses_missing_open_and_malformed_files_naming_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.key");
        let err = load_secret(&missing).expect_err("missing");
        assert!(matches!(err, KeyError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("none.key") && err.to_string().contains("keys generate"));

        let made = generate(dir.path(), "h1").expect("generate");
        fs::set_permissions(&made.secret_file, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load_secret(&made.secret_file).expect_err("too open");
        assert!(
            matches!(err, KeyError::TooOpen { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&made.secret_file, fs::Permissions::from_mode(0o604)).expect("chmod");
        assert!(matches!(
            load_secret(&made.secret_file),
            Err(KeyError::TooOpen { .. })
        ));

        let bad = dir.path().join("bad.key");
        fs::write(&bad, "not a key\n").expect("write");
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = load_secret(&bad).expect_err("malformed");
        assert!(
            matches!(
                err,
                KeyError::Malformed {
                    reason: KeyFormatError::Length(9),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn load_secret_reports_an_unreadable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory passes the mode check but cannot be read as text.
        let path = dir.path().join("dir.key");
        fs::create_dir(&path).expect("mkdir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = load_secret(&path).expect_err("unreadable");
        assert!(matches!(err, KeyError::Unreadable { .. }), "{err}");
    }

    #[test]
    fn debug_output_does_not_show_the_secret() {
        let key = SecretKey::generate().expect("curve");
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_z85()));
        assert!(shown.contains(&key.public().to_z85()));
    }
}
