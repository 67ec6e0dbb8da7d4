#!/bin/bash
# One device-machine session for the GPU figures (docs/performance.md, "GPU"), as one command:
# throughput + parity against PyTorch (gpu.py) of up to three wgpu builds of `align`, then
# per-kernel profiles of each (CubeCL's profiling log, xtask/bench/cubecl_profile.py).
#
# Prepare here (the device machine has no Rust), in the repository root:
#   cargo build --release -p align-cli --features wgpu            && cp target/release/align /tmp/b/align-cur
#   cargo build --release -p align-cli --features wgpu,burn/fusion && cp target/release/align /tmp/b/align-fusion
#   (optional) --features wgpu,burn/autotune                       -> /tmp/b/align-autotune
#   strip /tmp/b/align-*; mkdir -p .gpubin/proc; tar -C /tmp/b -cJf .gpubin/bins.tar.xz .
#   cp test-data/align-base-random/{tokenizer.json,tokenizer_config.json,processor_config.json,preprocessor_config.json} .gpubin/proc/
#   echo /.gpubin/ >> .git/info/exclude   (and the Vulkan loader debs in .gl: see the device tool's README)
# Run there (device tool, carry [".gl", ".gpubin"], timeout ~560 s):
#   bash xtask/bench/gpu_session.sh
# Results land in $OUT: gpu.json / gpu.log, prof-img-*.txt, prof-txt-*.txt.
set -u
R=$(pwd); T0=$(date +%s); t(){ echo "== [$(( $(date +%s) - T0 )) s] $*"; }
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done; ldconfig
export XDG_RUNTIME_DIR=/tmp PYTHONUNBUFFERED=1
B=/tmp/gpu-bins; mkdir -p $B; tar -C $B -xJf .gpubin/bins.tar.xz; ls -la $B
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
VARIANTS=(); for v in cur fusion; do [ -x $B/align-$v ] && VARIANTS+=(--align "$v=$B/align-$v@f32"); done
t gpu.py
timeout "${GPUPY_S:-330}" python3 xtask/bench/gpu.py "${VARIANTS[@]}" --rounds 1 \
  --processor-files .gpubin/proc --json "$OUT/gpu.json" --timeout 120 2>&1 | tee "$OUT/gpu.log"
W=$R/target/gpu; M=$W/bpk
IMGS=$(ls $W/inputs/*.jpg | head -24)
mapfile -t CAPS < <(python3 -c "import sys; sys.path.insert(0, 'xtask/bench'); import compare
for c in (compare.CAPTIONS * 20)[:96]: print(c)")
mkdir -p /tmp/gpu-prof && cd /tmp/gpu-prof
for v in cur fusion; do
  [ -x $B/align-$v ] || continue
  for what in img txt; do
    t "profile $v $what"
    printf '[profiling.logger]\nfile = "/tmp/gpu-prof/%s-%s.log"\nlevel = "basic"\n' $v $what > cubecl.toml
    if [ $what = img ]; then
      timeout 60 $B/align-$v --device wgpu embed-images --model $M --out i.npy --batch-size 8 $IMGS 2>&1 | tail -1
    else
      timeout 60 $B/align-$v --device wgpu embed-texts --model $M --out t.npy --batch-size 32 "${CAPS[@]}" 2>&1 | tail -1
    fi
    python3 $R/xtask/bench/cubecl_profile.py $v-$what.log > "$OUT/prof-$what-$v.txt"; head -8 "$OUT/prof-$what-$v.txt"
  done
done
rm -f cubecl.toml
if [ -x $B/align-autotune ]; then
  t autotune
  ALL=$(ls $W/inputs/*.jpg | head -64); Q=$(ls $W/inputs/*.jpg | head -16)
  for n in 1 2; do timeout 100 $B/align-autotune --device wgpu embed-images --model $M --out a.npy --batch-size 8 $ALL 2>&1 | tail -1; done
  timeout 60 $B/align-autotune --device wgpu embed-images --model $M --out q.npy --batch-size 8 $Q 2>&1 | tail -1
  python3 -c "import numpy as np; a = np.load('a.npy'); r = np.load('$W/torch_f32_images.npy')
print('autotune vs PyTorch f32, images:', float(abs(a - r).max()))"
fi
t end
