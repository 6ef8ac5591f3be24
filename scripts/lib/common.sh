# Shared helpers for the set-up scripts (sourced, not run).

# The Debian mirror this machine's own apt sources name for its release (deb822 or one-line format):
# an entry whose suites include the release itself and whose components include main. HYHOME_DEBIAN_MIRROR
# overrides it (an Ubuntu host building Debian images, say). No fallback: none found is an error.
debian_mirror() {
  local files=() f m codename
  if [ -n "${HYHOME_DEBIAN_MIRROR:-}" ]; then printf '%s' "$HYHOME_DEBIAN_MIRROR"; return 0; fi
  codename=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  m=
  if [ -n "$codename" ] && [ "${#files[@]}" -gt 0 ]; then
    m=$(awk -v rel="$codename" '
      function take(uris, suites, comps,   u, s, c, n, i, j) {
        if (index(" " suites " ", " " rel " ") && index(" " comps " ", " main ")) {
          n = split(uris, u, " "); for (i = 1; i <= n; i++) if (u[i] ~ /^https?:\/\//) { print u[i]; exit }
        }
      }
      FNR == 1 { if (deb822) take(uris, suites, comps); deb822 = (FILENAME ~ /\.sources$/); uris = suites = comps = ""; types = "" }
      deb822 && /^[ \t]*$/ { if (types ~ /(^| )deb( |$)/) take(uris, suites, comps); uris = suites = comps = types = ""; next }
      deb822 && tolower($1) == "types:" { $1 = ""; types = $0 }
      deb822 && tolower($1) == "uris:" { $1 = ""; uris = $0 }
      deb822 && tolower($1) == "suites:" { $1 = ""; suites = $0 }
      deb822 && tolower($1) == "components:" { $1 = ""; comps = $0 }
      !deb822 && $1 == "deb" { sub(/\[[^]]*\]/, ""); $1 = ""; split($0, w, " "); c = ""; for (i = 3; i in w; i++) c = c " " w[i]; take(w[1], w[2], c) }
      END { if (deb822 && types ~ /(^| )deb( |$)/) take(uris, suites, comps) }
    ' "${files[@]}" | head -n1)
  fi
  if [ -z "$m" ]; then
    printf '[setup] no Debian mirror for "%s" with main in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; ' "${codename:-?}" >&2
    printf 'set HYHOME_DEBIAN_MIRROR to the Debian archive URL to use\n' >&2
    return 1
  fi
  printf '%s' "${m%/}"
}

# Install Debian packages that are missing (quietly; nothing when all are there).
apt_need() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  printf '[setup] installing %s\n' "${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
