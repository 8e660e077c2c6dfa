"""Ambient mode on the mesh: the filter in an Istio waypoint (deploy/istio/overlays/ambient-waypoint),
clients without sidecars whose traffic reaches it over HBONE with their own SPIFFE certificates,
the three brokers behind it. See meshlib/ambient.py for what stands in for ztunnel.

Asserts what the brokers did, as the sidecar passes: the waypoint's configuration and chain, the
ACL outcomes with the authorizer naming the client's principal, counters on the waypoint; and
that a broker's 9092 refuses every identity but the waypoint's."""

import os
import re
import time
import uuid

import pytest
import yaml

from checks import (OUR_FILTER, Checks, LogMark, authz, each_denied_the_others_rights, ecds_filters,
                    filter_authentications, inbound_chains, java_round_trip, rejected_updates, scraped_counter,
                    wait_any, wait_until, write_every_partition)
from conftest import CONSUMER, GROUP, PRODUCER, TOPIC, check_summary
from deliveries import BOOTSTRAP, our_chain_ok
from faultlib import GROUP as FAULT_GROUP
from faultlib import (LONG, REPEATS, UNPROVEN, Accounting, Workload, check_accounting, check_nothing_lost,
                      ensure_topic, isr_full, longest_gap, record, records_figures, restart_proxy)
from faultlib import TOPIC as FAULT_TOPIC
from meshlib.ambient import (HBONE_CLIENT_ENVOY, WAYPOINT_ENVOY, WAYPOINT_ID, WAYPOINT_ISTIO, Ambient,
                             waypoint_chains)
from meshlib.topology import CLIENT_PORT, KAFKA_NS

SERVICES = ["kafka", "kafka-0", "kafka-1", "kafka-2"]
PRODUCER_POD, CONSUMER_POD = "amb-producer", "amb-consumer"
RECORD = {"checks": [], "chain": None}


@pytest.fixture(scope="module")
def ambient(mesh):
    t0 = time.monotonic()
    if not getattr(mesh, "oci_digest", None):
        mesh.oci_digest = mesh.push_wasm_image()
    a = Ambient(mesh)
    a.istiod_mark = LogMark(mesh.istiod.proc.log)
    try:
        a.up(mesh.oci_digest)
    except BaseException:
        if os.environ.get("KAFKA_IDENTITY_MESH_KEEP") == "1":
            raise                           # e2e/mesh/run --keep: leave it as it failed
        # Back to sidecar mode as far as possible; the bring-up's error is the one reported.
        try:
            a.down()
        except Exception as e:  # noqa: BLE001
            print(f"\n[ambient] take-down after the failed bring-up failed too: {e}")
        raise
    a.timings["bring-up total"] = round(time.monotonic() - t0, 1)
    yield a
    t1 = time.monotonic()
    a.down()
    a.timings["take-down total"] = round(time.monotonic() - t1, 1)
    a.timings["ambient pass total"] = round(time.monotonic() - t0, 1)
    print("\n[ambient] timings (s): " + ", ".join(f"{k} {v}" for k, v in a.timings.items()))


def rbac_denied(sidecar):
    """Connections the sidecar's RBAC filters refused, by counter (virtualInbound's chains and
    the HBONE listener's main_internal)."""
    return {k: v for k, v in sidecar.stats().items() if re.search(r"(^|\.)rbac\.denied$", k)}


def refused_by_rbac(sidecar, before, what):
    """Waits until an RBAC denial counter of the sidecar grew; returns the counters that did."""
    def grown():
        now = rbac_denied(sidecar)
        return {k: v for k, v in now.items() if v > before.get(k, 0)}
    return wait_until(what, grown, timeout=20)


