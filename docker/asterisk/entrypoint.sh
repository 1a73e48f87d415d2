#!/bin/bash
# Asterisk container entry point: render /etc/asterisk from the shipped
# configuration and the environment, then run Asterisk in the foreground.
#
# Environment (docker-compose.yml passes them from .env):
#   IVM_AMI_SECRET, PHONE_1001_PASSWORD, PHONE_1002_PASSWORD, PHONE_1003_PASSWORD,
#   IVM_AGI_SECRET (required; at least 16 characters)
#   SIP_BIND, SIP_PORT, AMI_PORT, AGI_PORT, RTP_START, RTP_END
set -euo pipefail
die() { echo "asterisk-entrypoint: $*" >&2; exit 1; }

secret() {
    local name=$1 value=${!1:-}
    [ -n "$value" ] || die "$name is not set (see .env.example)"
    [ "$value" != change-me ] || die "$name is still the example value; choose your own"
    [ "${#value}" -ge 8 ] || die "$name is shorter than 8 characters"
    [[ $value =~ ^[A-Za-z0-9._~+=@%-]+$ ]] || die "$name may hold only letters, digits and ._~+=@%-"
}
port() {
    local name=$1 value=${!1:-}
    [[ $value =~ ^[0-9]{1,5}$ ]] && [ "$value" -ge 1 ] && [ "$value" -le 65535 ] ||
        die "$name is not a port: '$value'"
}
for v in IVM_AMI_SECRET PHONE_1001_PASSWORD PHONE_1002_PASSWORD PHONE_1003_PASSWORD IVM_AGI_SECRET; do secret "$v"; done
[ "${#IVM_AGI_SECRET}" -ge 16 ] || die "IVM_AGI_SECRET is shorter than 16 characters"
for v in SIP_PORT AMI_PORT AGI_PORT RTP_START RTP_END; do port "$v"; done
[[ $SIP_BIND =~ ^[0-9a-fA-F.:]+$ ]] || die "SIP_BIND is not an IP address: '$SIP_BIND'"

SRC=/usr/share/ivm
ETC=/etc/asterisk
for f in "$SRC"/asterisk/*.conf; do
    sed -e "s|@@SIP_BIND@@|$SIP_BIND|g" -e "s|@@SIP_PORT@@|$SIP_PORT|g" \
        -e "s|@@AMI_PORT@@|$AMI_PORT|g" -e "s|@@RTP_START@@|$RTP_START|g" \
        -e "s|@@RTP_END@@|$RTP_END|g" \
        -e "s|@@PHONE_1001_PASSWORD@@|$PHONE_1001_PASSWORD|g" \
        -e "s|@@PHONE_1002_PASSWORD@@|$PHONE_1002_PASSWORD|g" \
        -e "s|@@PHONE_1003_PASSWORD@@|$PHONE_1003_PASSWORD|g" \
        -e "s|@@IVM_AGI_SECRET@@|$IVM_AGI_SECRET|g" \
        "$f" >"$ETC/$(basename "$f")"
done
# The project's snippets, as the README tells an administrator to install them:
# extensions_ivm.conf next to extensions.conf (FastAGI address = ivm's), and
# the AMI user from manager_ivm.conf with our own secret.
sed -e "s|127.0.0.1:4573|127.0.0.1:$AGI_PORT|g" "$SRC/dialplan/extensions_ivm.conf" \
    >"$ETC/extensions_ivm.conf"
sed -e "s|^secret = change-me$|secret = $IVM_AMI_SECRET|" "$SRC/dialplan/manager_ivm.conf" \
    >"$ETC/manager_ivm.conf"
grep -q "^secret = $IVM_AMI_SECRET\$" "$ETC/manager_ivm.conf" ||
    die "manager_ivm.conf has no 'secret = change-me' line to replace"
chmod 0640 "$ETC"/*.conf
# Registrations would survive a restart in astdb and point at old contacts.
rm -f /var/lib/asterisk/astdb.sqlite3
# -f: foreground, no console; -n: no colour. Logs go to stdout (docker logs).
exec asterisk -f -n "$@"
