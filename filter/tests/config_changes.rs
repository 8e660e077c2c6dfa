#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Configuration changes reach open connections (issue 20, item 1): a revert to a
//! configuration Envoy still runs is seen.
//! Connections are driven as the glue drives them (`support::Client`), the table is the
//! glue's (`latest::Latest`), peers are real certificates mapped by real configurations.

mod support;

use kafka_identity_filter::latest::Latest;
use support::*;

const LOCAL: &str = "spiffe://cluster.local/ns/apps/sa/producer";

/// The next re-authentication is due before this much time after the last one.
const ROUND_MS: u64 = 9_600;

#[test]
fn a_revert_to_an_earlier_configuration_reaches_new_and_open_connections() {
    // C1 signs with k1, C2 with k2. Envoy configures root 1 with C1 and root 2 with C2;
    // on the revert it hands back root 1, which is still alive for the connections
    // opened under it, without configuring it again.
    let c1 = configured(&signed_config("k1", ""));
    let c2 = configured(&signed_config("k2", ""));
    let mut latest = Latest::default();
    latest.configured(&filter(), 1, c1.clone());

    let mut old = Client::open(&mut latest, 1, &c1, workload_pem(LOCAL), 1);
    let first = old.round(&latest, NOW).unwrap();
    assert_eq!(
        first.tokens.iter().map(|t| kid(t)).collect::<Vec<_>>(),
        ["k1"]
    );

    // Push C2: the open connection re-authenticates with k2, a new one authenticates with
    // it.
    latest.configured(&filter(), 2, c2.clone());
    let pushed = old.round(&latest, NOW + ROUND_MS).unwrap();
    assert!(pushed.authenticated.unwrap().reauthentication);
    assert_eq!(kid(&pushed.tokens[0]), "k2");
    let mut during = Client::open(&mut latest, 2, &c2, workload_pem(LOCAL), 2);
    assert_eq!(
        kid(&during.round(&latest, NOW + ROUND_MS).unwrap().tokens[0]),
        "k2"
    );

    // Revert to exactly C1: no configure, only root 1 creating the next connection.
    let mut new = Client::open(&mut latest, 1, &c1, workload_pem(LOCAL), 3);
    let t = NOW + 2 * ROUND_MS;
    assert_eq!(
        kid(&new.round(&latest, t).unwrap().tokens[0]),
        "k1",
        "new connection"
    );
    let reverted = old.round(&latest, t).unwrap();
    assert!(reverted.authenticated.unwrap().reauthentication);
    assert_eq!(
        kid(&reverted.tokens[0]),
        "k1",
        "re-authentication of the old connection"
    );
    // The connection opened under C2 follows too.
    let followed = during.round(&latest, t).unwrap();
    assert_eq!(kid(&followed.tokens[0]), "k1");
    // And forward again, the same way.
    let mut again = Client::open(&mut latest, 2, &c2, workload_pem(LOCAL), 4);
    let t = NOW + 3 * ROUND_MS;
    assert_eq!(kid(&again.round(&latest, t).unwrap().tokens[0]), "k2");
    assert_eq!(kid(&old.round(&latest, t).unwrap().tokens[0]), "k2");
}
