#!/usr/bin/env python3
"""Records SMPP 3.4 sessions with tests/sms/smsc.pl (Perl Net::SMPP 1.19).

usage: python3 tests/data/smpp/capture.py   (from the repository root; needs
libnet-smpp-perl). For each session NAME it writes NAME.from-smsc.bin (every
byte the SMSC sent, in order) and NAME.to-smsc.bin (every byte this ESME
sent). The ESME side is hand-encoded here so the SMSC's answers come from an
independent SMPP implementation; nothing is altered after capture.
"""
import os, socket, struct, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
SMSC = os.path.join(HERE, "..", "..", "sms", "smsc.pl")


def cstr(s):
    return s.encode() + b"\0"


def pdu(cmd, seq, body=b"", status=0):
    return struct.pack(">IIII", 16 + len(body), cmd, status, seq) + body


def bind(cmd, seq, system_id, password):
    return pdu(cmd, seq, cstr(system_id) + cstr(password) + cstr("") + bytes([0x34, 0, 0]) + cstr(""))


def submit(seq, src, dst, text, dc=0, rd=1, tlvs=b""):
    body = (cstr("") + bytes([1, 1]) + cstr(src) + bytes([1, 1]) + cstr(dst)
            + bytes([0, 0, 0]) + cstr("") + cstr("") + bytes([rd, 0, dc, 0, len(text)]) + text + tlvs)
    return pdu(0x04, seq, body)


class Session:
    def __init__(self, name, password=None):
        self.name, self.rx, self.tx = name, bytearray(), bytearray()
        env = dict(os.environ)
        if password:
            env["SMSC_PASSWORD"] = password
        port = 20000 + os.getpid() % 20000
        self.smsc = subprocess.Popen(["perl", SMSC, str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)
        assert self.smsc.stdout.readline().startswith("READY")
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)

    def send(self, data):
        self.tx += data
        self.sock.sendall(data)

    def read_pdu(self):
        head = self._exact(4)
        (length,) = struct.unpack(">I", head)
        rest = self._exact(length - 4)
        cmd, status, seq = struct.unpack(">III", rest[:12])
        return cmd, status, seq, rest[12:]

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            self.rx += chunk
            out += chunk
        return out

    def mo(self, line):
        self.smsc.stdin.write(line + "\n")
        self.smsc.stdin.flush()

    def close(self):
        self.sock.close()
        self.smsc.terminate()
        self.smsc.wait()
        for suffix, data in (("from-smsc", self.rx), ("to-smsc", self.tx)):
            with open(os.path.join(HERE, f"{self.name}.{suffix}.bin"), "wb") as f:
                f.write(data)


def receipt_flow():
    s = Session("bind-submit-receipt")
    s.send(bind(0x09, 1, "ivm", "secret")); s.read_pdu()
    s.send(submit(2, "1001", "4915550001", b"Hello SMPP")); s.read_pdu()
    cmd, _, seq, _ = s.read_pdu()  # the receipt
    s.send(pdu(0x80000005, seq, cstr("")))
    s.send(pdu(0x15, 3)); s.read_pdu()
    s.send(pdu(0x06, 4)); s.read_pdu()
    s.close()


def refusals():
    s = Session("refused-submit-and-undeliverable")
    s.send(bind(0x09, 1, "ivm", "secret")); s.read_pdu()
    s.send(submit(2, "1001", "0001234", b"to nowhere")); s.read_pdu()
    s.send(submit(3, "1001", "9995550001", b"undeliverable")); s.read_pdu()
    cmd, _, seq, _ = s.read_pdu()
    s.send(pdu(0x80000005, seq, cstr("")))
    s.send(pdu(0x0103, 4, b"\x00"))  # data_sm: not handled by the SMSC -> generic_nack
    s.read_pdu()
    s.send(pdu(0x06, 5)); s.read_pdu()
    s.close()


def ucs2_and_mo():
    s = Session("ucs2-and-mo")
    s.send(bind(0x09, 1, "ivm", "secret")); s.read_pdu()
    s.send(submit(2, "1001", "4915550002", "Grüße €".encode("utf-16-be"), dc=8, rd=0)); s.read_pdu()
    s.mo("MO 4915550003 1002 call me back")
    cmd, _, seq, _ = s.read_pdu()
    s.send(pdu(0x80000005, seq, cstr("")))
    s.send(pdu(0x06, 3)); s.read_pdu()
    s.close()


def bad_password():
    s = Session("bind-refused", password="right")
    s.send(bind(0x02, 1, "ivm", "wrong")); s.read_pdu()
    s.close()


if __name__ == "__main__":
    for flow in (receipt_flow, refusals, ucs2_and_mo, bad_password):
        flow()
        time.sleep(0.2)
    print("ok")
