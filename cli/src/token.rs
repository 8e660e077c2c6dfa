//! `kafka-identity token`: the token the filter would send for a certificate.

use std::process::ExitCode;

use kafka_identity_filter::config;

use crate::explain::load_peer;

/// The OAUTHBEARER token the filter would send for a certificate (for debugging).
///
/// Unsecured or signed, as the filter configuration says; signing.private_key_env is read from
/// this process's environment. Paste the token into a JWT decoder, or check it against the
/// broker's JWKS.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 printed, 2 no principal for the certificate, 1 usage, \
file or configuration error."
)]
pub struct Args {
    /// Client certificate, PEM or DER.
    #[arg(long, value_name = "FILE.pem")]
    cert: String,
    /// Filter configuration (JSON), as the filter receives it.
    #[arg(long, value_name = "FILE.json")]
    config: String,
    /// Issue time instead of the clock (seconds since the epoch).
    #[arg(long, value_name = "UNIX_SECONDS")]
    now: Option<u64>,
}

pub fn run_command(args: &Args) -> ExitCode {
    let fail = |message: String| {
        eprintln!("kafka-identity token: {message}");
        ExitCode::from(1)
    };
    let text = match std::fs::read(&args.config) {
        Ok(text) => text,
        Err(e) => return fail(format!("{}: {e}", args.config)),
    };
    let config = match config::parse_with_env(&text, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => return fail(format!("{}: {e}", args.config)),
    };
    let peer = match load_peer(&args.cert) {
        Ok(peer) => peer,
        Err(e) => return fail(e),
    };
    let principal = match config.mapper.map(&peer) {
        Ok(principal) => principal,
        Err(why) => {
            eprintln!("kafka-identity token: no principal: {why}");
            return ExitCode::from(2);
        }
    };
    let now = args.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    match config
        .session
        .tokens
        .issue(&principal.name, now, u64::from(std::process::id()), 0)
    {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}
