"""What a run would lower of a node's security (role posture).

    {{ recorded | sortd_lowered(new, confirmed) }}

`recorded` and `new` map a setting to its value: lb_tls and lb_hsts
(booleans, or None on a node that is no load balancer) and the firewall's
sources, firewall_ssh_cidrs and firewall_service_sources (IPv4 networks).
Returns one {setting, old, new} per setting that is lowered and not in
`confirmed` (names, comma-separated): a flag turned off, or sources
widened (a network that no recorded one contains).
"""

import ipaddress

FLAGS = ("lb_tls", "lb_hsts")
SOURCES = ("firewall_ssh_cidrs", "firewall_service_sources")


def _widened(old: list, new: list) -> bool:
    before = [ipaddress.ip_network(net, strict=False) for net in old]
    return any(not any(network.subnet_of(known) for known in before)
               for network in (ipaddress.ip_network(net, strict=False) for net in new))


def sortd_lowered(recorded: dict, new: dict, confirmed: str = "") -> list:
    allowed = {name.strip() for name in str(confirmed or "").split(",") if name.strip()}
    lowered = []
    for name in FLAGS:
        if recorded.get(name) is True and new.get(name) is not True:
            lowered.append({"setting": name, "old": recorded[name], "new": new.get(name)})
    for name in SOURCES:
        if name in recorded and _widened(recorded[name], new.get(name, ["0.0.0.0/0"])):
            lowered.append({"setting": name, "old": recorded[name], "new": new.get(name)})
    return [change for change in lowered if change["setting"] not in allowed]


class FilterModule:
    def filters(self):
        return {"sortd_lowered": sortd_lowered}
