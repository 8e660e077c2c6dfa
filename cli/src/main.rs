//! `kafka-identity`: the filter's identity and token logic on the command line.

use std::process::ExitCode;

mod explain;
mod keygen;
mod token;

const USAGE: &str = "usage: kafka-identity <command> ...

commands:
  explain --cert FILE.pem [--config FILE.json] [--json]
      the identity fields of a client certificate and the principal the filter derives
  token --cert FILE.pem --config FILE.json
      the OAUTHBEARER token the filter would send for that certificate (for debugging)
  keygen --key-id ID [--algorithm ES256|RS256] --key-out KEY.pem --jwks-out JWKS.json [--append]
      a signing key for the filter and the JWKS the broker validates tokens with

run a command with --help for details.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("explain") => explain::main(rest),
        Some("token") => token::main(rest),
        Some("keygen") => keygen::main(rest),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("kafka-identity: unknown command {other:?}\n{USAGE}");
            ExitCode::from(1)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(1)
        }
    }
}
