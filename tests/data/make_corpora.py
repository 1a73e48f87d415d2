#!/usr/bin/env python3
"""Writes the hand-made decoder inputs: tests/data/<codec>/malformed/*.bin
(hostile or broken input: truncated, oversized lengths, bad framing) and
tests/data/<codec>/synthetic/*.bin (rare but valid wire cases no capture
shows). Deterministic; run from anywhere, then
`UPDATE_EXPECT=1 cargo test --test codec_transcripts` and review the
`.decoded` files. Limits mirror the decoders' caps (src/proto/*.rs,
src/notify/smpp/pdu.rs)."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
AGI_MAX_LINE = 8 * 1024
AGI_MAX_ENV = 16 * 1024
AMI_MAX_LINE = 16 * 1024
AMI_MAX_MESSAGE = 256 * 1024
AMI_MAX_FIELDS = 512
ESL_MAX_HEADER_BLOCK = 64 * 1024
SMPP_MAX_PDU = 16 * 1024


def write(codec, kind, name, data):
    d = os.path.join(HERE, codec, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name + ".bin"), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def capture(codec, name):
    with open(os.path.join(HERE, codec, name), "rb") as f:
        return f.read()


# --- FastAGI -------------------------------------------------------------
ENV = b"agi_channel: Local/x;2\nagi_uniqueid: 1.1\n\n"
write("agi", "malformed", "env-line-too-long-unterminated", b"agi_channel: " + b"a" * (AGI_MAX_LINE + 1))
write("agi", "malformed", "env-line-too-long", b"agi_channel: " + b"a" * (AGI_MAX_LINE + 1) + b"\n\n")
write("agi", "malformed", "reply-line-too-long", ENV + b"200 result=1 (" + b"x" * AGI_MAX_LINE)
write("agi", "malformed", "tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n")
write("agi", "malformed", "nul-bytes", b"\x00\x00\x00\x00\n\n")
write("agi", "malformed", "binary-name", b"\xff\xfe\xfd: x\n\n")
write("agi", "malformed", "http-request", b"GET /ivm?target=1002 HTTP/1.1\r\nHost: x\r\n\r\n")
write("agi", "malformed", "reply-binary", ENV + b"\x00\x01\x02\n")
write("agi", "malformed", "reply-all-ff", ENV + b"\xff\xff\xff\xff\n")
write("agi", "malformed", "reply-no-code", ENV + b"OK\n")
write("agi", "malformed", "env-without-blank-line", b"agi_channel: Local/x;2\nagi_uniqueid: 1.1\n200 result=0\n")
long_env = b"agi_channel: Local/x;2\n"
while len(long_env) <= AGI_MAX_ENV:
    long_env += b"agi_x: " + b"v" * 1000 + b"\n"
write("agi", "malformed", "env-never-ends", long_env)
usage = ENV + b"520-Invalid command syntax.  Proper usage follows:\n"
while len(usage) < 64 * 1024:
    usage += b"usage text, on and on and on and on\n"
write("agi", "malformed", "usage-never-ends", usage)
write("agi", "malformed", "truncated-env", capture("agi", "session.from-asterisk.bin")[:300])

# --- AMI -----------------------------------------------------------------
BANNER = "Asterisk Call Manager/11.0.0\r\n"
write("ami", "malformed", "not-ami", "HTTP/1.1 400 Bad Request\r\n\r\n")
write("ami", "malformed", "line-too-long", f"{BANNER}Event: X\r\nK: {'x' * AMI_MAX_LINE}\r\n\r\n")
write("ami", "malformed", "too-many-fields", f"{BANNER}Event: X\r\n" + "K: v\r\n" * AMI_MAX_FIELDS + "\r\n")
write("ami", "malformed", "message-too-large",
      f"{BANNER}Event: X\r\n" + ("K: " + "v" * 1000 + "\r\n") * (AMI_MAX_MESSAGE // 1000 + 1) + "\r\n")
write("ami", "malformed", "no-newline-ever", BANNER + "y" * (AMI_MAX_LINE + 2))
for name, message in [("no-colon", "Event: X\r\ngarbage\r\n\r\n"),
                      ("empty-key", "Event: X\r\n: value\r\n\r\n"),
                      ("neither-response-nor-event", "Action: Login\r\n\r\n")]:
    write("ami", "malformed", name, f"{BANNER}{message}Event: After\r\n\r\n")
write("ami", "malformed", "truncated-message", capture("ami", "login-ok.from-asterisk.bin")[:60])
write("ami", "synthetic", "latin1-caller-name",
      (BANNER + "Event: Newchannel\r\nCallerIDName: Ren").encode() + b"\xe9\r\n\r\n")

# --- ESL -----------------------------------------------------------------
plain = capture("esl", "inbound-events-plain.from-fs.bin")
# The first plain event frame of capture 3, its Content-Length made huge.
start = plain.index(b"Content-Length: ", plain.index(b"text/event-plain") - 40)
head_end = plain.index(b"\n\n", start)
head = plain[start:head_end].split(b"\n")
head[0] = b"Content-Length: 8388609"
write("esl", "malformed", "oversize-content-length", b"\n".join(head) + b"\n\n")
for i, value in enumerate(["-41", "4x", "", "0x29", " ", "99999999999999999999999999",
                           "18446744073709551616", "4294967296"]):
    write("esl", "malformed", f"bad-content-length-{i + 1}",
          f"Content-Type: api/response\nContent-Length: {value}\n\n+OK\n")
write("esl", "malformed", "non-utf8-header", b"Content-Type: command/reply\nReply-Text: +OK \xc3\x28\n\n")
body = b"Event-Name: X\xff\n\n"
write("esl", "malformed", "non-utf8-plain-event",
      b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body
      + capture("esl", "inbound-auth-ok.from-fs.bin"))
write("esl", "malformed", "missing-colon", "Content-Type: command/reply\nReply-Text +OK\n\n")
pad = "X-Padding: " + "a" * 54 + "\n"
write("esl", "malformed", "header-block-never-ends", pad * (ESL_MAX_HEADER_BLOCK // len(pad) + 2))
corrupt = b""
for content_type, b in [("text/event-json", '{"Event-Name":"DTMF",'),
                        ("text/event-xml", "<event><headers><A>1</B></headers></event>"),
                        ("text/event-plain", "Event-Name: BACKGROUND_JOB\nContent-Length: 100\n\n+OK\n")]:
    corrupt += f"Content-Length: {len(b)}\nContent-Type: {content_type}\n\n{b}".encode()
write("esl", "malformed", "corrupt-events-then-a-session", corrupt + capture("esl", "inbound-auth-ok.from-fs.bin"))
write("esl", "malformed", "garbage-after-a-session",
      capture("esl", "inbound-auth-ok.from-fs.bin") + b"Content-Type: api/resp")
write("esl", "malformed", "truncated-body", plain[:2000])
write("esl", "synthetic", "rude-rejection",
      "Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n")
write("esl", "synthetic", "non-utf8-api-body", b"Content-Type: api/response\nContent-Length: 4\n\n+OK\xff")
body = "Event-Name: X\nCaller-Caller-ID-Name: Jos%E9\n\n"
write("esl", "synthetic", "percent-encoded-latin1",
      f"Content-Length: {len(body)}\nContent-Type: text/event-plain\n\n{body}")

# --- SMPP ----------------------------------------------------------------
def pdu(cmd, seq, body=b"", status=0, length=None):
    return struct.pack(">IIII", 16 + len(body) if length is None else length, cmd, status, seq) + body

write("smpp", "malformed", "length-too-large", bytes.fromhex("01000000 00000015"))
write("smpp", "malformed", "length-too-small", bytes.fromhex("00000008 00000015"))
write("smpp", "malformed", "length-just-over-the-cap", pdu(0x15, 1, length=SMPP_MAX_PDU + 1))
# 16 fixed fields, then sm_length 255 with nothing after it.
write("smpp", "malformed", "sm-length-past-the-end", pdu(0x05, 1, bytes(16) + b"\xff"))
# sm_length 0, then one stray byte where a TLV header would start.
write("smpp", "malformed", "stray-byte-after-short-message", pdu(0x05, 1, bytes(17) + b"\xff"))
write("smpp", "malformed", "system-id-without-nul", pdu(0x80000009, 1, b"a" * 20))
write("smpp", "malformed", "tlv-past-the-end",
      pdu(0x05, 1, bytes(17) + b"\x00" + b"\x04\x27\x00\x09\x02"))
write("smpp", "malformed", "truncated-pdu", capture("smpp", "bind-submit-receipt.from-smsc.bin")[:40])
write("smpp", "synthetic", "bind-resp-with-tlv-and-bodyless-error",
      bytes.fromhex("0000001e800000090000000000000001" "7065726c736d736300" "0210000134"
                    "00000010800000040000000b00000002"))
print("ok")
