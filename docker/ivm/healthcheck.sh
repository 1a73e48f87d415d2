#!/bin/bash
# ivm container health: something listens on the FastAGI port (AGI_PORT), which
# `ivm serve` (this container's only process) binds once it serves. Checked in
# /proc/net/tcp{,6} rather than by connecting, so that no empty FastAGI
# session is logged every interval. There is no HTTP API yet; switch this to
# the API's readiness endpoint once it exists.
port=$(printf '%04X' "${AGI_PORT:?}") || exit 1
# Fields: sl local_address rem_address st ...; st 0A = LISTEN.
exec grep -qE "^ *[0-9]+: [0-9A-F]+:$port [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6
