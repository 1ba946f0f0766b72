# Sourced by the corpus scripts: fetch_pinned PINS OUT [apt-get update options...] downloads the
# packages pinned in PINS ("name=version" lines; # comments) from the Debian mirror apt is
# configured for, with apt-get update into OUT/lists (a lists folder of its own, so nothing is
# installed and the system's lists are left alone) and apt-get download into OUT/debs, checks
# each version, and sets the array `pinned_debs` to the .deb files in PINS's order.
fetch_pinned() {
  local pins_file=$1 out=$2
  shift 2
  mkdir -p "$out/debs" "$out/lists/partial"
  local pins
  mapfile -t pins < <(grep -v '^#' "$pins_file" | grep -v '^$')
  apt-get update -qq "$@" -o Dir::State::Lists="$out/lists" \
    || { echo "error: apt-get update failed (is the Debian mirror reachable?)" >&2; return 1; }
  (cd "$out/debs" && apt-get download -q -o Dir::State::Lists="$out/lists" "${pins[@]}" 2>&1 | grep -v '^W: ' || true)
  pinned_debs=()
  local pin name version deb candidate
  for pin in "${pins[@]}"; do
    name=${pin%%=*}; version=${pin#*=}
    deb=""
    for candidate in "$out/debs/${name}_"*.deb; do
      [[ -e $candidate && $(dpkg-deb -f "$candidate" Version) == "$version" ]] && deb=$candidate
    done
    [[ -n $deb ]] || { echo "error: $pin was not downloaded (is the version still in the archive?)" >&2; return 1; }
    pinned_debs+=("$deb")
  done
}
