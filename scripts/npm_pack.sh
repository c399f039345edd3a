#!/usr/bin/env bash
# Build the npm package `medfm` and write OUT_DIR/medfm-VERSION.tgz (`npm pack`; nothing
# is published):
#
#   bash scripts/npm_pack.sh OUT_DIR
#
# The package is the web build's own files (one wasm build, one JS API: www/medfm.js is
# also the app's), laid out as in dist/ so that their relative URLs hold: medfm-wasm.js and
# its .wasm at the top, www/medfm.js (the entry) and www/worker.js, weights/ with the int8
# weights; plus npm/ (package.json, the TypeScript declarations, README, CHANGELOG). The
# version is the Rust workspace's.
#
# The web build is taken from $MEDFM_WEB_DIST when set (CI passes the dist/ it has just
# built with `trunk build --release`), else made here with that command.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
out="${1:?usage: npm_pack.sh OUT_DIR}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
dist="${MEDFM_WEB_DIST:-}"
if [ -z "$dist" ]; then
  trunk build --release
  dist=dist
fi
for f in medfm-wasm.js medfm-wasm_bg.wasm www/medfm.js www/worker.js weights/lite_medsam_int8.bpk; do
  [ -f "$dist/$f" ] || { echo "npm_pack.sh: $dist/$f is missing: not a web build (trunk build --release)" >&2; exit 1; }
done
# The web build must be of this tree's API (a stale dist/ would ship old JS).
for f in medfm.js worker.js; do
  cmp -s "www/$f" "$dist/www/$f" || { echo "npm_pack.sh: $dist/www/$f differs from www/$f: build the web app again" >&2; exit 1; }
done
version=$(awk -F'"' '/^\[workspace.package\]/ { w = 1 } w && /^version = / { print $2; exit }' Cargo.toml)
[ -n "$version" ] || { echo "npm_pack.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
grep -q "^## $version\$" npm/CHANGELOG.md || { echo "npm_pack.sh: npm/CHANGELOG.md has no section for $version" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/www" "$stage/weights"
cp "$dist/medfm-wasm.js" "$dist/medfm-wasm_bg.wasm" "$stage/"
cp "$dist/www/medfm.js" "$dist/www/worker.js" "$stage/www/"
cp "$dist/weights/lite_medsam_int8.bpk" "$stage/weights/"
cp npm/index.d.ts npm/cornerstone.js npm/cornerstone-core.js npm/cornerstone-tool.js npm/cornerstone.d.ts npm/ohif.js npm/ohif-mode.js npm/README.md npm/CHANGELOG.md npm/LICENSE-weights.md "$stage/"
sed "s/\"version\": \"0.0.0-set-by-npm_pack\"/\"version\": \"$version\"/" npm/package.json > "$stage/package.json"
grep -q "\"version\": \"$version\"" "$stage/package.json" || { echo "npm_pack.sh: cannot set the version in package.json" >&2; exit 1; }
(cd "$stage" && npm pack --silent --pack-destination "$out" > /dev/null)
tgz="$out/medfm-$version.tgz"
[ -f "$tgz" ] || { echo "npm_pack.sh: npm pack wrote no $tgz" >&2; exit 1; }
echo "$tgz"
