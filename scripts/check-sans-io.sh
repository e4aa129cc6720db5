#!/usr/bin/env bash
# The sans-I/O rule (ARCHITECTURE.md): nothing under src/core/, src/proto/ or src/sm/ may
# include a header for sockets, files, processes, threads or libuv, nor call a clock.
# Those layers take now_ms and inputs and return outputs; this is what makes the
# deterministic simulator possible. Exit non-zero, naming each offence, if broken.
# Usage: check-sans-io.sh [ROOT]   (ROOT defaults to the repository; tests pass a scratch tree)
set -u
cd "${1:-$(dirname "$0")/..}"
bad=0
headers='uv\.h|unistd\.h|fcntl\.h|pthread\.h|threads\.h|sys/socket\.h|sys/stat\.h|sys/types\.h|sys/time\.h|sys/wait\.h|sys/mman\.h|sys/epoll\.h|sys/uio\.h|netinet/[a-z_]+\.h|arpa/inet\.h|netdb\.h|dirent\.h|signal\.h|time\.h|poll\.h|sqlite3\.h'
calls='\b(time|clock_gettime|gettimeofday|clock|sleep|usleep|nanosleep|fopen|open|read|write|socket|connect|bind|fork|exec[lv]p?e?|pthread_create|getenv|rand|srand|random)[[:space:]]*\('
files=$(find src/core src/proto src/sm -name '*.[ch]' 2>/dev/null)
[ -z "$files" ] && { echo "sans-io: no files under src/core or src/proto"; exit 0; }
for f in $files; do
  # strip // and /* */ comments (roughly) and string literals before looking
  body=$(sed -e 's://.*$::' "$f" | perl -0pe 's:/\*.*?\*/::gs; s:"(\\.|[^"\\])*":"":g')
  if echo "$body" | grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($headers)[>\"]" >/tmp/sansio.$$; then
    sed "s|^|$f: forbidden include: |" /tmp/sansio.$$; bad=1
  fi
  if echo "$body" | grep -nE "$calls" | grep -vE '^\s*[0-9]+:\s*#' >/tmp/sansio.$$; then
    # allow struct members / function names that merely end in these words (e.g. buf_read()).
    if grep -nE "(^|[^A-Za-z0-9_.>])(time|clock_gettime|gettimeofday|clock|sleep|usleep|nanosleep|fopen|open|read|write|socket|connect|bind|fork|exec[lv]p?e?|pthread_create|getenv|rand|srand|random)[[:space:]]*\(" /tmp/sansio.$$ >/tmp/sansio2.$$; then
      sed "s|^|$f: forbidden call: |" /tmp/sansio2.$$; bad=1
    fi
  fi
done
rm -f /tmp/sansio.$$ /tmp/sansio2.$$
if [ $bad -ne 0 ]; then echo "sans-io rule broken"; exit 1; fi
echo "sans-io: $(echo "$files" | wc -l) files clean"
