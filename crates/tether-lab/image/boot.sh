#!/bin/sh
# Runs at every boot of a lab host, before sshd.
#
# A real machine's network and firewall reset when it reboots; a lab host's
# live in a network namespace the lab owns and would survive the container's
# reboot, so reset them here to the lab's address first. Then hand over to the
# fixture's stage-2 emulation, which activates the emulated boot default (and
# so may move the host to that system's address, as a real reboot would).
set -u
. /etc/tether-lab/network
nft flush ruleset 2>/dev/null || true
ip link set lo up
ip link set "$IFACE" up
ip -4 addr flush dev "$IFACE"
ip addr add "$ADDRESS/$PREFIX" dev "$IFACE"
ip route replace default via "$GATEWAY" dev "$IFACE"
# The lab's IPv6 address: fixture systems manage IPv4 only.
if [ -n "${ADDRESS6:-}" ]; then
    ip -6 addr flush dev "$IFACE" scope global
    ip -6 addr add "$ADDRESS6/128" dev "$IFACE" nodad
    ip -6 route replace "$GATEWAY6" dev "$IFACE"
    ip -6 route replace default via "$GATEWAY6" dev "$IFACE"
fi
# The deploy user logs in with the lab's deployer key, as root does.
if [ -d /home/deploy ] && [ -f /root/.ssh/authorized_keys ]; then
    install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
    install -m 600 -o deploy -g deploy /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys
fi
if [ -x /usr/lib/tether-lab/stage2 ]; then
    /usr/lib/tether-lab/stage2
fi
exit 0