def test_waypoint_runs_our_filter_last_before_tcp_proxy(mesh, ambient):
    passed = Checks(RECORD["checks"])
    wp = ambient.waypoint
    def loaded():
        # The chain names the ECDS filter at once; the module is in it only once pilot-agent
        # has fetched it (until then, or if the fetch fails, the resource is a deny-all RBAC).
        chains = waypoint_chains(wp)
        ecds = {k: v for k, v in ecds_filters(wp).items() if OUR_FILTER.search(k)}
        if all(our_chain_ok(chains.get(f"{s}.{KAFKA_NS}.svc.cluster.local", [])) for s in SERVICES) \
                and ecds and all("wasm" in str(v.get("@type", "")) for v in ecds.values()):
            return chains
        return None
    chains = wait_until("our filter, with its module, in the waypoint's 9092 chain of every Kafka Service",
                        loaded, timeout=120)
    assert rejected_updates(wp) == {}, f"the waypoint rejected configuration: {rejected_updates(wp)}"
    nacks = [ln for ln in ambient.istiod_mark.lines() if "ACK ERROR" in ln]
    assert nacks == [], f"istiod logged NACKs: {nacks[:3]}"
    passed.append("the waypoint accepted listeners, clusters, ECDS (update_rejected 0), no NACK in istiod")
    RECORD["chain"] = chains[f"kafka.{KAFKA_NS}.svc.cluster.local"]
    for host, filters in sorted(chains.items()):
        print(f"\n[waypoint, Istio {WAYPOINT_ISTIO} on Envoy {WAYPOINT_ENVOY}] main_internal chain "
              f"inbound-vip|9092|tcp|{host}: {' -> '.join(filters)}")
    passed.append(f"the waypoint's 9092 chain of each of {', '.join(SERVICES)} ends with our filter right before "
                  "tcp_proxy")
    ecds = {k: v for k, v in ecds_filters(wp).items() if OUR_FILTER.search(k)}
    assert ecds, "no ECDS resource for our WasmPlugin in the waypoint"
    code = str(ecds)
    assert "/var/lib/istio/data/" in code, f"waypoint's module not from pilot-agent's OCI cache: {code[:400]}"
    assert "io.istio.peer_principal" in code, f"the waypoint's plugin configuration lacks waypoint mode: {code[:600]}"
    passed.append("ECDS resource carries the module from the waypoint's OCI cache and the waypoint configuration")
    # The principal must come from the waypoint: no filter in the brokers' sidecars.
    for b in mesh.brokers:
        sc = mesh.sidecars[b.pod.name]
        assert rejected_updates(sc) == {}, f"{b.pod.name}: sidecar rejected configuration: {rejected_updates(sc)}"
        dump = sc.admin("config_dump?resource=dynamic_listeners")
        assert not OUR_FILTER.search(dump), f"{b.pod.name}: our filter is still in a broker sidecar"
        assert "connect_terminate" in dump, f"{b.pod.name}: the broker sidecar does not accept HBONE"
        assert all("envoy.filters.network.rbac" in c["filters"] for c in inbound_chains(sc)), \
            f"{b.pod.name}: no RBAC in the 9092 chains: {inbound_chains(sc)}"
    passed.append("broker sidecars: HBONE listener, RBAC on 9092, no kafka_identity, configuration accepted")


