"""TLS from an ACME server, for real: the load balancer gets its certificate
over HTTP-01 with certbot's nginx plugin, as it would from Let's Encrypt,
from Pebble (Let's Encrypt's test server, Debian's package) on a lab host
of its own with a certificate of its own (lb_acme_server, lb_acme_ca_bundle).
One lab, one story: a plain deployment; TLS asked for while the ACME server
is down (the run fails naming it, nginx keeps serving); the server up (the
certificate, its chain verified against Pebble's root from outside the
cluster); a second run that asks for nothing; a renewal by certbot's own
unit under HTTPS load."""

import json
import shlex
import time
from pathlib import Path

from clusters import LB_PORT, LOAD_RATE, ROOT, SORTED, cluster_up, lock_held, playbook, recap, sort_at
from testlab import HostSpec
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
]}
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
BODY = '{"x1":"[5,3,9]","x2":"4"}'


def test_the_load_balancer_gets_renews_and_keeps_its_certificate_from_an_acme_server(debs, tmp_path):
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(CLUSTER))
    with cluster_up(cluster, "acme") as (lab, hosts, _):
        acme = lab.boot(HostSpec("acme-01", ACME_IP))
        acme.run(["apt-get", "update", "-q"])
        acme.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "pebble"])
        acme.sh(LISTENER)
        acme.sh(f"echo {shlex.quote(json.dumps(PEBBLE_CONFIG))} > /etc/pebble/config.json; "
                f"echo '{lab.hosts['lb-01'].spec.ip} {DOMAIN}' >> /etc/hosts")
        listener_ca = tmp_path / "pebble-listener-ca.crt"
        listener_ca.write_text(acme.run(["cat", "/etc/pebble/ca.crt"]).stdout)
        acme.put(ROOT / "testlab/load.py", "/root/load.py")
        lb = lab.hosts["lb-01"]
        tls = ["-e", json.dumps({"lb_tls": True, "lb_domain": DOMAIN, "lb_email": "ops@sortd.test",
                                 "lb_acme_server": ACME_SERVER, "lb_acme_ca_bundle": str(listener_ca),
                                 "lb_unlimited_clients": [ACME_IP]})]

        # A plain deployment: HTTP sorts.
        playbook(hosts, debs[1])
        assert sort_at(LB_PORT) == SORTED

        # TLS asked for while the ACME server is down: the run fails, naming
        # the server, before the load balancer's site changes; nginx's
        # configuration stays valid and it goes on serving plain HTTP.
        output, _ = playbook(hosts, debs[1], *tls, check=False)
        assert recap(output)["lb-01"]["failed"] == 1, output[-4000:]
        assert f"certbot got no certificate for {DOMAIN} from the ACME server {ACME_SERVER}" in output, output[-4000:]
        assert lb.run(["nginx", "-t"], check=False).returncode == 0
        assert sort_at(LB_PORT) == SORTED
        assert "Release the deploy lock and stop" in output
        assert not lock_held(lab), "the lock is still held"
        print("ACME server down: " + next(line.strip() for line in output.splitlines()
                                          if "certbot got no certificate" in line)[:400])

        # The server up: the certificate, served with its chain, which
        # verifies against Pebble's root, from outside the cluster.
        acme.run(["systemd-run", "--unit", "pebble", "-E", "PEBBLE_VA_NOSLEEP=1", "-E", "PEBBLE_WFE_NONCEREJECT=0",
                  "pebble", "-config", "/etc/pebble/config.json"])
        wait_until(lambda: acme.run(["curl", "-sf", "--cacert", "/etc/pebble/ca.crt", ACME_SERVER],
                                    check=False).returncode == 0, 30, "Pebble's directory")
        started = time.monotonic()
        output, took = playbook(hosts, debs[1], *tls)
        acme.sh("curl -sf --cacert /etc/pebble/ca.crt https://127.0.0.1:15000/roots/0 > /root/pebble-root.pem")

        def served() -> tuple[str, str]:
            """The sort over HTTPS, verified against Pebble's root; and the
            served certificate's serial."""
            sorted_ = acme.run(["curl", "-sS", "--cacert", "/root/pebble-root.pem", f"https://{DOMAIN}/",
                                "--data-binary", BODY], check=False)
            serial = acme.sh(f"openssl s_client -connect {DOMAIN}:443 -servername {DOMAIN} </dev/null 2>/dev/null "
                             "| openssl x509 -noout -serial")
            return sorted_.stdout + sorted_.stderr, serial.strip()

        answer, first = served()
        assert answer == SORTED, answer
        print(f"first certificate from Pebble: the run took {took:.1f}s ({time.monotonic() - started:.1f}s); {first}")

        # A second run asks for no new certificate and changes nothing.
        output, took = playbook(hosts, debs[1], *tls)
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
