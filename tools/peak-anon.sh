#!/usr/bin/env bash
# peak-anon.sh CMD...: runs CMD and reports its wall time and peak anonymous memory (RssAnon,
# i.e. excluding memory-mapped model files, which /usr/bin/time's max RSS counts).
set -u
start=$(date +%s.%N)
"$@" &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  a=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ -n "$a" ] && [ "$a" -gt "$peak" ] && peak=$a
  sleep 0.05
done
wait "$pid"; rc=$?
end=$(date +%s.%N)
printf 'peak-anon: %.1f MiB, wall %.2f s, exit %d\n' "$(echo "$peak/1024" | bc -l)" "$(echo "$end-$start" | bc -l)" "$rc" >&2
exit $rc