def test_ambient_clients_get_their_own_principals(mesh, ambient):
    passed = Checks(RECORD["checks"])
    run = f"ambient-{uuid.uuid4().hex[:6]}"
    marks = {b.index: LogMark(b.authorizer_log) for b in mesh.brokers}
    waypoint_log = LogMark(ambient.waypoint.proc.log)
    before = scraped_counter(ambient.waypoint, "kafka_identity_authenticated")
    tunnels_before = {n: c.stats().get("cluster.waypoint.upstream_rq_total", 0) for n, c in ambient.clients.items()}

    md = mesh.kclient(PRODUCER_POD, "metadata", BOOTSTRAP, TOPIC)
    advertised = sorted(md["brokers"].values())
    assert advertised == [f"kafka-{i}.kafka.svc.cluster.local:9092" for i in range(3)], md
    passed.append(f"metadata through the waypoint: brokers advertise their own Services ({', '.join(advertised)})")

    per_partition = 5
    write_every_partition(mesh, PRODUCER_POD, BOOTSTRAP, TOPIC, run, PRODUCER, marks, per_partition)
    passed.append(f"ambient producer (kcat) wrote every partition; each leader's authorizer allowed WRITE for "
                  f"User:{PRODUCER}")
    got = mesh.kclient(CONSUMER_POD, "consume", BOOTSTRAP, TOPIC, "--group", GROUP, "--prefix", run,
                       "--want", str(3 * per_partition), "--timeout", "60")
    assert got["consumed"] == 3 * per_partition and got["partitions"] == [0, 1, 2], got
    assert wait_any(marks.values(), *authz(CONSUMER, "Allowed", "READ", f"Group:LITERAL:{GROUP}"))
    passed.append(f"ambient consumer read all {3 * per_partition} records in group {GROUP}; authorizer allowed "
                  f"READ on the group for User:{CONSUMER}")

    errors = each_denied_the_others_rights(mesh, PRODUCER_POD, CONSUMER_POD, BOOTSTRAP, TOPIC, GROUP, run, marks,
                                           PRODUCER, CONSUMER)
    passed.append(f"ambient consumer may not write: TOPIC_AUTHORIZATION_FAILED, authorizer denied WRITE for "
                  f"User:{CONSUMER}")
    passed.append(f"ambient producer may not read: {'/'.join(errors)}, authorizer denied the group to "
                  f"User:{PRODUCER}")

    # Java client, as shipped (console tools), PLAINTEXT to the bootstrap Service.
    java_round_trip(mesh, PRODUCER_POD, CONSUMER_POD, BOOTSTRAP, TOPIC, GROUP, run)
    passed.append("Java client (console producer/consumer 4.4.0) wrote and read back through the waypoint")

    after = scraped_counter(ambient.waypoint, "kafka_identity_authenticated")
    assert after > before, f"kafka_identity_authenticated on the waypoint: {before} -> {after}"
    passed.append(f"kafka_identity_authenticated on the waypoint (:15020/stats/prometheus): {before} -> {after}")
    # The identities came over HBONE from the client pods' own tunnels: the filter's log names
    # the HBONE peer and the real client address.
    producer_ip = mesh.pods[PRODUCER_POD].ip
    lines = waypoint_log.wait_for("kafka-identity:", f"identity={PRODUCER}", "outcome=authenticated")
    assert any(f"source={producer_ip}:" in ln for ln in lines), \
        f"no waypoint log line for {PRODUCER} from {producer_ip}: {lines[:3]}"
    tunnels = {n: c.stats().get("cluster.waypoint.upstream_rq_total", 0) for n, c in ambient.clients.items()}
    assert all(tunnels[n] > tunnels_before[n] for n in tunnels), (tunnels_before, tunnels)
    passed.append(f"waypoint log: identity={PRODUCER} source={producer_ip} outcome=authenticated; HBONE tunnels "
                  f"to the waypoint from each client pod: {tunnels}")


