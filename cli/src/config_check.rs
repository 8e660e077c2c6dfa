//! `kafka-identity config check`: validates a filter configuration with the filter's own code.

use std::process::ExitCode;

use kafka_identity_filter::config::{self, FilterConfig};

/// Checks a filter configuration exactly as the filter does when Envoy hands it over.
///
/// FILE is the JSON the filter receives: the EnvoyFilter's StringValue, or the JSON Istio
/// makes of a WasmPlugin's pluginConfig. It goes through the filter's own parser
/// (kafka_identity_filter::config::parse_with_env), so a file accepted here is accepted by the
/// filter and a refusal names the same field with the same words as the filter's log line.
/// signing.private_key_env is looked up in this process's environment, as the filter looks it
/// up in the Wasm VM's.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 valid, 2 refused (the filter's message, naming the \
field, is printed), 1 usage or file error."
)]
pub struct Args {
    /// The filter configuration (JSON); `-` reads standard input.
    #[arg(value_name = "FILE")]
    file: String,
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    if path == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|e| format!("standard input: {e}"))?;
        return Ok(bytes);
    }
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn summary(config: &FilterConfig) -> String {
    let tokens = &config.session.tokens;
    format!(
        "stat_prefix {}, on_no_identity {:?}, on_client_sasl {:?}, token {} for {} s, \
         reauthenticate {}, max_frame_bytes {}, identity {}",
        config.stat_prefix,
        config.session.on_no_identity,
        config.session.on_client_sasl,
        tokens.describe(),
        tokens.lifetime_secs(),
        config.session.reauthenticate,
        config.session.max_frame_bytes,
        config.identity_source()
    )
}

pub fn run_command(args: &Args) -> ExitCode {
    let bytes = match read(&args.file) {
        Ok(bytes) => bytes,
        Err(message) => {
            eprintln!("kafka-identity config check: {message}");
            return ExitCode::from(1);
        }
    };
    match config::parse_with_env(&bytes, &|name| std::env::var(name).ok()) {
        Ok(config) => {
            println!("{}: ok ({})", args.file, summary(&config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The same words as the filter's log line `kafka-identity: configuration refused: ...`.
            eprintln!("{}: configuration refused: {e}", args.file);
            ExitCode::from(2)
        }
    }
}
