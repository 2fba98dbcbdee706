#!/usr/bin/env bash
# Coverage-guided fuzzing on stable Rust (cargo-fuzz, libFuzzer, no sanitizer):
#   fuzz/run.sh short [TARGET...]   ~20 s a target, from the committed corpus; CI runs this
#   fuzz/run.sh long [TARGET...]    10 minutes a target; new inputs land in target/fuzz/corpus
#   fuzz/run.sh cmin [TARGET...]    minimises corpus/ + target/fuzz/corpus into corpus/
#                                   (after a long run; then commit corpus/)
# FUZZ_SECONDS overrides the time per target. A crash stops the run (non-zero exit) and leaves
# the input in target/fuzz/artifacts/TARGET/: fix the code, then add the input to
# regressions/TARGET/ so the tests replay it (tests/it/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-short}
shift || true
case "$mode" in
  short) seconds=${FUZZ_SECONDS:-20} ;;
  long) seconds=${FUZZ_SECONDS:-600} ;;
  cmin) seconds=0 ;;
  *) echo "usage: fuzz/run.sh short|long|cmin [TARGET...]" >&2; exit 2 ;;
esac
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(stream_json x402_header voice_text voice_opus config http_request)
fi

# The version the committed Cargo.lock and flags were checked with.
if ! cargo fuzz --version 2>/dev/null | grep -q '0\.13\.'; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
out=$PWD/../target/fuzz
flags=(--sanitizer none --target-dir "$out")
cargo fuzz build "${flags[@]}"

for target in "${targets[@]}"; do
  found=("$out/corpus/$target")
  mkdir -p "$out/corpus/$target" "$out/artifacts/$target" "$out/logs"
  if [ "$mode" = cmin ]; then
    # The seeds, then the fewest small inputs (under FUZZ_CMIN_BYTES, 384 by default) that
    # reach what all small inputs found so far reach: the committed corpus stays small.
    merged=$(mktemp -d) pool=$(mktemp -d)
    cp corpus/"$target"/seed-* "$merged"/
    find "corpus/$target" "$out/corpus/$target" -type f ! -name 'seed-*' \
      -size -"${FUZZ_CMIN_BYTES:-384}"c -exec cp {} "$pool"/ \;
    cargo fuzz run "${flags[@]}" "$target" "$merged" "$pool" \
      -- -set_cover_merge=1 -timeout=30 2>"$out/logs/$target.cmin.log"
    rm -rf "corpus/$target" "$pool"
    mv "$merged" "corpus/$target"
    chmod 755 "corpus/$target"
    echo "$target: $(ls "corpus/$target" | wc -l) inputs, $(cat "corpus/$target"/* | wc -c) bytes"
    continue
  fi
  # Short runs read the committed corpus and write what they find under target/ only.
  if [ "$mode" = short ]; then
    rm -rf "$out/short/$target" && mkdir -p "$out/short/$target"
    found=("$out/short/$target")
  fi
  dirs=("${found[@]}" "corpus/$target")
  [ -d "regressions/$target" ] && dirs+=("regressions/$target")
  cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$target/" 2>&1 | tee "$out/logs/$target.$mode.log" |
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|thread .* panicked)' || true
  # A crash ends the run with a non-zero status (tee hides it: check the log).
  if grep -qE '^(==[0-9]+== ERROR|SUMMARY: libFuzzer)|Test unit written to' "$out/logs/$target.$mode.log"; then
    echo "$target: crashed, see $out/logs/$target.$mode.log and $out/artifacts/$target/" >&2
    exit 1
  fi
  echo "$target: $(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$out/logs/$target.$mode.log" | tail -1)"
done