def test_a_brokers_9092_admits_only_the_waypoint(mesh, ambient):
    """Around the waypoint: what ztunnel at the brokers would refuse, enforced here by the brokers'
    sidecars from the same AuthorizationPolicy."""
    passed = Checks(RECORD["checks"])
    broker = mesh.brokers[0]
    sc = mesh.sidecars[broker.pod.name]
    # Control: the same probe through the waypoint (to the broker's Service) gets Kafka's answer,
    # so a refusal below is the policy, not the probe.
    r = mesh.kclient(PRODUCER_POD, "probe", f"{broker.pod.name}.kafka.svc.cluster.local", str(CLIENT_PORT))
    assert r["answered"], f"the probe through the waypoint got no Kafka answer: {r}"
    passed.append(f"control: a raw ApiVersions through the waypoint to {broker.pod.name}'s Service is answered")

    # 1. An ambient client addressing the broker pod directly: HBONE straight to the pod's 15008
    #    with the client's own identity (what ztunnel sends for a pod IP).
    denied = rbac_denied(sc)
    hbone = ambient.clients[PRODUCER_POD]
    tunnels = hbone.stats().get("cluster.pod_hbone.upstream_rq_total", 0)
    handshakes = hbone.stats().get("cluster.pod_hbone.ssl.handshake", 0)
    r = mesh.kclient(PRODUCER_POD, "probe", broker.pod.ip, str(CLIENT_PORT))
    assert not r["answered"], f"HBONE from {PRODUCER} straight to {broker.pod.name}:9092 got a Kafka answer"
    # The tunnel itself was set up (mTLS with the broker's HBONE listener, a CONNECT stream):
    # what refused the connection came after it.
    after = {k: v for k, v in hbone.stats().items() if k.startswith("cluster.pod_hbone.")}
    assert after.get("cluster.pod_hbone.upstream_rq_total", 0) > tunnels, \
        f"the probe to the broker's pod IP did not go over an HBONE tunnel to the pod: {after}"
    assert after.get("cluster.pod_hbone.ssl.handshake", 0) > handshakes, \
        f"no mTLS handshake with {broker.pod.name}'s HBONE listener: {after}"
    grown = refused_by_rbac(sc, denied, "the broker's RBAC to refuse the direct HBONE connection")
    passed.append(f"HBONE tunnel from {PRODUCER_POD} ({PRODUCER}) straight to {broker.pod.ip}:15008 for 9092: "
                  f"mTLS with the broker's HBONE listener, then refused by its policy ({', '.join(grown)} grew)")

    # 2. A sidecar client (Istio mTLS with its own identity) to the broker pod.
    denied = rbac_denied(sc)
    r = mesh.kclient("producer", "probe", broker.pod.ip, str(CLIENT_PORT))
    assert not r["answered"], f"the sidecar client got a Kafka answer from {broker.pod.name}:9092"
    grown = refused_by_rbac(sc, denied, "the broker's RBAC to refuse the sidecar client")
    passed.append(f"sidecar pod producer ({PRODUCER}, Istio mTLS) straight to {broker.pod.ip}:9092 refused by the "
                  f"broker's policy ({', '.join(grown)} grew)")

    # 3. No mesh at all: plaintext to a STRICT broker. Each connection is accepted and then closed
    #    by the broker's sidecar (not a probe that could not connect or timed out), while the
    #    control above was answered.
    got = mesh.kclient("legacy", "probes", *(f"{b.pod.ip}:{CLIENT_PORT}" for b in mesh.brokers))["results"]
    answered = [t for t, r in got.items() if r["answered"]]
    assert not answered, f"the pod without a sidecar got a Kafka answer from {answered}"
    not_refused = {t: r for t, r in got.items() if not (r["connected"] and r["closed"])}
    assert not not_refused, f"probes from the pod without a sidecar that were not refused by the broker: {not_refused}"
    passed.append("the pod outside the mesh gets no Kafka answer from any broker's 9092 (STRICT): each connection "
                  "accepted, then closed by the broker's sidecar")
    passed.append(f"the policy admits {WAYPOINT_ID} only; the clients' tunnels ran on Envoy {HBONE_CLIENT_ENVOY}")


