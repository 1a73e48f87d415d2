#!/usr/bin/env bash
# Regenerates every prompt and tone in this directory, as 8 kHz mono 16-bit
# raw signed linear (.sln, what Asterisk plays) and WAV (.wav).
#
# Needs: sox and espeak-ng (Debian: apt-get install sox espeak-ng). This
# script installs nothing; it says what is missing. espeak-ng runs as a
# separate program (it is GPL; nothing links it). Output is deterministic for
# given sox and espeak-ng versions (no dither), which are written to
# VERSIONS so a regenerated file that differs can be explained.
#
# Usage: sounds/generate.sh [OUTPUT_DIR]   (default: the directory of this script)
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")" && pwd)}"
missing=()
command -v sox >/dev/null || missing+=(sox)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if ((${#missing[@]})); then
    echo "generate.sh: missing ${missing[*]}; on Debian/Ubuntu: apt-get install ${missing[*]}" >&2
    exit 1
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Telephone format; -D: no dither, so the output is reproducible.
fmt=(-D -r 8000 -c 1 -b 16 -e signed-integer)

# write NAME INPUT.wav: INPUT (already 8 kHz mono 16-bit) to NAME.wav and NAME.sln
write() {
    sox "$2" "${fmt[@]}" "$out/$1.wav"
    sox "$2" "${fmt[@]}" -L -t raw "$out/$1.sln"
}

# tone_segment FILE SOX-SYNTH-ARGS...: one synthesised tone
tone_segment() {
    local file=$1
    shift
    sox -n "${fmt[@]}" "$file" synth "$@"
}

# silence FILE SECONDS
silence() {
    sox -n "${fmt[@]}" "$1" trim 0 "$2"
}

# Tones: sines at -12 dBFS peak (vol 0.25; about -15 dBFS RMS, as loud as the
# prompts), with 5 ms fades so they do not click.
t="$work/t"
tone_segment "$t-beep.wav" 0.12 sine 1000 vol 0.25 fade h 0.005 0.12 0.005
write beep "$t-beep.wav"

tone_segment "$t-a1.wav" 0.12 sine 660 vol 0.25 fade h 0.005 0.12 0.005
tone_segment "$t-a2.wav" 0.16 sine 990 vol 0.25 fade h 0.005 0.16 0.005
silence "$t-gap40.wav" 0.04
sox "$t-a1.wav" "$t-gap40.wav" "$t-a2.wav" "${fmt[@]}" "$t-accepted.wav"
write accepted "$t-accepted.wav"

tone_segment "$t-r1.wav" 0.2 sine 480 vol 0.25 fade h 0.005 0.2 0.005
tone_segment "$t-r2.wav" 0.3 sine 320 vol 0.25 fade h 0.005 0.3 0.005
sox "$t-r1.wav" "$t-gap40.wav" "$t-r2.wav" "${fmt[@]}" "$t-rejected.wav"
write rejected "$t-rejected.wav"

# Error: the special-information-tone rising triple (ITU-T E.180 style).
tone_segment "$t-e1.wav" 0.28 sine 913.8 vol 0.25 fade h 0.005 0.28 0.005
tone_segment "$t-e2.wav" 0.28 sine 1370.6 vol 0.25 fade h 0.005 0.28 0.005
tone_segment "$t-e3.wav" 0.38 sine 1776.7 vol 0.25 fade h 0.005 0.38 0.005
sox "$t-e1.wav" "$t-e2.wav" "$t-e3.wav" "${fmt[@]}" "$t-error.wav"
write error "$t-error.wav"

# Busy: 425 Hz (ITU-T E.180 recommended frequency), 0.5 s on / 0.5 s off, x3.
tone_segment "$t-b.wav" 0.5 sine 425 vol 0.25 fade h 0.005 0.5 0.005
silence "$t-gap500.wav" 0.5
sox "$t-b.wav" "$t-gap500.wav" "$t-b.wav" "$t-gap500.wav" "$t-b.wav" "$t-gap500.wav" "${fmt[@]}" "$t-busy.wav"
write busy "$t-busy.wav"

# Spoken prompts: espeak-ng (American English, 155 words/min), then
# telephone band (300-3400 Hz), 8 kHz, leading/trailing silence trimmed,
# normalised to -2 dBFS peak.
prompt() {
    local name=$1 text=$2
    espeak-ng -v en-us -s 155 -w "$work/$name-raw.wav" "$text"
    sox "$work/$name-raw.wav" "${fmt[@]}" "$work/$name.wav" \
        highpass 300 lowpass 3400 rate 8000 \
        silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse \
        gain -n -2
    write "$name" "$work/$name.wav"
}

prompt message-from "Message from"
prompt message-delivered "Your message was delivered."
prompt not-answered-stored "Not answered. Message stored."
prompt not-available-stored "Not available. Message stored."
prompt busy-stored "Busy. Message stored."
prompt dnd-stored "Do not disturb. Message stored."
prompt dnd-on "Do not disturb is on."
prompt away-on "You are away."
prompt available "You are available."
prompt groups-not-enabled "Group messages are not enabled."
prompt new-messages "You have new voice messages."
prompt listener-menu "Press 1 to replay, 2 to reply, 3 to call back, 4 to save, 7 to delete."
prompt message-saved "Message saved."
prompt message-deleted "Message deleted."
prompt no-messages "No messages."
prompt invalid-number "Invalid number."
prompt message-too-long "Message too long."
prompt too-many-messages "Too many messages."
prompt try-later "All lines are busy. Please try again later."
# A failure, announced as telephone networks do: the special information
# tone, a pause, then the words.
prompt not-recorded-words "Your message could not be recorded."
rm "$out/not-recorded-words.wav" "$out/not-recorded-words.sln"
silence "$t-gap300.wav" 0.3
sox "$t-error.wav" "$t-gap300.wav" "$work/not-recorded-words.wav" "${fmt[@]}" "$t-not-recorded.wav"
write not-recorded "$t-not-recorded.wav"
prompt goodbye "Goodbye."

# The intro of a retrieved message: "Message from" (above), the sender's
# number digit by digit, and how long ago it was left ("5 minutes ago");
# 21 to 99 are said as "fifty" + "seven".
for n in $(seq 0 20) 30 40 50 60 70 80 90; do
    prompt "n-$n" "$n"
done
prompt just-now "just now"
prompt minute-ago "minute ago"
prompt minutes-ago "minutes ago"
prompt hour-ago "hour ago"
prompt hours-ago "hours ago"
prompt day-ago "day ago"
prompt days-ago "days ago"

{
    echo "# Tool versions that produced the files in this directory (sounds/generate.sh)."
    sox --version | sed 's/^ *//'
    espeak-ng --version | sed 's/ *Data at:.*//'
} >"$out/VERSIONS"
echo "generate.sh: wrote $(ls "$out"/*.sln | wc -l) sounds to $out"
