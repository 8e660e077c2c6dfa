//! `kafka-identity keygen`: a signing key for the filter and the JWKS for the broker.

use std::path::Path;
use std::process::ExitCode;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// A signing key for the filter and the JWKS the broker validates tokens with.
///
/// Writes a new private key (PKCS#8 PEM, mode 0600) for the filter's signing.private_key_pem or
/// private_key_env, and a JWKS with its public key for the broker's
/// sasl.oauthbearer.jwks.endpoint.url. --append adds the key to an existing JWKS (key rotation:
/// the broker accepts both keys while the filter moves to the new one).
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

fn write_key(path: &str, pem: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| format!("{path}: {e}"))
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
    write_key(&args.key_out, &pem)?;
    let jwks = serde_json::to_string_pretty(&json!({ "keys": keys })).map_err(|e| e.to_string())?;
    std::fs::write(&args.jwks_out, jwks + "\n").map_err(|e| format!("{}: {e}", args.jwks_out))?;
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
