#!/usr/bin/env python3
"""Split a loopback pcap (tcpdump -i lo) into per-connection byte streams.

usage: pcap_streams.py CAPTURE.pcap SERVER_PORT OUT_PREFIX

Writes OUT_PREFIX.<n>.requests.bin (client -> server) and OUT_PREFIX.<n>.responses.bin
(server -> client) for each TCP connection to SERVER_PORT, in connection order.
Reassembles by sequence number; retransmissions are written once.
"""
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        header = f.read(24)
        magic = struct.unpack("<I", header[:4])[0]
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            sys.exit(f"{path}: not a little-endian pcap file")
        linktype = struct.unpack("<I", header[20:24])[0]
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            _, _, incl, _ = struct.unpack("<IIII", rec)
            data = f.read(incl)
            if linktype == 1:  # Ethernet
                data = data[14:]
            elif linktype == 113:  # Linux cooked
                data = data[16:]
            yield data


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conns = {}  # (client_port) -> {"order": n, "c2s": {seq: bytes}, "s2c": {...}}
    for ip in packets(path):
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        offset = (tcp[12] >> 4) * 4
        flags = tcp[13]
        payload = tcp[offset:]
        if dport == port:
            key, direction = sport, "c2s"
        elif sport == port:
            key, direction = dport, "s2c"
        else:
            continue
        conn = conns.setdefault(key, {"order": len(conns), "c2s": {}, "s2c": {}, "isn": {}})
        if flags & 0x02:  # SYN: data starts at seq + 1
            conn["isn"][direction] = seq + 1
            continue
        if payload:
            conn[direction].setdefault(seq, payload)
    for _key, conn in sorted(conns.items(), key=lambda kv: kv[1]["order"]):
        for direction, name in (("c2s", "requests"), ("s2c", "responses")):
            segs = conn[direction]
            if not segs:
                continue
            start = conn["isn"].get(direction, min(segs))
            out = bytearray()
            expected = start
            for seq in sorted(segs):
                data = segs[seq]
                if seq + len(data) <= expected:
                    continue
                out += data[max(0, expected - seq):]
                expected = seq + len(data)
            with open(f"{prefix}.{conn['order']}.{name}.bin", "wb") as f:
                f.write(out)
            print(f"{prefix}.{conn['order']}.{name}.bin {len(out)} bytes")


if __name__ == "__main__":
    main()
