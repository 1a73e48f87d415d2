#!/usr/bin/env bash
# Run the rootfs's Asterisk 22 in the foreground with a per-test directory.
#
#   tests/asterisk/run-asterisk.sh RUNDIR
#
# Renders tests/asterisk/conf/*.conf into RUNDIR/etc (substituting @@RUN@@,
# @@ROOTFS@@, @@SIP_PORT@@, @@AMI_PORT@@, @@AGI_PORT@@), creates the var/log/
# spool/run/data dirs, clears astdb (registrations persist otherwise), then
# execs Asterisk (-f: foreground, no console), so the PID you started is
# Asterisk's. Stop it with SIGTERM (exits in < 1 s). Never use -c without a tty.
#
# Env: IVM_ROOTFS (default: output of provision.sh), IVM_SIP_PORT (5060),
#      IVM_AMI_PORT (5038), IVM_AGI_PORT (4573), IVM_RENDER_ONLY=1 (render, don't run)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 RUNDIR" >&2; exit 2; }
mkdir -p "$1"
RUN=$(cd "$1" && pwd)
ROOTFS=${IVM_ROOTFS:-}
if [ -z "$ROOTFS" ] || [ ! -f "$ROOTFS/.ivm-ready" ]; then ROOTFS=$("$HERE/provision.sh"); fi
SIP_PORT=${IVM_SIP_PORT:-5060}
AMI_PORT=${IVM_AMI_PORT:-5038}
AGI_PORT=${IVM_AGI_PORT:-4573}
# The secrets of src/testbed/asterisk.rs (AMI_SECRET, AGI_SECRET).
AMI_SECRET=${IVM_AMI_SECRET:-testbed-ami-secret-5c2e91}
AGI_SECRET=${IVM_AGI_SECRET:-testbed-agi-secret-8d41f7}

mkdir -p "$RUN"/{etc,var,spool,run,log,agi-bin,data/sounds}
for f in "$HERE"/conf/*.conf; do
    sed -e "s|@@RUN@@|$RUN|g" -e "s|@@ROOTFS@@|$ROOTFS|g" \
        -e "s|@@SIP_PORT@@|$SIP_PORT|g" -e "s|@@AMI_PORT@@|$AMI_PORT|g" \
        -e "s|@@AGI_PORT@@|$AGI_PORT|g" -e "s|@@AGI_SECRET@@|$AGI_SECRET|g" \
        "$f" >"$RUN/etc/$(basename "$f")"
done
# The administrator's AMI user, with the testbed's secret.
sed -e "s|^secret = change-me|secret = $AMI_SECRET|" \
    "$HERE/../../dialplan/asterisk/manager_ivm.conf" >"$RUN/etc/manager_ivm.conf"
# The administrator's snippet, pointed at this run's FastAGI port.
sed -e "s|127.0.0.1:4573|127.0.0.1:$AGI_PORT|g" "$HERE/../../dialplan/asterisk/extensions_ivm.conf" \
    >"$RUN/etc/extensions_ivm.conf"
# The rootfs's sounds/en is an absolute symlink into its /etc/alternatives:
# point our own data dir straight at the real prompt directory.
ln -sfn "$ROOTFS/usr/share/asterisk/sounds/en_US_f_Allison" "$RUN/data/sounds/en"
ln -sfn "$ROOTFS/usr/share/asterisk/documentation" "$RUN/data/documentation"
rm -f "$RUN/var/astdb.sqlite3"
[ "${IVM_RENDER_ONLY:-}" = 1 ] && exit 0

LIBS="$ROOTFS/usr/lib/x86_64-linux-gnu:$ROOTFS/lib/x86_64-linux-gnu"
exec "$ROOTFS/lib64/ld-linux-x86-64.so.2" --library-path "$LIBS" \
    "$ROOTFS/usr/sbin/asterisk" -f -C "$RUN/etc/asterisk.conf"