def test_the_clients_certificate_reaches_the_filter_in_the_waypoint(mesh, ambient):
    """overlays/ambient-waypoint-peer-cert: a set_filter_state in the waypoint's HBONE listener
    hands the filter the client's whole certificate (for subject-DN rules). The filter requires
    it once configured and checks it is the tunnel peer's, so: configured without the
    set_filter_state, every client is refused; with it, clients are authenticated again."""
    passed = Checks(RECORD["checks"])
    wp = ambient.waypoint
    target = f"kafka-0.{KAFKA_NS}.svc.cluster.local"

    def plugin_config_has(text):
        return lambda: any(text in str(v) for k, v in ecds_filters(wp).items() if OUR_FILTER.search(k))

    refused = scraped_counter(wp, "kafka_identity_rejected_no_identity")
    mark = LogMark(wp.proc.log)
    mesh.kube.kubectl("patch", "wasmplugin", "kafka-identity-waypoint", "-n", KAFKA_NS, "--type=merge", "-p",
                      '{"spec": {"pluginConfig": {"waypoint": {"peer_certificate_filter_state_key": '
                      '"kafka_identity.hbone_peer_cert"}}}}', what="the certificate key without its set_filter_state")
    wait_until("the waypoint's plugin configuration with the certificate key",
               plugin_config_has("kafka_identity.hbone_peer_cert"), timeout=60)
    r = mesh.kclient(PRODUCER_POD, "probe", target, str(CLIENT_PORT))
    assert not r["answered"], f"a client was served although the configured certificate is missing: {r}"
    lines = mark.wait_for("outcome=rejected_no_identity",
                          "set_filter_state in the waypoint's HBONE listener did not run")
    assert lines, "the waypoint logged no refusal for the missing certificate"
    assert scraped_counter(wp, "kafka_identity_rejected_no_identity") > refused
    passed.append("certificate key configured without its set_filter_state: the client is refused "
                  "(rejected_no_identity, 'did not run')")

    ambient.apply_overlay("ambient-waypoint-peer-cert")
    wait_until("the waypoint's HBONE listener with the certificate's set_filter_state",
               lambda: "kafka_identity.hbone_peer_cert" in wp.admin("config_dump?resource=dynamic_listeners"),
               timeout=60)
    wait_until("the waypoint's plugin configuration with subject rules", plugin_config_has("subject"), timeout=60)
    assert rejected_updates(wp) == {}, f"the waypoint rejected configuration: {rejected_updates(wp)}"
    mark = LogMark(wp.proc.log)
    run = f"ambient-cert-{uuid.uuid4().hex[:6]}"
    sent = mesh.kclient(PRODUCER_POD, "produce", BOOTSTRAP, TOPIC, "--count", "3", "--prefix", run)
    assert sent["delivered"] == 3, sent
    got = mesh.kclient(CONSUMER_POD, "consume", BOOTSTRAP, TOPIC, "--group", GROUP, "--prefix", run,
                       "--want", "3", "--timeout", "60")
    assert got["consumed"] == 3, got
    for principal in (PRODUCER, CONSUMER):
        assert mark.wait_for(f"principal={principal}", "outcome=authenticated"), \
            f"no authentication of {principal} with the certificate configured"
    passed.append("with overlays/ambient-waypoint-peer-cert (set_filter_state in connect_terminate, sources "
                  "spiffe+subject): the certificate reaches the filter, its SANs match the tunnel peer, producer "
                  "and consumer are authenticated as their SPIFFE principals")


# ---- faults in ambient mode (docs/reliability.md) ----------------------------------------------
# Under a steady workload of the ambient clients through the waypoint, with the accounting of
# tests/faultlib.py: nothing acknowledged lost or duplicated, the filter's counters reconciled
# with its lines, no refusal by the brokers; and each reconnection authenticated as the
# client's own principal by a waypoint.
REPLICA = "kafka-waypoint-b"


@pytest.fixture(scope="module")
def faults(mesh, ambient):
    ensure_topic(mesh)
    return ambient


def ambient_workload(mesh, name, seconds):
    return Workload(mesh, name, seconds, producer=PRODUCER_POD, consumer=CONSUMER_POD)


def clients_authenticated(lines):
    """{principal: connections} the waypoint authenticated among `lines`: both ambient clients,
    as their own principals, and no one else."""
    found = filter_authentications(lines)
    assert set(found) == {PRODUCER, CONSUMER}, f"authenticated by the waypoint: {found} (want both clients, only)"
    return found


