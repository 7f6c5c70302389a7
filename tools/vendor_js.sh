#!/usr/bin/env bash
# Fetch the browser JavaScript the book needs (MathJax, require.js, the widget manager) from the npm
# registry into _vendor/, so the HTML renders offline with no CDN.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f _vendor/.complete ]; then exit 0; fi
rm -rf _vendor && mkdir -p _vendor/.tmp
cd _vendor/.tmp
npm pack --silent mathjax@3.2.2 requirejs@2.3.7 @jupyter-widgets/html-manager@1.0.6 >/dev/null
for t in *.tgz; do mkdir -p "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done
mv mathjax-3.2.2/package/es5 ../mathjax
mv requirejs-2.3.7/package/require.js ../require.js
mv jupyter-widgets-html-manager-1.0.6/package/dist ../html-manager
cd .. && rm -rf .tmp && find html-manager -name '*.map' -delete
touch .complete
