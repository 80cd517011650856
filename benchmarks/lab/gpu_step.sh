# Sourced by the GPU lease scripts: `step NAME SECONDS CMD...` runs CMD under a time bound, logs it, prints
# the log's tail and appends everything under $OUT/r to $OUT/results.tar (so a step that overruns loses
# only itself; the GPU tool returns at most 8 files).
export PYTHONUNBUFFERED=1 PYTHONPATH=.
R=$OUT/r
mkdir -p "$R"
step() {
  local name=$1 secs=$2
  shift 2
  echo "== $name"
  timeout "$secs" "$@" > "$R/$name.log" 2>&1
  echo "rc=$?" >> "$R/$name.log"
  tail -n 14 "$R/$name.log"
  tar -C "$OUT" -rf "$OUT/results.tar" r && rm -rf "${R:?}"/*
}
