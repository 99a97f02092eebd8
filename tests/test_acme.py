"""The public entry in production's shape, for real. TLS from an ACME
server: the load balancer gets its certificate over HTTP-01 with certbot's
nginx plugin, as it would from Let's Encrypt, from Pebble (Let's Encrypt's
test server, Debian's package) on a lab host of its own with a certificate
of its own (lb_acme_server, lb_acme_ca_bundle). The entry watched from the
monitoring node (Debian 12's; test_monitoring's runs Debian 13): the blackbox
exporter's known sort over HTTPS, its alerts delivered to a webhook;
Prometheus's page the operator's alone.
One lab, one story: a plain deployment (the page: a password, and no host
outside the admin network); TLS asked for while the ACME server is down
(the run fails naming it, nginx keeps serving); the server up (the
certificate, its chain verified against Pebble's root from outside the
cluster, and probed); a second run that asks for nothing; a renewal by
certbot's own unit under HTTPS load, with no alert; the load balancer's
nginx stopped: the entry's alert reaches the webhook, then its resolution."""

import json
import secrets
import shlex
import time
import urllib.parse

from clusters import (LB_PORT, LOAD_RATE, RECEIVER_PORT, ROOT, SORT_BODY, SORTED, basic_auth, cluster_up,
                      firing_alerts, http_status, lock_held, notices, playbook, prometheus_api, prometheus_status, recap,
                      said, sort_at, start_receiver)
from testlab import HostSpec
from testlab.cluster import node_suite
from testlab.hosts import wait_until

ACME_IP = "192.168.56.30"
ACME_SERVER = f"https://{ACME_IP}:14000/dir"
DOMAIN = "lb.sortd.test"
CLUSTER = {"nodes": [
    {"host_name": "lb-01", "groups": ["lb"],
     "port_mappings": [{"guest_port": 80, "host_port": 8080}, {"guest_port": 22, "host_port": 22002}],
     "network_configs": [{"ip": "192.168.56.10"}]},
    {"host_name": "web-01", "groups": ["web"],
     "port_mappings": [{"guest_port": 22, "host_port": 22003}],
     "network_configs": [{"ip": "192.168.56.11"}]},
    # Debian 12's Prometheus, Alertmanager and blackbox exporter, whose
    # versions behave differently from Debian 13's (test_monitoring's).
    {"host_name": "mon-01", "groups": ["monitoring"], "memory": 1024, "box": "debian/bookworm64",
     "port_mappings": [{"guest_port": 9090, "host_port": 9090}, {"guest_port": 22, "host_port": 22006}],
     "network_configs": [{"ip": "192.168.56.20"}]},
]}
# The monitoring node's settings: Prometheus's page asks for a password and
# takes only the admin network (here the lab's bridge, where this machine's
# forwarded port comes from); quick notices to a webhook on the node.
PASSWORD = f"prometheus-{secrets.token_hex(12)}"
MONITORING = {"prometheus_web_password": PASSWORD, "prometheus_web_sources": ["192.168.56.1/32"],
              "alertmanager_webhook_url": f"http://127.0.0.1:{RECEIVER_PORT}/alerts",
              "alertmanager_group_wait": "5s", "alertmanager_group_interval": "15s"}
# Pebble's own HTTPS listener: a CA and a certificate made on its host.
LISTENER = f"""
mkdir -p /etc/pebble && cd /etc/pebble
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=Pebble listener test CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=acme-01 \
    -addext "subjectAltName=DNS:acme-01,IP:{ACME_IP},IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
    -addext extendedKeyUsage=serverAuth -CA ca.crt -CAkey ca.key -keyout key.pem -out cert.pem 2>/dev/null
"""
PEBBLE_CONFIG = {"pebble": {
    "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
    "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False,
}}


def entry_probe(url: str) -> dict[str, float]:
    """The entry's last probe in Prometheus: success, and the certificate's
    days left (over HTTPS)."""
    values = {}
    for name, query in (("success", f'probe_success{{instance="{url}"}}'),
                        ("days", f'(probe_ssl_earliest_cert_expiry{{instance="{url}"}} - time()) / 86400')):
        result = prometheus_api("/api/v1/query?query=" + urllib.parse.quote(query), PASSWORD)["result"]
        if result:
            values[name] = float(result[0]["value"][1])
    return values


