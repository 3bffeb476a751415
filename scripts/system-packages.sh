# Debian packages the test suite needs: Graphviz `dot` for SVG lineage
# pictures, Chromium for the console's browser tests (driven by Playwright
# with executable_path=/usr/bin/chromium; never a downloaded browser).
# Installed only when missing; needs root, as CI and the dev machines here run.
set -uo pipefail
need=()
command -v dot >/dev/null 2>&1 || need+=(graphviz)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]} ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]} (install with apt-get); tests that need them will fail" >&2
  fi
fi
exit 0
