#!/usr/bin/env python3
"""A subscriber that never reads, fed large messages: the broker's resident memory before and at
its peak (BENCHMARKS.md, "Memory held for slow subscribers").

Usage: stalled_subscriber.py PORT BROKER_PID [--messages 400] [--bytes 524288] [--qos 0]

Any MQTT 3.1.1 broker on 127.0.0.1:PORT; BROKER_PID is read from /proc for VmRSS.
"""
import argparse
import socket
import struct
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS line")


def varint(value):
    out = b""
    while True:
        byte, value = value % 128, value // 128
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def packet(header, body):
    return bytes([header]) + varint(len(body)) + body


def string(text):
    return struct.pack(">H", len(text)) + text


def connect(port, client_id):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(packet(0x10, string(b"MQTT") + bytes([4, 2, 0, 60]) + string(client_id)))
    if sock.recv(4)[:1] != b"\x20":
        raise RuntimeError("no CONNACK")
    return sock


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("pid", type=int)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--bytes", type=int, default=512 * 1024)
    parser.add_argument("--qos", type=int, choices=[0, 1], default=0)
    args = parser.parse_args()

    stalled = connect(args.port, b"stalled")
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(packet(0x82, struct.pack(">H", 1) + string(b"big") + bytes([args.qos])))
    publisher = connect(args.port, b"publisher")
    time.sleep(0.5)  # the SUBACK is in; nothing here waits on the broker's output
    before = peak = rss_mib(args.pid)
    payload = b"x" * args.bytes
    for n in range(args.messages):
        if args.qos:
            body = string(b"big") + struct.pack(">H", n % 60000 + 1) + payload
            publisher.sendall(packet(0x32, body))
        else:
            publisher.sendall(packet(0x30, string(b"big") + payload))
        peak = max(peak, rss_mib(args.pid))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        peak = max(peak, rss_mib(args.pid))
        time.sleep(0.05)
    print(
        f"QoS {args.qos}: {args.messages} x {args.bytes} B to a subscriber that never reads: "
        f"VmRSS {before} MiB before, {peak} MiB at the peak"
    )


if __name__ == "__main__":
    main()
