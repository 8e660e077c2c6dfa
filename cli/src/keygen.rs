//! `kafka-identity keygen`: a signing key for the filter and the JWKS for the broker.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// A signing key for the filter and the JWKS the broker validates tokens with.
///
/// Writes a new private key (PKCS#8 PEM, mode 0600) for the filter's signing.private_key_pem or
/// private_key_env, and a JWKS with its public key for the broker's
/// sasl.oauthbearer.jwks.endpoint.url. --append adds the key to an existing JWKS (key rotation:
/// the broker accepts both keys while the filter moves to the new one). Both files are
/// replaced atomically (a temporary file renamed over them), so a broker never reads a
/// half-written JWKS; a replaced key file gets mode 0600, a replaced JWKS keeps its mode (a
/// new one is 0644).
#[derive(clap::Args)]
#[command(after_help = "Exit status: 0 written, 1 usage or file error.")]
pub struct Args {
    /// Key id (the JWT header's "kid").
    #[arg(long, value_name = "ID")]
    key_id: String,
    #[arg(long, value_enum, default_value_t = Algorithm::ES256)]
    algorithm: Algorithm,
    /// Where to write the private key.
    #[arg(long, value_name = "KEY.pem")]
    key_out: String,
    /// Where to write the JWKS.
    #[arg(long, value_name = "JWKS.json")]
    jwks_out: String,
    /// Add the key to an existing JWKS instead of replacing it.
    #[arg(long)]
    append: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
enum Algorithm {
    #[value(name = "ES256")]
    ES256,
    #[value(name = "RS256")]
    RS256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }
}

/// A new key as (PKCS#8 PEM, public JWK).
fn generate(algorithm: Algorithm, key_id: &str) -> Result<(String, Value), String> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    if algorithm == Algorithm::RS256 {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key =
            rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| e.to_string())?;
        let pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| e.to_string())?;
        let jwk = json!({"kty": "RSA", "kid": key_id, "alg": "RS256", "use": "sig",
            "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())});
        return Ok((pem.to_string(), jwk));
    }
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let pem = key
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    let point = key.verifying_key().to_encoded_point(false);
    let (x, y) = match (point.x(), point.y()) {
        (Some(x), Some(y)) => (b64(x), b64(y)),
        _ => return Err("could not encode the public key".to_owned()),
    };
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": key_id, "alg": "ES256", "use": "sig",
        "x": x, "y": y});
    Ok((pem.to_string(), jwk))
}

/// Mode of a new JWKS: the public keys, for the broker to read.
const JWKS_MODE: u32 = 0o644;
/// Mode of a private key, whatever the file it replaces had.
const KEY_MODE: u32 = 0o600;

/// A file written in full next to the one it replaces, not yet in its place: see
/// [`Staged::new`]. Dropped before [`Staged::commit`], it is removed.
struct Staged {
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

impl Staged {
    /// Writes `contents` to a temporary file in `path`'s directory, with `mode` (set, not
    /// left to the umask), synced to disk. [`Staged::commit`] then renames it over `path`,
    /// so a reader sees the old file or the new one, never a part of one: Kafka 4.1+ reads a
    /// `file://` JWKS again as soon as its modification time changes. A symbolic link is
    /// followed: the file it points to is replaced and the link stays.
    fn new(path: &str, contents: &[u8], mode: u32) -> Result<Staged, String> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let target = if is_link {
            std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?
        } else {
            PathBuf::from(path)
        };
        let name = target
            .file_name()
            .ok_or_else(|| format!("{path}: not a file name"))?
            .to_string_lossy()
            .into_owned();
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // create_new: never write through a file (or link) someone else put there.
        let mut attempt = 0u32;
        let (temp, mut file) = loop {
            let temp = dir.join(format!(".{name}.{}.{attempt}.tmp", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&temp)
            {
                Ok(file) => break (temp, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => return Err(format!("{path}: {}: {e}", temp.display())),
            }
        };
        let staged = Staged { temp, target, dir };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| file.write_all(contents))
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{}: {e}", staged.temp.display()))?;
        Ok(staged)
    }

    /// Puts the file in place: one rename, then the directory synced so that the rename
    /// survives a crash.
    fn commit(self) -> Result<(), String> {
        std::fs::rename(&self.temp, &self.target)
            .map_err(|e| format!("{}: {e}", self.target.display()))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", self.dir.display()))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the temporary name is gone and this fails harmlessly.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// The permission bits of an existing file, `None` when there is none.
fn existing_mode(path: &str) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

fn run(args: &Args) -> Result<(), String> {
    let mut keys: Vec<Value> = Vec::new();
    if args.append && Path::new(&args.jwks_out).exists() {
        let text = std::fs::read_to_string(&args.jwks_out)
            .map_err(|e| format!("{}: {e}", args.jwks_out))?;
        let existing: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.jwks_out))?;
        keys = existing
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .ok_or(format!("{}: no \"keys\" array", args.jwks_out))?;
        if keys
            .iter()
            .any(|k| k.get("kid").and_then(Value::as_str) == Some(&args.key_id))
        {
            return Err(format!(
                "{}: already has a key with kid {:?}",
                args.jwks_out, args.key_id
            ));
        }
    }
    let (pem, jwk) = generate(args.algorithm, &args.key_id)?;
    keys.push(jwk);
    let old_key_mode = existing_mode(&args.key_out);
    let jwks = serde_json::to_string_pretty(&json!({ "keys": keys })).map_err(|e| e.to_string())?;
    // A JWKS that is replaced keeps its mode (e.g. 0640 for the broker's group).
    let jwks_mode = existing_mode(&args.jwks_out).unwrap_or(JWKS_MODE);
    // Both written before either is put in place: a directory that refuses the JWKS leaves
    // no new key behind.
    let key = Staged::new(&args.key_out, pem.as_bytes(), KEY_MODE)?;
    let jwks_file = Staged::new(&args.jwks_out, (jwks + "\n").as_bytes(), jwks_mode)?;
    // The key first: a JWKS never names a key that was not written.
    key.commit()?;
    jwks_file.commit()?;
    if let Some(mode) = old_key_mode.filter(|mode| mode & 0o077 != 0) {
        eprintln!(
            "kafka-identity keygen: note: {} was mode {mode:04o}, open to other users; \
             the new key file is mode {KEY_MODE:04o}",
            args.key_out
        );
    }
    println!(
        "wrote {} ({} private key, kid {:?}) and {} ({} key(s))",
        args.key_out,
        args.algorithm.name(),
        args.key_id,
        args.jwks_out,
        keys.len()
    );
    Ok(())
}

pub fn run_command(args: &Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kafka-identity keygen: {message}");
            ExitCode::from(1)
        }
    }
}
