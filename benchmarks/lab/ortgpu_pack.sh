#!/usr/bin/env bash
# Pack onnxruntime-gpu for the H200 machine, whose calls carry at most 64 MiB with the working tree.
# Run in the repository root. Downloads the cp312 wheel into .ortgpu/ (git-ignored), keeps what the CUDA
# execution provider needs (the TensorRT provider library is left out), compresses it with xz (≈ 200 MB
# instead of the wheel's 256 MB) and splits it into parts of PART bytes (default 40.6 MB, so that a part
# plus the tracked tree plus ~8 MB of other carried data stays under the limit). Then, on one warm
# machine, one `run` per part carrying only that part (each within 30 s of the last):
#     mkdir -p /root/ortparts && cp .ortgpu/qNN /root/ortparts/
# and in the last call
#     cat /root/ortparts/q* | python3 -c "import lzma,sys,tarfile; \
#         tarfile.open(fileobj=lzma.LZMAFile(sys.stdin.buffer), mode='r|').extractall('/root/ortgpu_site')"
#     export PYTHONPATH=/root/ortgpu_site:.
# (bench_onnx.py --cuda calls onnxruntime.preload_dlls() itself, which finds torch's CUDA libraries.)
#
#   benchmarks/lab/ortgpu_pack.sh [VERSION] [PART]
set -euo pipefail
VER=${1:-1.31.1}
PART=${2:-40600000}
grep -qx '/.ortgpu/' .git/info/exclude 2>/dev/null || echo '/.ortgpu/' >> .git/info/exclude
mkdir -p .ortgpu && cd .ortgpu
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d . "onnxruntime-gpu==$VER"
rm -rf x q[0-9][0-9] ortgpu.tar.xz && mkdir x
python3 -m zipfile -e onnxruntime_gpu-"$VER"-*.whl x
rm -f x/onnxruntime/capi/libonnxruntime_providers_tensorrt.so
tar -C x -cf - . | xz -9 -T0 > ortgpu.tar.xz
split -b "$PART" -d ortgpu.tar.xz q
rm -rf x
ls -l q[0-9][0-9]
