#!/usr/bin/env bash
# Capture golden frames from real clients talking to a real server (dnsmasq), for vnproto's tests.
#
# Two network namespaces joined by a veth pair: "srv" runs dnsmasq (DHCP and DNS) on 10.250.0.1/16,
# "cli" runs one client at a time. tcpdump on the server's side of the link writes one pcap per
# client. Needs root, dnsmasq (Debian: dnsmasq-base), tcpdump, dhclient, udhcpc, dhcpcd, dig, arping.
# Nothing outside the two namespaces is touched: every client runs with its own script (no
# resolv.conf writes), its own lease file in a temporary directory, and a fixed host name.
#
# Usage: sudo tests/data/golden/capture.sh [output-directory]   (default: this script's directory)
set -euo pipefail

OUT=$(cd "${1:-$(dirname "$0")}" && pwd)
TAG="vncap$$"
SRV="$TAG-srv"
CLI="$TAG-cli"
VS="${TAG}s"
VC="${TAG}c"
WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
PIDS=()

# KEEP_WORK=1 keeps the temporary directory (dnsmasq log, client output) for debugging a capture.
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for ns in "$CLI" "$SRV"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    rm -f "/var/lib/dhcpcd/$VC.lease" "/var/lib/dhcpcd/$VC"*.lease 2>/dev/null
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# Poll a condition with a deadline instead of sleeping a fixed time.
wait_until() {
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "timed out waiting for $what" >&2
            return 1
        fi
        sleep 0.1
    done
}

in_cli() { ip netns exec "$CLI" "$@"; }
in_srv() { ip netns exec "$SRV" "$@"; }

ip netns add "$SRV"
ip netns add "$CLI"
ip link add "$VS" netns "$SRV" address 02:00:00:00:00:01 type veth peer name "$VC" netns "$CLI" \
    address 02:00:00:00:00:02
in_srv ip link set lo up
in_cli ip link set lo up
in_srv ip link set "$VS" up
in_cli ip link set "$VC" up
in_srv ip addr add 10.250.0.1/16 dev "$VS"
# veth offloads checksums: without this, frames sent by the kernel are captured with the checksum not
# yet filled in. A TAP device delivers complete checksums, so the golden frames should have them too.
in_srv ethtool -K "$VS" tx off >/dev/null
in_cli ethtool -K "$VC" tx off >/dev/null
# No IPv6 on the link: router solicitations and MLD reports would only add noise to the captures.
in_srv sysctl -qw "net.ipv6.conf.$VS.disable_ipv6=1"
in_cli sysctl -qw "net.ipv6.conf.$VC.disable_ipv6=1"

ip netns exec "$SRV" dnsmasq --keep-in-foreground --conf-file=/dev/null --user=root --group=root \
    --interface="$VS" --bind-interfaces --no-resolv --no-hosts --domain=ipop --local=/ipop/ \
    --dhcp-authoritative --dhcp-range=10.250.0.100,10.250.0.200,255.255.0.0,1h \
    --dhcp-option=option:mtu,1400 --dhcp-option=option:router \
    --dhcp-option=option:domain-search,ipop --host-record=alice.ipop,10.250.0.77 \
    --dhcp-leasefile="$WORK/dnsmasq.leases" --pid-file="$WORK/dnsmasq.pid" \
    --log-facility="$WORK/dnsmasq.log" --log-dhcp &
PIDS+=($!)
wait_until "dnsmasq" 10 in_srv sh -c "ss -lun | grep -q ':67 '"

capture_start() {
    # Started directly, not through a shell function, so that $! is tcpdump itself.
    ip netns exec "$SRV" tcpdump -i "$VS" --immediate-mode -U -s 0 -w "$WORK/$1.pcap" 'not ip6' 2>"$WORK/$1.tcpdump" &
    CAPTURE=$!
    PIDS+=("$CAPTURE")
    wait_until "tcpdump for $1" 10 grep -q "listening on" "$WORK/$1.tcpdump"
}

# The end of a capture is marked by an ARP request from the server for 10.250.255.254 (no one has it):
# once tcpdump has written that, every frame before it is in the file, and tcpdump can be stopped.
marker_seen() { tcpdump -nr "$WORK/$1.pcap" 2>/dev/null | grep -q "who-has 10.250.255.254"; }

capture_stop() {
    in_srv ping -c 1 -W 1 10.250.255.254 >/dev/null 2>&1 || true
    wait_until "the end marker in $1" 10 marker_seen "$1"
    kill -TERM "$CAPTURE"
    wait "$CAPTURE" || true
    cp "$WORK/$1.pcap" "$OUT/$1.pcap"
    echo "$1: $(grep -o '[0-9]* packets captured' "$WORK/$1.tcpdump")"
}

