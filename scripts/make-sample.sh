#!/usr/bin/env bash
# Regenerates the bundled sample call: a short, fully fictional clinic phone call spoken by espeak-ng,
# as Twilio would stream it with track="both_tracks" (raw μ-law, 8 kHz, mono, one file per track):
#   samples/call-outbound.ulaw  the agent (Twilio's outbound track)
#   samples/call-inbound.ulaw   the caller, i.e. the customer (Twilio's inbound track)
#   samples/call.json           the script, with each turn's speech span measured from the audio
# While one party speaks the other track is digital silence (0xFF), as on a real forked call.
# Usage: scripts/make-sample.sh   (needs espeak-ng and sox; the output is committed, so run it only
# to change the call)
set -euo pipefail

cd "$(dirname "$0")/.."
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "make-sample: $tool is missing (apt-get install espeak-ng sox)" >&2; exit 1; }
done

readonly RATE=8000
readonly LEAD_MS=500    # before the first turn
readonly GAP_MS=1300    # between turns: longer than AssemblyAI's end-of-turn silence, so turns stay apart
readonly TAIL_MS=700    # after the last turn
# Distinct voices, so speaker diarization has two different people to tell apart.
readonly VOICE_OUTBOUND=(-v en-us+f3 -p 65 -s 180)
readonly VOICE_INBOUND=(-v en-gb+m3 -p 35 -s 170)

# track|text. Names and the number are fictional; 555-01xx numbers are reserved for fiction.
readonly TURNS=(
  "outbound|Thank you for calling North Clinic, this is Dana. How can I help you?"
  "inbound|Hi, I need a refill of my metoprolol, fifty milligrams twice a day."
  "outbound|Sure. Are you still taking lisinopril, ten milligrams?"
  "inbound|Yes, but I get dizzy when I stand up."
  "outbound|I will have the nurse call you back today. What is your number?"
  "inbound|Five five five, zero one four two."
  "outbound|Thanks. Keep taking the metoprolol until she calls."
  "inbound|Okay, goodbye."
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: > "$work/inbound.raw"
: > "$work/outbound.raw"

# Appends $2 samples of PCM16 silence to file $1.
silence () { head -c $(($2 * 2)) /dev/zero >> "$1"; }

cursor=0   # samples written to each track so far; kept a multiple of 8 so that times are whole ms
silence "$work/inbound.raw" $((LEAD_MS * RATE / 1000))
silence "$work/outbound.raw" $((LEAD_MS * RATE / 1000))
cursor=$((LEAD_MS * RATE / 1000))
json_turns=()
index=0
for turn in "${TURNS[@]}"; do
  track=${turn%%|*}
  text=${turn#*|}
  if [ "$track" = outbound ]; then voice=("${VOICE_OUTBOUND[@]}"); other=inbound; else voice=("${VOICE_INBOUND[@]}"); other=outbound; fi
  espeak-ng "${voice[@]}" -w "$work/turn$index.wav" "$text"
  # Trim espeak's leading and trailing silence so the measured span is the speech itself, then
  # normalise to -3 dBFS and resample to the telephone rate. -D: no dither, so silence stays zero.
  sox -D "$work/turn$index.wav" -t raw -r "$RATE" -c 1 -b 16 -e signed-integer -L "$work/turn$index.raw" \
    silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse gain -n -3
  samples=$(( $(stat -c %s "$work/turn$index.raw") / 2 ))
  padded=$(( (samples + 7) / 8 * 8 ))
  cat "$work/turn$index.raw" >> "$work/$track.raw"
  silence "$work/$track.raw" $((padded - samples))
  silence "$work/$other.raw" "$padded"
  start_ms=$((cursor * 1000 / RATE))
  end_ms=$(( ((cursor + samples) * 1000 + RATE - 1) / RATE ))
  cursor=$((cursor + padded))
  json_turns+=("    { \"track\": \"$track\", \"text\": \"$text\", \"startMs\": $start_ms, \"endMs\": $end_ms }")
  index=$((index + 1))
  pause_ms=$(( index < ${#TURNS[@]} ? GAP_MS : TAIL_MS ))
  silence "$work/inbound.raw" $((pause_ms * RATE / 1000))
  silence "$work/outbound.raw" $((pause_ms * RATE / 1000))
  cursor=$((cursor + pause_ms * RATE / 1000))
done

mkdir -p samples
for track in inbound outbound; do
  sox -D -t raw -r "$RATE" -c 1 -b 16 -e signed-integer -L "$work/$track.raw" -t raw -e u-law "samples/call-$track.ulaw"
done
{
  echo '{'
  echo "  \"sampleRate\": $RATE,"
  echo '  "turns": ['
  last=$(( ${#json_turns[@]} - 1 ))
  for i in "${!json_turns[@]}"; do
    if [ "$i" -lt "$last" ]; then echo "${json_turns[$i]},"; else echo "${json_turns[$i]}"; fi
  done
  echo '  ]'
  echo '}'
} > samples/call.json

bytes=$(stat -c %s samples/call-inbound.ulaw)
echo "make-sample: ${#TURNS[@]} turns, $((bytes * 1000 / RATE)) ms per track, $bytes bytes per file"
