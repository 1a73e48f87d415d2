#!/usr/bin/env python3
"""Capture AMI sessions from the real Asterisk 22 (tests/asterisk/run-asterisk.sh).

Run inside a private network namespace so the ports are ours alone:
    unshare -rn sh -c 'ip link set lo up && python3 tests/data/ami/capture.py OUTDIR'
Each capture NAME writes NAME.from-asterisk.bin (every byte Asterisk sent on
that connection) and NAME.to-asterisk.txt (every byte we sent). Existing files
are never overwritten.
"""
import os, socket, subprocess, sys, tempfile, time, signal

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
OUT = sys.argv[1] if len(sys.argv) > 1 else HERE
AMI_PORT = 5038
T0 = time.monotonic()


def log(*a):
    print(f"[{time.monotonic() - T0:7.3f}]", *a, file=sys.stderr, flush=True)


class Session:
    def __init__(self, name):
        self.name = name
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", AMI_PORT), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.rx = bytearray()
        self.tx = bytearray()
        self.eof = False

    def send(self, *lines):
        data = ("".join(l + "\r\n" for l in lines) + "\r\n").encode()
        self.tx += data
        self.sock.sendall(data)

    def pump(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        if not chunk:
            self.eof = True
        self.rx += chunk

    def until(self, needle, timeout=10.0, count=1):
        needle = needle.encode() if isinstance(needle, str) else needle
        deadline = time.monotonic() + timeout
        while self.rx.count(needle) < count:
            if self.eof or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {needle!r} in {bytes(self.rx)!r}")
            self.pump(max(0.01, deadline - time.monotonic()))

    def quiet(self, secs):
        deadline = time.monotonic() + secs
        while not self.eof and time.monotonic() < deadline:
            self.pump(max(0.01, deadline - time.monotonic()))

    def until_eof(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no EOF")
            self.pump(max(0.01, deadline - time.monotonic()))

    def logoff(self):
        self.send("Action: Logoff", "ActionID: bye")
        self.until_eof()

    def save(self):
        for suffix, data in ((".from-asterisk.bin", self.rx), (".to-asterisk.txt", self.tx)):
            path = os.path.join(OUT, self.name + suffix)
            with open(path, "xb") as f:
                f.write(data)
        log(f"saved {self.name}: {len(self.rx)} bytes from asterisk")
        self.sock.close()


def login(s, events=None, action_id="login"):
    lines = ["Action: Login", f"ActionID: {action_id}", "Username: ivm", "Secret: ivm"]
    if events is not None:
        lines.append(f"Events: {events}")
    s.send(*lines)
    s.until("Message: Authentication accepted\r\n\r\n")


def start_asterisk(run):
    """Render the test configs with run-asterisk.sh, then run Asterisk ourselves
    so that the data dir also links the XML documentation: without it Asterisk
    22 exits at boot with "Stasis initialization failed"."""
    rootfs = os.environ.get("IVM_ROOTFS") or os.path.expanduser("~/.cache/ivm/rootfs-sid")
    env = dict(os.environ, IVM_ROOTFS=rootfs, IVM_AMI_PORT=str(AMI_PORT), IVM_SIP_PORT="5060",
               IVM_AGI_PORT="4573", IVM_RENDER_ONLY="1")
    subprocess.run([os.path.join(REPO, "tests/asterisk/run-asterisk.sh"), run], env=env, check=True)
    doc = os.path.join(run, "data", "documentation")
    if not os.path.exists(doc):
        os.symlink(os.path.join(rootfs, "usr/share/asterisk/documentation"), doc)
    libs = f"{rootfs}/usr/lib/x86_64-linux-gnu:{rootfs}/lib/x86_64-linux-gnu"
    t = time.monotonic()
    proc = subprocess.Popen([f"{rootfs}/lib64/ld-linux-x86-64.so.2", "--library-path", libs,
                             f"{rootfs}/usr/sbin/asterisk", "-f", "-C", f"{run}/etc/asterisk.conf"],
                            stdout=open(os.path.join(run, "console.log"), "ab"), stderr=subprocess.STDOUT)
    return proc, t


def main():
    run = tempfile.mkdtemp(prefix="ivm-ami-cap-")
    proc, started = start_asterisk(run)
    try:
        # login-ok: first connection, logs in as soon as the port opens and
        # waits for FullyBooted (measures boot time).
        s = Session("login-ok")
        s.until("\r\n")  # banner
        log(f"banner after {time.monotonic() - started:.3f}s")
        login(s)
        s.until("Event: FullyBooted\r\n")
        s.until("\r\n\r\n", count=2)
        log(f"FullyBooted after {time.monotonic() - started:.3f}s since spawn")
        s.logoff()
        s.save()

        s = Session("login-failed")
        s.until("\r\n")
        s.send("Action: Login", "ActionID: login", "Username: ivm", "Secret: wrong")
        s.until("Response: Error")
        s.quiet(0.5)
        if not s.eof:
            log("login-failed: connection still open after 0.5 s; sending Ping")
            s.send("Action: Ping", "ActionID: ping-after-failure")
            s.quiet(1.0)
        log(f"login-failed: eof={s.eof}")
        s.save()

        s = Session("ping")
        s.until("\r\n")
        login(s, events="off")
        s.send("Action: Ping", "ActionID: ping-1")
        s.until("ActionID: ping-1")
        s.until("\r\n\r\n", count=2)
        s.logoff()
        s.save()

        s = Session("originate")
        s.until("\r\n")
        login(s, events="call")
        s.send("Action: Originate", "ActionID: orig-1", "Channel: Local/beep@test",
               "Application: Wait", "Data: 0.2", "Async: true",
               "Variable: IVM_ORIGIN=orig-1", "Variable: IVM_TARGET=beep")
        s.until("Event: OriginateResponse")
        s.until("Event: Hangup\r\n", count=2, timeout=15)
        s.quiet(0.3)
        s.logoff()
        s.save()

        s = Session("originate-failed")
        s.until("\r\n")
        login(s, events="call")
        s.send("Action: Originate", "ActionID: orig-2", "Channel: PJSIP/1001",
               "Application: Wait", "Data: 1", "Async: true", "Timeout: 2000")
        s.until("Event: OriginateResponse")
        s.until("\r\n\r\n", count=s.rx.count(b"\r\n\r\n") + 0)
        s.quiet(0.3)
        s.logoff()
        s.save()

        s = Session("dtmf")
        s.until("\r\n")
        login(s, events="dtmf")
        s.send("Action: Originate", "ActionID: orig-3", "Channel: Local/dtmf@test",
               "Application: Wait", "Data: 2", "Async: true")
        s.until("Event: DTMFEnd", count=3, timeout=15)
        s.until("\r\n\r\n", count=s.rx.count(b"\r\n\r\n"))
        s.quiet(0.3)
        s.logoff()
        s.save()

        # a long-lived channel for the list actions
        h = Session("helper-not-saved")
        h.until("\r\n")
        login(h, events="off")
        h.send("Action: Originate", "ActionID: hold", "Channel: Local/wait@test",
               "Application: Wait", "Data: 30", "Async: true")
        h.until("ActionID: hold")
        # DeviceStateList lives in res_manager_devicestate, which the test
        # modules.conf does not load: load it at run time.
        h.send("Action: ModuleLoad", "ActionID: load", "Module: res_manager_devicestate.so",
               "LoadType: load")
        h.until("ActionID: load")
        time.sleep(0.5)

        s = Session("core-show-channels")
        s.until("\r\n")
        login(s, events="off")
        s.send("Action: CoreShowChannels", "ActionID: list-1")
        s.until("Event: CoreShowChannelsComplete")
        s.until("\r\n\r\n", count=s.rx.count(b"\r\n\r\n") + 0)
        s.quiet(0.2)
        s.logoff()
        s.save()

        s = Session("device-state")
        s.until("\r\n")
        login(s, events="off")
        s.send("Action: ExtensionState", "ActionID: ext-1", "Exten: 1001", "Context: phones")
        s.until("ActionID: ext-1")
        s.quiet(0.2)
        s.send("Action: DeviceStateList", "ActionID: dev-1")
        s.until("Event: DeviceStateListComplete")
        s.quiet(0.2)
        s.logoff()
        s.save()

        s = Session("command")
        s.until("\r\n")
        login(s, events="off")
        s.send("Action: Command", "ActionID: cmd-1", "Command: core show uptime")
        s.until("ActionID: cmd-1")
        s.quiet(0.3)
        s.send("Action: NoSuchThing", "ActionID: bad-1")
        s.until("ActionID: bad-1")
        s.quiet(0.3)
        s.logoff()
        s.save()
        h.logoff()

        s = Session("shutdown")
        s.until("\r\n")
        login(s, events="system")
        s.until("Event: FullyBooted")
        s.quiet(0.2)
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        s.until_eof()
        log(f"shutdown: EOF {time.monotonic() - t:.3f}s after SIGTERM")
        s.save()
        proc.wait(timeout=10)
        log(f"asterisk exited {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log(f"run dir {run}")


if __name__ == "__main__":
    main()