def test_the_load_balancer_gets_renews_and_keeps_its_certificate_from_an_acme_server(debs, tmp_path):
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(CLUSTER))
    with cluster_up(cluster, "acme") as (lab, hosts, _):
        # Pebble on the cluster's suite ($SORTD_BOX=debian/bookworm64: the
        # whole lab on Debian 12, Pebble 2.4 and certbot 2.1 among them).
        acme = lab.boot(HostSpec("acme-01", ACME_IP, suite=node_suite({})))
        acme.run(["apt-get", "update", "-q"])
        acme.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "pebble"])
        acme.sh(LISTENER)
        lb, monitoring = lab.hosts["lb-01"], lab.hosts["mon-01"]
        for host in (acme, monitoring):
            host.sh(f"echo '{lb.spec.ip} {DOMAIN}' >> /etc/hosts")
        acme.sh(f"echo {shlex.quote(json.dumps(PEBBLE_CONFIG))} > /etc/pebble/config.json")
        listener_ca = tmp_path / "pebble-listener-ca.crt"
        listener_ca.write_text(acme.run(["cat", "/etc/pebble/ca.crt"]).stdout)
        acme.put(ROOT / "testlab/load.py", "/root/load.py")
        start_receiver(monitoring)
        assert lab.gateway + "/32" in MONITORING["prometheus_web_sources"]
        # With a production host's baseline on every node: the second run
        # below shows that no role changes anything twice.
        settings = dict(MONITORING, lb_unlimited_clients=[ACME_IP], host_baseline=True)
        tls = dict(settings, lb_tls=True, lb_domain=DOMAIN, lb_email="ops@sortd.test", lb_acme_server=ACME_SERVER,
                   lb_acme_ca_bundle=str(listener_ca))

        # A plain deployment: HTTP sorts, and the monitoring node probes it.
        # Prometheus's page: a password, and the admin network alone.
        output, _ = playbook(hosts, debs[1], "-e", json.dumps(settings))
        assert sort_at(LB_PORT) == SORTED
        assert PASSWORD not in output
        plain = f"http://{lb.spec.ip}/"
        wait_until(lambda: entry_probe(plain).get("success") == 1, 60, "the plain entry's probe", interval=1)
        page = {"without a password": prometheus_status({}), "with a wrong one": prometheus_status(basic_auth("sortd", "guess")),
                "with it": prometheus_status(basic_auth("sortd", PASSWORD)),
                "from acme-01, outside the admin network":
                    http_status(lab, "acme-01", f"http://{monitoring.spec.ip}:9090/-/ready")}
        print(f"Prometheus's page: {page}")
        assert page == {"without a password": 401, "with a wrong one": 401, "with it": 200,
                        "from acme-01, outside the admin network": "refused"}

        # TLS asked for while the ACME server is down: the run fails, naming
        # the server, before the load balancer's site changes; nginx's
        # configuration stays valid and it goes on serving plain HTTP.
        output, _ = playbook(hosts, debs[1], "-e", json.dumps(tls), check=False)
        assert recap(output)["lb-01"]["failed"] == 1, output[-4000:]
        assert f"certbot got no certificate for {DOMAIN} from the ACME server {ACME_SERVER}" in output, output[-4000:]
        assert lb.run(["nginx", "-t"], check=False).returncode == 0
        assert sort_at(LB_PORT) == SORTED
        assert "Release the deploy lock and stop" in output
        assert not lock_held(lab), "the lock is still held"
        print("ACME server down: " + next(line.strip() for line in output.splitlines()
                                          if "certbot got no certificate" in line)[:400])

        # The server up: the certificate, served with its chain, which
        # verifies against Pebble's root, from outside the cluster; the
        # monitoring node's probe trusts that root alone.
        acme.run(["systemd-run", "--unit", "pebble", "-E", "PEBBLE_VA_NOSLEEP=1", "-E", "PEBBLE_WFE_NONCEREJECT=0",
                  "pebble", "-config", "/etc/pebble/config.json"])
        wait_until(lambda: acme.run(["curl", "-sf", "--cacert", "/etc/pebble/ca.crt", ACME_SERVER],
                                    check=False).returncode == 0, 30, "Pebble's directory")
        acme.sh("curl -sf --cacert /etc/pebble/ca.crt https://127.0.0.1:15000/roots/0 > /root/pebble-root.pem")
        pebble_root = tmp_path / "pebble-root.pem"
        pebble_root.write_text(acme.run(["cat", "/root/pebble-root.pem"]).stdout)
        tls["blackbox_exporter_ca_bundle"] = str(pebble_root)
        started = time.monotonic()
        output, took = playbook(hosts, debs[1], "-e", json.dumps(tls))

        def served() -> tuple[str, str]:
            """The sort over HTTPS, verified against Pebble's root; and the
            served certificate's serial."""
            sorted_ = acme.run(["curl", "-sS", "--cacert", "/root/pebble-root.pem", f"https://{DOMAIN}/",
                                "--data-binary", SORT_BODY.decode()], check=False)
            serial = acme.sh(f"openssl s_client -connect {DOMAIN}:443 -servername {DOMAIN} </dev/null 2>/dev/null "
                             "| openssl x509 -noout -serial")
            return sorted_.stdout + sorted_.stderr, serial.strip()

        answer, first = served()
        assert answer == SORTED, answer
        print(f"first certificate from Pebble: the run took {took:.1f}s ({time.monotonic() - started:.1f}s); {first}")
        entry = f"https://{DOMAIN}/"
        wait_until(lambda: entry_probe(entry).get("success") == 1, 60, "the HTTPS entry's probe", interval=1)
        print(f"the entry probed over HTTPS from mon-01: {entry_probe(entry)}")

        # A second run asks for no new certificate and changes nothing, on
        # any node.
        output, took = playbook(hosts, debs[1], "-e", json.dumps(tls))
        assert all(counts["changed"] == 0 for counts in recap(output).values()), output[-4000:]
        assert served() == (SORTED, first)
        print(f"second run: changed=0 in {took:.1f}s, the same certificate")

        # A renewal by certbot's own unit (as its timer starts it, with the
        # trust the role gave it), forced, under HTTPS load from outside:
        # the deploy hook reloads nginx, the new certificate is served, and
        # no request fails.
        acme.run(["systemd-run", "--unit", "load", "-p", "StandardOutput=file:/root/load.json",
                  "python3", "/root/load.py", f"https://{DOMAIN}/", "--cafile", "/root/pebble-root.pem",
                  "--rate", str(LOAD_RATE), "--max-seconds", "120", "--max-requests", "100000",
                  "--stop-file", "/root/stop-load", "--ready-file", "/root/load-ready", "--resend-on-close"])
        wait_until(lambda: acme.run(["test", "-e", "/root/load-ready"], check=False).returncode == 0, 30,
                   "the load loop's first answer")
        lb.sh("echo force-renewal = True >> /etc/letsencrypt/cli.ini")
        try:
            renewed = lb.run(["systemctl", "start", "certbot.service"], check=False)
        finally:
            lb.sh("sed -i '/^force-renewal/d' /etc/letsencrypt/cli.ini")
        time.sleep(3)
        acme.run(["touch", "/root/stop-load"])
        wait_until(lambda: acme.run(["systemctl", "is-active", "load"], check=False).stdout.strip() != "active",
                   60, "the load loop's end")
        load = json.loads(acme.run(["cat", "/root/load.json"]).stdout)
        answer, second = served()
        journal = lb.run(["journalctl", "-u", "certbot", "-n", "20", "--no-pager"]).stdout
        print(f"renewal under load: {load['requests']} requests over HTTPS, {load['failed']} failed "
              f"({load['failure_kinds']}), {load['resent']} sent again on a new connection after nginx's reload "
              f"closed their kept-alive one; {first} -> {second}")
        assert renewed.returncode == 0, journal
        assert answer == SORTED and second != first, (answer, first, second, journal)
        assert load["failed"] == 0 and load["requests"] > 100, load

        # No alert so far, nor any notice: every failure above was the
        # deployment's, and the entry kept answering.
        assert firing_alerts(PASSWORD) == set() and notices(monitoring) == []
        # The load balancer's nginx stops: the entry's alert reaches the
        # webhook, naming the entry; nginx back, the resolved notice.
        lb.run(["systemctl", "stop", "nginx"])
        stopped = time.monotonic()
        try:
            wait_until(lambda: notices(monitoring), 120, "a notice at the webhook", interval=1)
            noticed = time.monotonic() - stopped
            assert said(notices(monitoring)) == [("firing", "SortdEntryDown", entry)], notices(monitoring)
        finally:
            lb.run(["systemctl", "start", "nginx"])
        back = time.monotonic()
        wait_until(lambda: len(notices(monitoring)) > 1, 120, "the resolved notice", interval=1)
        resolved = time.monotonic() - back
        assert said(notices(monitoring)) == [("firing", "SortdEntryDown", entry), ("resolved", "SortdEntryDown", entry)]
        print(f"nginx stopped on lb-01: SortdEntryDown's notice reached the webhook {noticed:.1f}s later; "
              f"nginx started again: the resolved notice {resolved:.1f}s later")
        # for: 1 min, a probe and an evaluation every 15 s, group_wait 5 s.
        assert noticed <= 60 + 15 + 15 + 5 + 10
