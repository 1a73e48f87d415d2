#!/bin/bash
# ivm container health: the HTTP API's /readyz (on API_PORT, loopback) answers
# 200, i.e. `ivm serve` is logged in to every configured switch and its store
# answers. Plain bash (/dev/tcp): the base image need not carry curl.
set -u
port=${API_PORT:?}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
read -r -t 2 status <&3 || exit 1
[[ $status =~ ^HTTP/1\.[01]\ 200 ]]
