#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Configuration changes reach open connections in both directions (issue 20, items 1
//! and 2): a revert to a configuration Envoy still runs is seen, and at each
//! re-authentication the peer is identified again with the current configuration.
//! Connections are driven as the glue drives them (`support::Client`), the table is the
//! glue's (`latest::Latest`), peers are real certificates mapped by real configurations.

mod support;

use kafka_identity_filter::latest::Latest;
use kafka_identity_filter::session::{Identification, RefusalKind};
use support::*;

const LOCAL: &str = "spiffe://cluster.local/ns/apps/sa/producer";
const OTHER: &str = "spiffe://other.example/ns/apps/sa/producer";

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

#[test]
fn a_reauthentication_identifies_the_peer_again_with_the_current_configuration() {
    let both = configured(
        r#"{"identity": {"spiffe": {"trust_domains": ["cluster.local", "other.example"]}}}"#,
    );
    let local_only =
        configured(r#"{"identity": {"spiffe": {"trust_domains": ["cluster.local"]}}}"#);
    let mut latest = Latest::default();
    latest.configured(&filter(), 1, both.clone());
    let mut local = Client::open(&mut latest, 1, &both, workload_pem(LOCAL), 1);
    let mut other = Client::open(&mut latest, 1, &both, workload_pem(OTHER), 2);
    for client in [&mut local, &mut other] {
        let round = client.round(&latest, NOW).unwrap();
        assert!(!round.authenticated.unwrap().reauthentication);
    }
    // Requests before the re-authentication is due are not affected by the change: the
    // peer is identified again when the filter would vouch for it again.
    latest.configured(&filter(), 2, local_only.clone());
    for client in [&mut local, &mut other] {
        let round = client.round(&latest, NOW + 1_000).unwrap();
        assert!(round.tokens.is_empty() && round.authenticated.is_none());
    }
    // At its next re-authentication the client of the removed trust domain is closed;
    // nothing of its request went to the broker.
    let mut sent = other.send(&latest, NOW + ROUND_MS).unwrap_err();
    assert_eq!(sent.kind, RefusalKind::Reidentified);
    assert_eq!(sent.kind.outcome(), "reidentified_closed");
    assert!(
        sent.message.contains(OTHER)
            && sent.message.contains("under the current configuration")
            && sent.message.contains("other.example"),
        "{}",
        sent.message
    );
    assert!(other.conn.is_refused());
    // ...while the client of the trust domain that stayed re-authenticates.
    let round = local.round(&latest, NOW + ROUND_MS).unwrap();
    assert!(round.authenticated.unwrap().reauthentication);
    assert_eq!(claims(&round.tokens[0])["sub"], LOCAL);

    // A changed template gives the same peer another principal: Kafka refuses a change of
    // principal on re-authentication, so the filter closes the connection instead.
    let renamed = configured(
        r#"{"identity": {"spiffe": {"trust_domains": ["cluster.local"], "template": "{service_account}"}}}"#,
    );
    assert_eq!(
        principal_under(&renamed, &workload_pem(LOCAL)),
        Identification::Principal {
            identity: LOCAL.into(),
            principal: "producer".into()
        }
    );
    latest.configured(&filter(), 3, renamed.clone());
    sent = local.send(&latest, NOW + 2 * ROUND_MS).unwrap_err();
    assert_eq!(sent.kind, RefusalKind::Reidentified);
    assert!(
        sent.message.contains("\"producer\"") && sent.message.contains("change of principal"),
        "{}",
        sent.message
    );
    // A new connection of the same client gets the new principal from the start.
    let mut fresh = Client::open(&mut latest, 3, &renamed, workload_pem(LOCAL), 3);
    let round = fresh.round(&latest, NOW + 2 * ROUND_MS).unwrap();
    assert_eq!(claims(&round.tokens[0])["sub"], "producer");
}

#[test]
fn an_unchanged_configuration_keeps_reauthenticating_the_same_principal() {
    // The control: with no change, many re-authentications, no refusal.
    let c = configured(r#"{"identity": {"spiffe": {"trust_domains": ["cluster.local"]}}}"#);
    let mut latest = Latest::default();
    latest.configured(&filter(), 1, c.clone());
    let mut client = Client::open(&mut latest, 1, &c, workload_pem(LOCAL), 1);
    client.round(&latest, NOW).unwrap();
    for i in 1..=5 {
        let round = client.round(&latest, NOW + i * ROUND_MS).unwrap();
        assert!(round.authenticated.unwrap().reauthentication, "round {i}");
    }
    assert_eq!(client.conn.session().authentications(), 6);
}