def stalls(produced, consumed, since, until=None):
    return {"producer_stall_s": longest_gap(produced["ack_times"], since, until),
            "consumer_stall_s": longest_gap(consumed["arrivals"], since, until)}


@pytest.mark.parametrize("repeat", REPEATS)
def test_fault_waypoint_killed_and_restarted(mesh, faults, repeat):
    """The waypoint's pilot-agent and Envoy killed with SIGKILL and started again (a crashed
    container the kubelet restarts: same pod, same address, its OCI cache kept)."""
    passed = Checks(RECORD["checks"])
    wp = faults.waypoint
    acct = Accounting(mesh, faults.waypoints())
    before = LogMark(wp.proc.log)
    wl = ambient_workload(mesh, "wp-kill", 45).start()
    time.sleep(10)
    wl.check_running()
    # The clients' connections run through this waypoint: the fault reaches them.
    served = clients_authenticated(before.lines())
    after = LogMark(wp.proc.log)
    t_kill = time.time()
    restart_proxy(acct, wp.pod.name, wp, wp.proc.kill, lambda: faults.start_waypoint(wp))
    t_back = time.time()
    produced, consumed = wl.wait()
    # Before the read-back, whose connections the new Envoy authenticates too.
    again = clients_authenticated(after.lines())
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    figures = {**records_figures(wl, produced, consumed, back), **check_accounting(acct),
               **stalls(produced, consumed, t_kill), "waypoint_down_s": round(t_back - t_kill, 1),
               "authenticated_before": served, "authenticated_after": again}
    assert figures["client_disconnects"] > 0, "the clients saw no connection go down when the waypoint died"
    record(mesh, "ambient: waypoint kill -9", figures)
    passed.append(f"waypoint killed (-9) and restarted under load: {figures['records']} records, 0 lost, "
                  f"0 duplicated, stall {figures['producer_stall_s']} s, reconnections authenticated {again}")


@pytest.mark.parametrize("repeat", REPEATS)
@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_fault_one_of_two_waypoint_replicas_killed(mesh, faults, repeat):
    """Two waypoint replicas share the clients' connections; one is killed (SIGKILL) and not
    restarted. Its clients reconnect through the other, authenticated by its filter."""
    passed = Checks(RECORD["checks"])
    replica = faults.add_replica(REPLICA)
    try:
        survivor = faults.waypoint
        acct = Accounting(mesh, faults.waypoints())
        marks = {n: LogMark(w.proc.log) for n, w in faults.waypoints().items()}
        wl = ambient_workload(mesh, "wp-replica", 45).start()
        time.sleep(10)
        wl.check_running()
        served = {n: filter_authentications(m.lines()) for n, m in marks.items()}
        assert served[REPLICA] and served[survivor.pod.name], \
            f"the clients' connections are not on both replicas: {served}"
        after = LogMark(survivor.proc.log)
        acct.before_stop(REPLICA)
        t_kill = time.time()
        replica.proc.kill()
        acct.after_stop(REPLICA)
        faults.mark_gone(replica)      # what the kubelet and istiod tell ztunnel about a dead pod
        produced, consumed = wl.wait()
        moved = clients_authenticated(after.lines())
        back = wl.readback()
    finally:
        faults.remove_replica(replica)
    check_nothing_lost(produced, consumed, back)
    figures = {**records_figures(wl, produced, consumed, back), **check_accounting(acct),
               **stalls(produced, consumed, t_kill), "authenticated_before": served,
               "authenticated_on_survivor_after": moved}
    assert figures["client_disconnects"] > 0, "the clients saw no connection go down when the replica died"
    record(mesh, "ambient: one of two waypoint replicas killed", figures)
    passed.append(f"one of two waypoint replicas killed (-9): {figures['records']} records, 0 lost, 0 duplicated, "
                  f"stall {figures['producer_stall_s']} s, its clients authenticated on the other ({moved})")


