# Shared helpers for the set-up scripts (sourced, not run).

# The Debian mirror this machine's own apt sources already name (deb822 or one-line format).
debian_mirror() {
  local files=() f m
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  m=
  if [ "${#files[@]}" -gt 0 ]; then
    m=$(grep -hoE 'https?://[^ ]*/debian/?( |$)' "${files[@]}" | grep -v security | head -n1 | tr -d ' ' || :)
  fi
  printf '%s' "${m:-http://deb.debian.org/debian}"
}

# Install Debian packages that are missing (quietly; nothing when all are there).
apt_need() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  printf '[setup] installing %s\n' "${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
