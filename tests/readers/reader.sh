#!/bin/sh
# Call an API with tokend's token; wait up to 30 s for its first write.
# curl reads the header from the file, so the token is never in `ps` output.
HEADER_FILE=${HEADER_FILE:-/run/tokend/blnk/header}
i=0
until [ -s "$HEADER_FILE" ]; do
  i=$((i + 1))
  [ "$i" -gt 300 ] && { echo "no token at $HEADER_FILE" >&2; exit 1; }
  sleep 0.1
done
curl -fsS -H @"$HEADER_FILE" "$API_URL"
