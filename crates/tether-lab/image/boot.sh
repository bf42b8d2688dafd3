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
if [ -x /usr/lib/tether-lab/stage2 ]; then
    /usr/lib/tether-lab/stage2
fi
exit 0
