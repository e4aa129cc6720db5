# scratch.sh - sourced by the bench and script files: `keel_scratch NAME` makes a fresh
# private directory keel-NAME-<random> under $TMPDIR (default /tmp) and prints its path.
# The XXXXXX below is mktemp's template (it fills in random characters), kept in this one
# place.
keel_scratch() {
  mktemp -d "${TMPDIR:-/tmp}/keel-$1-XXXXXX"
}
