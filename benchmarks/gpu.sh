#!/usr/bin/env bash
# Every GPU row of issue 15 in one run, written to ONE markdown table:
#   layers     each equivariant layer against its fold (bf16 autocast + channels-last, as the trainer runs)
#   train      p4m_densenet training step with its controls (folded copy, densenet_m, densenet), float32 and
#              bf16 + channels-last, batch 256; the PCam epoch (262,144 patches) projected from the timed steps
#   slide      predict_dense on a generated Camelyon16-size slide at 10x (25,000 x 50,000 px), end to end
#
#   bash benchmarks/gpu.sh [--out FILE]      # on a CUDA machine; about 8 minutes on an H100/H200
#   bash benchmarks/gpu.sh --dry-run         # the same script on the CPU at tiny sizes (the tests run this)
#
# Targets on an H100/H200-class GPU: the slide in under 60 s, a PCam epoch of p4m_densenet in under 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=benchmarks/gpu.md
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) [ $# -ge 2 ] || { echo "gpu.sh: error: --out needs a file" >&2; exit 2; }; OUT=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "gpu.sh: error: unknown argument $1 (expected --dry-run or --out FILE)" >&2; exit 2 ;;
    esac
    shift
done

TABLE=$(mktemp)
trap 'rm -f "$TABLE"' EXIT
if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    WHERE="CPU dry run (tiny sizes: the script and its table are checked, the numbers mean nothing)"
    LAYERS=(--device cpu --batch 2 --size 12 --channels 2 --repeats 1)
    TRAIN=(--smoke)
    SLIDE=(--large --area 0.0002 --device cpu --tile-cells 4)
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu.sh: error: no CUDA device visible to torch; use --dry-run on the CPU" >&2; exit 2; }
    DEVICE=cuda
    WHERE=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
    LAYERS=(--device cuda --repeats 7)
    TRAIN=(--device cuda --repeats 7 --batch 256)
    SLIDE=(--large --area 1 --device cuda --sample 64)
fi

echo "== layers ($DEVICE)"
"$PY" benchmarks/layers.py "${LAYERS[@]}" --markdown "$TABLE"
echo "== training step ($DEVICE)"
"$PY" benchmarks/train.py "${TRAIN[@]}" --markdown "$TABLE"
echo "== large slide ($DEVICE)"
"$PY" benchmarks/slide.py "${SLIDE[@]}" --markdown "$TABLE"

{
    echo "# equipath GPU benchmark: $WHERE"
    echo
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)'), $(date -u +%Y-%m-%dT%H:%MZ), benchmarks/gpu.sh"
    echo
    cat "$TABLE"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
