#!/usr/bin/env bash
# One GPU run, prepared to go unattended inside a short lease:
#   1. smoke: train.py on CUDA with --amp (paper preset, 1 epoch, a window every 20 steps), then
#      evaluate.py and inspect_checkpoint.py on that checkpoint, each timed;
#   2. speed: bench/speed.py (paper config, batch 256) with --amp;
#   3. quality: bench/quality.py at the paper's schedule (3 epochs, every window, batch 256, float32),
#      MSL and SMAP interleaved seed by seed, each run only if its estimated time still fits.
#
#   bench/gpu_check.sh DATA_DIR OUT [BUDGET_SECONDS]
#
# DATA_DIR holds the telemanom layout (labeled_anomalies.csv, data/{train,test}/<chan>.npy or .npy.gz,
# as ../shared/data/telemanom ships it); .npy.gz files are unzipped in place and the SMAP and MSL
# caches are built there, so give it a copy. OUT receives at most 7 files: results.tgz (the small
# results) and each quality seed's score arrays; keep the log yourself (`... 2>&1 | tee OUT/log.txt`).
# The exit status is 1 if any step failed, though every step still runs.
set -uo pipefail
if (($# < 2)); then
    echo "usage: bench/gpu_check.sh DATA_DIR OUT [BUDGET_SECONDS]" >&2
    exit 2
fi
data=$1
out=$2
budget=${3:-480}
failures=0
start=$SECONDS
work=$(mktemp -d)
python=${PYTHON:-python3}
device=${DEVICE:-cuda}                                                   # DEVICE=cpu: a dry run here
read -ra schedule <<<"${SCHEDULE:---epochs 3 --train-stride 1}"           # the paper's
export PYTHONUNBUFFERED=1
mkdir -p "$out"

elapsed() { echo $((SECONDS - start)); }
timed() { # timed LABEL COMMAND...: run it, print its wall time and exit status
    local label=$1 began=$SECONDS status
    shift
    echo "== $label: $*"
    "$@"
    status=$?
    echo "== $label: exit $status after $((SECONDS - began)) s (t = $(elapsed) s)"
    ((status == 0)) || failures=$((failures + 1))
    return $status
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
find "$data/data" -name '*.npy.gz' -exec gunzip -f {} +
timed "build SMAP and MSL caches" "$python" -c "
import sys; from data_factory.registry import load_dataset
for name in ('SMAP', 'MSL'):
    d = load_dataset(name, sys.argv[1]); print(name, d.train.shape, d.test.shape)" "$data"

run="$work/run"
timed "train MSL with --amp" "$python" train.py --dataset MSL --data-dir "$data" --preset paper --epochs 1 \
    --train-stride 20 --device "$device" --amp --output-dir "$run" --no-progress
timed "evaluate MSL" "$python" evaluate.py --dataset MSL --data-dir "$data" --output-dir "$run" --device "$device" \
    --batch-size 256
timed "inspect the checkpoint" "$python" inspect_checkpoint.py "$run/MSL_checkpoint.pth"

speed="$work/speed"
# float32 training throughput can be read off the quality runs below (every window, 3 epochs, timed).
timed "speed with --amp" "$python" bench/speed.py --data-dir "$data" --configs paper --batch-sizes 256 --steps 20 \
    --max-windows 5120 --device "$device" --no-peer --no-fleet --repeats 1 --output "$speed" --amp

quality="$work/quality"
declare -A took=()
for seed in 0 1 2; do
    for name in MSL SMAP; do
        # The estimate: this dataset's previous seed, else 2.5x MSL's (SMAP has 2.3x the windows), else 60 s.
        estimate=${took[$name]:-$(( ${took[MSL]:-24} * 5 / 2 ))}
        if (( $(elapsed) + estimate > budget )); then
            echo "== skip $name seed $seed: about $estimate s needed, $((budget - $(elapsed))) s left"
            continue
        fi
        began=$SECONDS
        timed "quality $name seed $seed" "$python" bench/quality.py --data-dir "$data" --datasets "$name" \
            --seeds "$seed" "${schedule[@]}" --batch-size 256 --device "$device" --output "$quality"
        took[$name]=$((SECONDS - began))
        mv "$quality/quality_${name}_seed${seed}_scores.npz" "$out/" 2>/dev/null
    done
done

tar -czf "$out/results.tgz" -C "$work" --exclude='*.pth' --exclude='*.npy' --exclude='*.npz' .
echo "== done after $(elapsed) s, $failures step(s) failed"
((failures == 0))
