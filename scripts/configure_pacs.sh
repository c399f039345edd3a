#!/usr/bin/env bash
# Point a built web app (DIST, from `trunk build --release`) at a PACS:
#   scripts/configure_pacs.sh DIST URL
# URL is the DICOMweb service root: `/dicom-web` (or any path) when the app is served
# behind the same reverse proxy as the PACS (no CORS needed), or an absolute
# `https://pacs.example.org/dicom-web` for a PACS on another origin that allows the app's
# origin by CORS. Writes DIST/config.json (the PACS the panel starts with) and sets the
# app's Content-Security-Policy (the meta tag of DIST/index.html) to connect-src 'self'
# plus exactly that origin; prints the policy, which a server sending the policy as a
# header (recommended: it then covers the worker too) must send unchanged. Run it again
# to change the PACS; `scripts/configure_pacs.sh DIST -` removes it.
set -euo pipefail
dist="${1:?usage: configure_pacs.sh DIST URL}"
url="${2:?usage: configure_pacs.sh DIST URL}"
index="$dist/index.html"
[ -f "$index" ] || { echo "configure_pacs.sh: $index not found (build the app first)" >&2; exit 1; }
grep -q 'http-equiv="Content-Security-Policy"' "$index" || { echo "configure_pacs.sh: $index has no Content-Security-Policy" >&2; exit 1; }
origin=""
if [ "$url" = - ]; then
  rm -f "$dist/config.json"
elif [[ "$url" =~ ^/[A-Za-z0-9._~/-]*$ ]]; then
  # Same origin (the app's reverse proxy): nothing to add to the policy.
  printf '{"dicomweb": {"url": "%s"}}\n' "${url%/}" > "$dist/config.json"
elif [[ "$url" =~ ^(https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?)(/[A-Za-z0-9._~/-]*)?$ ]]; then
  origin="${BASH_REMATCH[1],,}"
  printf '{"dicomweb": {"url": "%s"}}\n' "${url%/}" > "$dist/config.json"
else
  echo "configure_pacs.sh: $url is neither a path (/dicom-web) nor an http(s)://host[:port]/path URL without credentials, query or fragment" >&2
  exit 1
fi
sed -i -E "s#connect-src [^;\"]*#connect-src 'self'${origin:+ $origin}#" "$index"
policy=$(sed -n -E 's/.*http-equiv="Content-Security-Policy" content="([^"]+)".*/\1/p' "$index")
grep -q "connect-src 'self'${origin:+ $origin};" <<<"$policy" || { echo "configure_pacs.sh: could not set connect-src in $index" >&2; exit 1; }
echo "$dist: PACS ${url}; Content-Security-Policy: $policy"
