#!/usr/bin/env python3
"""Writes one large zone of static records twice: as a geolb TOML zone and as an RFC 1035
master file, with the same records (by default 555,849 A and 185,281 TXT, 741,130 in all,
plus the apex SOA and NS).

    benches/bigzone/gen.py OUT_DIR [--a N] [--txt N] [--origin NAME]

writes OUT_DIR/big.test.toml, OUT_DIR/big.test.zone (the same zone), and
OUT_DIR/static.zone (the records without SOA and NS, for a TOML zone's `include`).
Deterministic: the same arguments write the same bytes.
"""
import argparse
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--a", type=int, default=555_849)
    ap.add_argument("--txt", type=int, default=185_281)
    ap.add_argument("--origin", default="big.test")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    origin = args.origin.rstrip(".")

    def records():
        # Host i: an A record; every third host also a TXT record, until the counts are met.
        txt_left = args.txt
        for i in range(args.a):
            name = f"h{i}.s{i % 997}"
            addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            yield name, "A", addr
            if txt_left and i % 3 == 0:
                txt_left -= 1
                yield name, "TXT", f'"v=spf1 ip4:{addr} -all" "id={i:08x}"'
        i = args.a
        while txt_left:
            txt_left -= 1
            yield f"t{i}", "TXT", f'"filler {i}"'
            i += 1

    soa = f"ns1.{origin}. hostmaster.{origin}. 2026120101 7200 3600 1209600 300"
    with open(os.path.join(args.out, f"{origin}.zone"), "w") as zf, open(
        os.path.join(args.out, "static.zone"), "w"
    ) as sf, open(os.path.join(args.out, f"{origin}.toml"), "w") as tf:
        zf.write(f"$ORIGIN {origin}.\n$TTL 300\n@ IN SOA {soa}\n@ IN NS ns1\n@ IN NS ns2\n")
        zf.write("ns1 IN A 192.0.2.53\nns2 IN A 192.0.2.54\n")
        sf.write(f"$ORIGIN {origin}.\n$TTL 300\n")
        tf.write(
            f'[zone]\norigin = "{origin}"\nttl = 300\nns = ["ns1", "ns2"]\n'
            f'[zone.soa]\nmname = "ns1.{origin}."\nrname = "hostmaster.{origin}."\n'
            f"serial = 2026120101\n\n"
        )
        tf.write('[[records]]\nname = "ns1"\ntype = "A"\ndata = "192.0.2.53"\n\n')
        tf.write('[[records]]\nname = "ns2"\ntype = "A"\ndata = "192.0.2.54"\n\n')
        for name, rtype, data in records():
            line = f"{name} IN {rtype} {data}\n"
            zf.write(line)
            sf.write(line)
            quoted = data.replace("\\", "\\\\").replace('"', '\\"')
            tf.write(f'[[records]]\nname = "{name}"\ntype = "{rtype}"\ndata = "{quoted}"\n\n')


if __name__ == "__main__":
    main()
