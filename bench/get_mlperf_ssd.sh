#!/usr/bin/env bash
# Extract the MLPerf SSD-ResNet34 reference (mlcommons/training, single_stage_detector/ssd) outside
# this repository, for the SSD `--compare` benchmarks (bench/ssd_ref_runner.py runs it).
#
#   bash bench/get_mlperf_ssd.sh [SOURCE] [DEST]
#
# SOURCE: a local clone or mirror of mlcommons/training (bare or not), or a git URL
#         (default https://github.com/mlcommons/training.git; needs network).
# DEST:   where the reference's files go (default $REF_SSD_DIR, else /work/ref_compare/mlperf_ssd);
#         refused when it lies inside this repository: the reference's module names (utils,
#         train, eval, ...) must never be importable from the project.
#
# Which commit: the directory `single_stage_detector/ssd` still exists in the repository today,
# but since commit 8baca745 ("[SSD] Updated benchmark for v2.0", 2022-03-17) it holds the
# RetinaNet benchmark; that commit removed SSD-ResNet34 (ssd300.py, base_model.py, the
# per-image Encoder in utils.py). The peer is therefore that commit's parent, 4a4d5a0b
# (2021-12-07), the last commit with SSD-ResNet34. The script derives it from the history
# (the commit that deleted ssd300.py, then its parent) and says so when that differs from the
# pinned hash; MLPERF_SSD_COMMIT=<hash> overrides both.
set -euo pipefail

PINNED=4a4d5a0b7efe99c680306b1940749211d4238a84
SOURCE=${1:-https://github.com/mlcommons/training.git}
DEST=${2:-${REF_SSD_DIR:-/work/ref_compare/mlperf_ssd}}
SUBDIR=single_stage_detector/ssd
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

DEST=$(realpath -m "$DEST")
case "$DEST/" in
  "$REPO_ROOT"/*) echo "get_mlperf_ssd: $DEST is inside this repository; pick a directory outside it" >&2
                  exit 1 ;;
esac

mkdir -p "$DEST"

TMP=""
cleanup() { [ -n "$TMP" ] && rm -rf "$TMP"; return 0; }
trap cleanup EXIT
if [ -d "$SOURCE" ]; then
  GIT_DIR_ARGS=(-C "$SOURCE")
else
  # Blobs are fetched on demand by `git archive` (partial clone): only the SSD files come down.
  TMP=$(mktemp -d)
  git clone --quiet --bare --filter=blob:none "$SOURCE" "$TMP/training.git"
  GIT_DIR_ARGS=(-C "$TMP/training.git")
fi

if [ -n "${MLPERF_SSD_COMMIT:-}" ]; then
  COMMIT=$(git "${GIT_DIR_ARGS[@]}" rev-parse --verify "${MLPERF_SSD_COMMIT}^{commit}")
else
  REMOVED=$(git "${GIT_DIR_ARGS[@]}" log --all --diff-filter=D -1 --format=%H -- "$SUBDIR/ssd300.py")
  if [ -z "$REMOVED" ]; then
    echo "get_mlperf_ssd: $SOURCE has no commit that removed $SUBDIR/ssd300.py; using the pinned $PINNED" >&2
    COMMIT=$PINNED
  else
    COMMIT=$(git "${GIT_DIR_ARGS[@]}" rev-parse "$REMOVED^")
    [ "$COMMIT" = "$PINNED" ] || echo "get_mlperf_ssd: note: derived $COMMIT, pinned $PINNED" >&2
  fi
fi
git "${GIT_DIR_ARGS[@]}" cat-file -e "$COMMIT:$SUBDIR/ssd300.py" || {
  echo "get_mlperf_ssd: $COMMIT has no $SUBDIR/ssd300.py (not the SSD-ResNet34 reference)" >&2; exit 1; }

git "${GIT_DIR_ARGS[@]}" archive --format=tar "$COMMIT" "$SUBDIR" | tar -x -C "$DEST" --strip-components=2
{
  echo "source: mlcommons/training ($SOURCE)"
  echo "commit: $COMMIT"
  git "${GIT_DIR_ARGS[@]}" log -1 --format='date: %ad%nsubject: %s' --date=short "$COMMIT"
  echo "path: $SUBDIR"
} > "$DEST/REFERENCE_COMMIT"
echo "MLPerf SSD-ResNet34 reference at $COMMIT -> $DEST"
