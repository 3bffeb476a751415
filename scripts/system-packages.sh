# Debian packages the test suite needs: Graphviz `dot` for SVG lineage
# pictures, Chromium for the console's browser tests (driven by Playwright
# with executable_path=/usr/bin/chromium; never a downloaded browser), Go and
# golang.org/x/mod for the test that checks cosigned checkpoints with Go's
# sumdb/note (built offline in GOPATH mode over /usr/share/gocode).
# Installed only when missing; needs root, as CI and the dev machines here run.
set -uo pipefail
need=()
command -v dot >/dev/null 2>&1 || need+=(graphviz)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/note ] || need+=(golang-golang-x-mod-dev)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]} ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]} (install with apt-get); tests that need them will fail" >&2
  fi
fi
exit 0
