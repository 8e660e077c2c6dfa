//! `kafka-identity token`: the token the filter would send for a certificate.

use std::process::ExitCode;

use kafka_identity_filter::config;

use crate::explain::load_peer;

pub const USAGE: &str =
    "usage: kafka-identity token --cert FILE.pem --config FILE.json [--now UNIX_SECONDS]

Prints the OAUTHBEARER token the filter would present for this client certificate with
this filter configuration (unsecured or signed; signing.private_key_env is read from this
process's environment). For debugging: paste it into a JWT decoder, or check it against
the broker's JWKS.

Exit status: 0 printed, 2 no principal for the certificate, 1 usage, file or config error.";

pub fn main(args: &[String]) -> ExitCode {
    let mut iter = args.iter();
    let (mut cert, mut config_path, mut now) = (None, None, None);
    while let Some(arg) = iter.next() {
        match (arg.as_str(), iter.next()) {
            ("--cert", Some(v)) => cert = Some(v.clone()),
            ("--config", Some(v)) => config_path = Some(v.clone()),
            ("--now", Some(v)) => now = v.parse::<u64>().ok().or(Some(u64::MAX)),
            _ => return usage(&format!("bad argument {arg:?}")),
        }
    }
    let (Some(cert), Some(config_path)) = (cert, config_path) else {
        return usage("--cert and --config are required");
    };
    if now == Some(u64::MAX) {
        return usage("--now must be seconds since the epoch");
    }
    let fail = |message: String| {
        eprintln!("kafka-identity token: {message}");
        ExitCode::from(1)
    };
    let text = match std::fs::read(&config_path) {
        Ok(text) => text,
        Err(e) => return fail(format!("{config_path}: {e}")),
    };
    let config = match config::parse_with_env(&text, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => return fail(format!("{config_path}: {e}")),
    };
    let peer = match load_peer(&cert) {
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
    let now = now.unwrap_or_else(|| {
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

fn usage(message: &str) -> ExitCode {
    eprintln!("kafka-identity token: {message}\n{USAGE}");
    ExitCode::from(1)
}