@pytest.mark.parametrize("repeat", REPEATS)
@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
@UNPROVEN
def test_fault_brokers_rolled_behind_the_waypoint(mesh, faults, repeat):
    """Each broker in turn stopped (SIGTERM, a controlled shutdown), started, and waited for
    until every replica is in sync, while the ambient clients run through the waypoint."""
    passed = Checks(RECORD["checks"])
    acct = Accounting(mesh, faults.waypoints())
    wl = ambient_workload(mesh, "wp-rolling", 70).start()
    time.sleep(8)
    marks = [LogMark(w.proc.log) for w in faults.waypoints().values()]
    authorizer = [LogMark(b.authorizer_log) for b in mesh.brokers]
    t_start = time.time()
    for b in mesh.brokers:
        b.stop()
        b.start()
        b.wait_started()
        wait_until(f"replicas in sync after restarting broker {b.index}", lambda: isr_full(mesh), 120)
    t_done = time.time()
    produced, consumed = wl.wait()
    principals = clients_authenticated([ln for m in marks for ln in m.lines()])
    assert wait_any(authorizer, *authz(PRODUCER, "Allowed", "WRITE", f"Topic:LITERAL:{FAULT_TOPIC}")), \
        f"no broker logged an allowed WRITE of User:{PRODUCER} during the roll"
    assert wait_any(authorizer, *authz(CONSUMER, "Allowed", "READ", f"Group:LITERAL:{FAULT_GROUP}")), \
        f"no broker logged an allowed READ of the group by User:{CONSUMER} during the roll"
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    figures = {**records_figures(wl, produced, consumed, back), **check_accounting(acct),
               **stalls(produced, consumed, t_start, t_done), "restart_s": round(t_done - t_start, 1),
               "authenticated_principals": principals}
    record(mesh, "ambient: rolling restart behind the waypoint", figures)
    passed.append(f"brokers rolled behind the waypoint: {figures['records']} records, 0 lost, 0 duplicated, "
                  f"stall {figures['producer_stall_s']} s")


@pytest.mark.skipif(not LONG, reason="make e2e-mesh-faults (KAFKA_IDENTITY_MESH_LONG=1)")
def test_fault_istiod_away_in_ambient_mode(mesh, faults):
    """istiod stopped while the ambient clients run and new ones connect through the waypoint,
    then started again."""
    passed = Checks(RECORD["checks"])
    away = float(os.environ.get("KAFKA_IDENTITY_MESH_ISTIOD_AWAY", "60"))
    wp = faults.waypoint
    acct = Accounting(mesh, faults.waypoints())
    wl = ambient_workload(mesh, "wp-istiod", away + 35).start()
    time.sleep(8)
    mesh.istiod.stop()
    t_stop = time.time()
    fresh, before = 0, scraped_counter(wp, "kafka_identity_authenticated")
    while time.time() - t_stop < away:
        r = mesh.kclient(PRODUCER_POD, "produce", BOOTSTRAP, FAULT_TOPIC, "--count", "1", "--prefix",
                         f"away-{fresh}", "--timeout", "20")
        assert r["delivered"] == 1, f"a new connection through the waypoint failed while istiod was away: {r}"
        fresh += 1
        time.sleep(3)
    while_away = scraped_counter(wp, "kafka_identity_authenticated") - before
    mesh.istiod.start()
    want = len(mesh.sidecars) + len(faults.waypoints())
    wait_until("every proxy connected to istiod again", lambda: mesh.istiod.connected_proxies() >= want, 120)
    produced, consumed = wl.wait()
    back = wl.readback()
    check_nothing_lost(produced, consumed, back)
    figures = {**records_figures(wl, produced, consumed, back), **check_accounting(acct), "away_s": away,
               "new_connections_while_away": fresh, "authenticated_while_away": while_away}
    assert while_away >= fresh, (while_away, fresh)
    assert figures["client_disconnects"] == 0 and figures["client_errors"] == 0, \
        f"the clients' connections were disturbed: {figures}"
    record(mesh, "ambient: istiod away", figures)
    passed.append(f"istiod away {away:.0f} s in ambient mode: {fresh} new clients through the waypoint, all "
                  f"delivered; {figures['records']} records, 0 lost, 0 duplicated, no disconnect")


