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
use std::os::unix::fs::OpenOptionsExt;
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
/// Its bytes are cleared when it is dropped.
#[derive(Clone)]
pub struct SecretKey {
    secret: [u8; KEY_BYTES],
    public: PublicKey,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        wipe(&mut self.secret);
    }
}

/// Overwrites `bytes` with zeros in a way the compiler may not elide
/// (the stores are volatile, and fenced from what follows).
pub(crate) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

impl SecretKey {
    /// The secret key given as Z85; the public key is derived from it.
    pub fn from_z85(text: &str) -> Result<Self, KeyFormatError> {
        let mut secret = z85_decode_key(text)?;
        match derive_public(text) {
            Ok(public) => Ok(SecretKey {
                secret,
                public: PublicKey(public),
            }),
            Err(e) => {
                wipe(&mut secret);
                Err(e)
            }
        }
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
    wipe(&mut secret);
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
    #[error("secret key file {} is a symbolic link; point `federation.keys.secret_key_file` at the file itself", path.display())]
    Symlink { path: PathBuf },
    #[error("secret key file {} is owned by uid {owner}, neither root nor this daemon's user (uid {user}); run `chown root {}`", path.display(), path.display())]
    Owner {
        path: PathBuf,
        owner: u32,
        user: u32,
    },
    #[error("secret key file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} has no key pair to rotate; make one with `orchestratorctl keys generate`", path.display())]
    NothingToRotate { path: PathBuf },
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
    let mut text = key.to_z85().into_bytes();
    let written = write_new(&secret_file, 0o600, &text);
    wipe(&mut text);
    written?;
    write_new(&public_file, 0o644, key.public().to_z85().as_bytes())?;
    Ok(GeneratedKeys {
        secret_file,
        public_file,
        public: key.public(),
    })
}

fn write_new(path: &Path, mode: u32, line: &[u8]) -> Result<(), KeyError> {
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
    file.write_all(line).map_err(err)?;
    file.write_all(b"\n").map_err(err)?;
    file.sync_all().map_err(err)
}

/// The most a key file may hold: 40 Z85 characters and a line end, with
/// room for a CRLF or trailing blanks.
const MAX_KEY_FILE: u64 = 128;

/// Reads this host's secret key. The file is opened once, without
/// following a symbolic link, and checked on the opened descriptor (so it
/// cannot be swapped between the check and the read): a regular file,
/// owned by root or by this process's user, that neither group nor others
/// may access. The bytes read are cleared once the key is parsed.
pub fn load_secret(path: &Path) -> Result<SecretKey, KeyError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                path: path.to_owned(),
            });
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeyError::Symlink {
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
    let meta = file.metadata().map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    // SAFETY: geteuid cannot fail and has no preconditions.
    let user = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != user {
        return Err(KeyError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            user,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::with_capacity(MAX_KEY_FILE as usize);
    let read = file.take(MAX_KEY_FILE).read_to_end(&mut bytes);
    let parsed = match read {
        Err(source) => Err(KeyError::Unreadable {
            path: path.to_owned(),
            source,
        }),
        Ok(_) => {
            let text = std::str::from_utf8(&bytes).unwrap_or("");
            SecretKey::from_z85(text.trim_end()).map_err(|reason| KeyError::Malformed {
                path: path.to_owned(),
                reason,
            })
        }
    };
    wipe(&mut bytes);
    parsed
}

/// The files [`rotate`] wrote, and the two public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedKeys {
    pub current: PublicKey,
    pub next: GeneratedKeys,
}

/// Makes `host`'s next key pair beside its current one in `dir`:
/// `<host>.next.key` and `<host>.next.pub`. The current pair is read (so
/// its public key can be printed beside the new one) and left as it is.
pub fn rotate(dir: &Path, host: &str) -> Result<RotatedKeys, KeyError> {
    if !crate::wire::valid_host(host) {
        return Err(KeyError::InvalidHost(host.to_owned()));
    }
    let current_file = dir.join(format!("{host}.key"));
    if current_file.symlink_metadata().is_err() {
        return Err(KeyError::NothingToRotate { path: current_file });
    }
    let current = load_secret(&current_file)?.public();
    let next = generate(dir, &format!("{host}.next"))?;
    Ok(RotatedKeys { current, next })
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
    use std::os::unix::fs::PermissionsExt;

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
    fn load_secret_refuses_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dir.key");
        fs::create_dir(&path).expect("mkdir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = load_secret(&path).expect_err("not a file");
        assert!(matches!(err, KeyError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn load_secret_refuses_a_symlink_even_to_a_good_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = generate(dir.path(), "h1").expect("generate");
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&made.secret_file, &link).expect("symlink");
        let err = load_secret(&link).expect_err("a symlink");
        assert!(matches!(err, KeyError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn load_secret_refuses_a_file_owned_by_another_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = generate(dir.path(), "h1").expect("generate");
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let other = if me == 4242 { 4343 } else { 4242 };
        if std::os::unix::fs::chown(&made.secret_file, Some(other), None).is_err() {
            // Only root may give a file away; as another user the file
            // is this user's, which the check admits.
            assert!(load_secret(&made.secret_file).is_ok());
            return;
        }
        let err = load_secret(&made.secret_file).expect_err("another owner");
        assert!(
            matches!(err, KeyError::Owner { owner, .. } if owner == other),
            "{err}"
        );
    }

    #[test]
    fn load_secret_reads_no_more_than_a_key_file_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = generate(dir.path(), "h1").expect("generate");
        let mut text = fs::read(&made.secret_file).expect("read");
        text.extend(std::iter::repeat_n(b' ', 1 << 20));
        text.extend_from_slice(b"junk");
        fs::write(&made.secret_file, &text).expect("write");
        // Only the first bytes are read: the key, then blanks.
        assert_eq!(
            load_secret(&made.secret_file).expect("load").public(),
            made.public
        );
    }

    #[test]
    fn a_secret_key_clears_its_bytes() {
        let mut bytes = *b"secret";
        wipe(&mut bytes);
        assert_eq!(bytes, [0; 6]);
    }

    #[test]
    fn rotate_makes_the_next_pair_beside_the_current_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = rotate(dir.path(), "h1").expect_err("nothing yet");
        assert!(matches!(err, KeyError::NothingToRotate { .. }), "{err}");
        let made = generate(dir.path(), "h1").expect("generate");
        let rotated = rotate(dir.path(), "h1").expect("rotate");
        assert_eq!(rotated.current, made.public);
        assert_ne!(rotated.next.public, made.public);
        assert_eq!(rotated.next.secret_file, dir.path().join("h1.next.key"));
        assert_eq!(
            load_secret(&rotated.next.secret_file)
                .expect("load")
                .public(),
            rotated.next.public
        );
        assert_eq!(
            load_secret(&made.secret_file).expect("untouched").public(),
            made.public
        );
        let again = rotate(dir.path(), "h1").expect_err("the next pair exists");
        assert!(matches!(again, KeyError::Exists { .. }), "{again}");
    }

    #[test]
    fn debug_output_does_not_show_the_secret() {
        let key = SecretKey::generate().expect("curve");
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_z85()));
        assert!(shown.contains(&key.public().to_z85()));
    }
}