has_addr() { in_cli ip -4 addr show dev "$VC" | grep -q "inet 10.250."; }
flush_addr() { in_cli ip -4 addr flush dev "$VC"; }

# A client script that applies the lease to the interface (so renewals and releases can be sent by
# unicast, as they are on a real host) and does nothing else.
cat >"$WORK/udhcpc.sh" <<'EOF'
#!/bin/sh
case "$1" in
    bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
    deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
EOF
cat >"$WORK/dhclient.sh" <<'EOF'
#!/bin/sh
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
    EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$interface" ;;
esac
exit 0
EOF
cat >"$WORK/dhclient.conf" <<'EOF'
send host-name "alpha";
request subnet-mask, broadcast-address, time-offset, routers, domain-name, domain-name-servers,
        domain-search, host-name, interface-mtu;
EOF
printf 'hostname charlie\nclientid\noption domain_name_servers, domain_name, domain_search, interface_mtu\n' \
    >"$WORK/dhcpcd.conf"
chmod +x "$WORK/udhcpc.sh" "$WORK/dhclient.sh"

# --- dhclient: SELECTING, then INIT-REBOOT from its lease file, then RELEASE -------------------------
DHCLIENT=(dhclient -4 -v -cf "$WORK/dhclient.conf" -sf "$WORK/dhclient.sh" -lf "$WORK/dhclient.leases"
    -pf "$WORK/dhclient.pid")
capture_start dhclient
in_cli "${DHCLIENT[@]}" "$VC"
wait_until "dhclient lease" 30 has_addr
in_cli "${DHCLIENT[@]}" -x "$VC"
flush_addr
in_cli "${DHCLIENT[@]}" "$VC"
wait_until "dhclient reboot" 30 has_addr
in_cli "${DHCLIENT[@]}" -r "$VC"
capture_stop dhclient
flush_addr

# --- udhcpc: SELECTING, RENEWING on SIGUSR1, RELEASE on SIGUSR2 --------------------------------------
capture_start udhcpc
ip netns exec "$CLI" udhcpc -f -i "$VC" -s "$WORK/udhcpc.sh" -x hostname:bravo -V vnproto-golden -t 5 -T 2 \
    >"$WORK/udhcpc.out" 2>&1 &
UDHCPC=$!
PIDS+=("$UDHCPC")
wait_until "udhcpc lease" 30 has_addr
kill -USR1 "$UDHCPC"
wait_until "udhcpc renewal" 30 sh -c "[ \$(grep -c 'lease of' '$WORK/udhcpc.out') -ge 2 ]"
kill -USR2 "$UDHCPC"
wait_until "udhcpc release" 30 sh -c "! ip netns exec '$CLI' ip -4 addr show dev '$VC' | grep -q inet"
kill "$UDHCPC"
wait "$UDHCPC" || true
capture_stop udhcpc
flush_addr

# --- dhcpcd: SELECTING (with its ARP probes of the offered address), then RELEASE --------------------
capture_start dhcpcd
ip netns exec "$CLI" dhcpcd -4 -B -f "$WORK/dhcpcd.conf" -c /bin/true -t 30 "$VC" >"$WORK/dhcpcd.out" 2>&1 &
DHCPCD=$!
PIDS+=("$DHCPCD")
wait_until "dhcpcd lease" 40 has_addr
in_cli dhcpcd -4 -k "$VC" >/dev/null 2>&1 || true
wait "$DHCPCD" || true
capture_stop dhcpcd
flush_addr

# --- dig: queries of every kind the DNS responder distinguishes ---------------------------------------
in_cli ip addr add 10.250.0.50/16 dev "$VC"
capture_start dig
for args in "alice.ipop A" "alice.ipop AAAA" "C250005005.ipop A" "nobody.ipop A" "-x 10.250.5.5" \
    "+noedns alice.ipop A" "+bufsize=512 alice.ipop A" "example.com A" "+norecurse ipop SOA"; do
    # shellcheck disable=SC2086
    in_cli dig @10.250.0.1 +tries=1 +time=2 $args >/dev/null || true
done
capture_stop dig

# --- arping: a request answered by the server's kernel, a probe (sender 0.0.0.0), an announcement ---
capture_start arping
in_cli arping -c 2 -i "$VC" 10.250.0.1 >/dev/null
in_cli arping -c 1 -0 -i "$VC" 10.250.0.99 >/dev/null || true
in_cli arping -c 1 -U -i "$VC" -S 10.250.0.50 10.250.0.50 >/dev/null || true
capture_stop arping

echo "pcaps written to $OUT"