# The ECDS resource istiod names after the waypoint's TrafficExtension (a WasmPlugin's synthetic
# one adds "~istio-translated-wasmplugin").
WAYPOINT_TRAFFICEXTENSION = f"extensions.istio.io/trafficextension/{KAFKA_NS}.kafka-identity-waypoint"


def test_trafficextension_in_the_waypoint(mesh, ambient):
    """overlays/ambient-waypoint-trafficextension (Istio 1.30+'s API) replaces the waypoint's
    WasmPlugin in place: the same filter as a TrafficExtension with targetRefs to the waypoint.
    Its own ECDS resource is then the one kafka_identity filter, last before tcp_proxy, in every
    9092 chain, and the clients get their principals as with the WasmPlugin (the same checks)."""
    passed = Checks(RECORD["checks"])
    wp = ambient.waypoint
    istiod_mark = LogMark(mesh.istiod.proc.log)
    ambient.apply_overlay("ambient-waypoint-trafficextension")
    mesh.kube.kubectl("delete", "wasmplugin", "kafka-identity-waypoint", "-n", KAFKA_NS, "--ignore-not-found",
                      what="the waypoint's WasmPlugin, replaced by the TrafficExtension")
    hosts = [f"{s}.{KAFKA_NS}.svc.cluster.local" for s in SERVICES]

    def loaded():
        chains = waypoint_chains(wp)
        module = ecds_filters(wp).get(WAYPOINT_TRAFFICEXTENSION, {})
        if all(our_chain_ok(chains.get(h, [])) and chains[h][-2] == WAYPOINT_TRAFFICEXTENSION
               and sum(bool(OUR_FILTER.search(f)) for f in chains[h]) == 1 for h in hosts) \
                and "wasm" in str(module.get("@type", "")):
            return chains
        return None
    chains = wait_until("the TrafficExtension, with its module, alone in the waypoint's 9092 chain of every Kafka "
                        "Service", loaded, timeout=120)
    assert rejected_updates(wp) == {}, f"the waypoint rejected configuration: {rejected_updates(wp)}"
    nacks = [ln for ln in istiod_mark.lines() if "ACK ERROR" in ln]
    assert nacks == [], f"istiod logged NACKs: {nacks[:3]}"
    for host in hosts:
        print(f"\n[waypoint, TrafficExtension] main_internal chain inbound-vip|9092|tcp|{host}: "
              f"{' -> '.join(chains[host])}")
    code = str(ecds_filters(wp)[WAYPOINT_TRAFFICEXTENSION])
    assert "/var/lib/istio/data/" in code, f"the TrafficExtension's module not from the OCI cache: {code[:400]}"
    assert "io.istio.peer_principal" in code, f"the TrafficExtension lacks waypoint mode: {code[:600]}"
    passed.append(f"TrafficExtension in place of the WasmPlugin: {WAYPOINT_TRAFFICEXTENSION} is the one "
                  f"kafka_identity filter, right before tcp_proxy, in the 9092 chain of each of {', '.join(SERVICES)}; "
                  "module from the OCI cache, waypoint configuration; no NACK")
    test_ambient_clients_get_their_own_principals(mesh, ambient)


def test_ambient_summary(ambient, earlier_outcomes):
    print("\n==== ambient summary ====")
    print(f"- waypoint: Istio {WAYPOINT_ISTIO} (announced) on Envoy {WAYPOINT_ENVOY}; chain "
          f"{' -> '.join(RECORD['chain'] or [])}")
    for c in RECORD["checks"]:
        print(f"    ✔ {c}")
    print(yaml.safe_dump({"ambient seconds": ambient.timings}))
    assert RECORD["chain"], "the waypoint pass did not run"
    check_summary(earlier_outcomes)
