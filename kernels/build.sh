#!/usr/bin/env bash
# Build libsimba_ort_ops.so, the ONNX Runtime custom-op library of the `simba` domain (kernels/README.md).
#
#   kernels/build.sh [--cuda | --no-cuda] [--aot | --no-aot] [--out DIR] [--check]
#
# --cuda      build the CUDA kernels too (an error if nvcc is missing); default: when nvcc is on PATH
# --no-cuda   CPU kernels only
# --aot       compile our Triton kernels ahead of time into the library (implies --cuda; needs python3 with
#             triton; `python3 -m simba_convert.ops.aot`, architectures SIMBA_AOT_ARCHS, default "80 90").
#             Default in a CUDA build when python3 imports triton; the CUDA ops then run these kernels and keep
#             the hand-written ones for what has no cubin (kernels/README.md, "Triton AOT")
# --no-aot    CUDA build with the hand-written kernels only
# --out DIR   output directory (default: kernels/build)
# --check     compile only, into a temporary directory (CI compile check); prints nothing on success
#
# The ONNX Runtime headers (C/C++ API 21) come from Debian trixie's `libonnxruntime-dev` 1.21.0+dfsg-1,
# downloaded by name with apt into a cache directory and checked against a pinned SHA256; they are not
# vendored. Set ORT_INCLUDE_DIR to use headers you already have, SIMBA_ORT_CACHE to move the cache.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEB_NAME=libonnxruntime-dev
DEB_VERSION=1.21.0+dfsg-1
DEB_SHA256=14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08
CACHE="${SIMBA_ORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/simba-convert/ort-${DEB_VERSION}}"
CUDA_ARCHS="${SIMBA_CUDA_ARCHS:-80 90}"

cuda=auto out="$HERE/build" check=0 aot=auto
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cuda) cuda=yes ;;
    --no-cuda) cuda=no ;;
    --aot) aot=explicit; cuda=yes ;;
    --no-aot) aot=0 ;;
    --out) out="$2"; shift ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

fetch_headers() {
  # Prints the include directory holding onnxruntime_lite_custom_op.h, downloading it if needed.
  if [[ -n "${ORT_INCLUDE_DIR:-}" ]]; then
    [[ -f "$ORT_INCLUDE_DIR/onnxruntime_lite_custom_op.h" ]] \
      || { echo "build.sh: ORT_INCLUDE_DIR=$ORT_INCLUDE_DIR has no onnxruntime_lite_custom_op.h" >&2; exit 1; }
    echo "$ORT_INCLUDE_DIR"; return
  fi
  local inc="$CACHE/root/usr/include/onnxruntime"
  if [[ -f "$CACHE/ok" && -f "$inc/onnxruntime_lite_custom_op.h" ]]; then echo "$inc"; return; fi
  command -v apt-get >/dev/null || { echo "build.sh: no apt-get; set ORT_INCLUDE_DIR to ONNX Runtime >= 1.21 headers" >&2; exit 1; }
  mkdir -p "$CACHE/lists/partial" "$CACHE/archives/partial"
  # A private apt configuration: only trixie's main component, its own lists and archive directory,
  # so the system's apt state is never touched.
  local uri
  uri="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  uri="${uri:-http://deb.debian.org/debian}"
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" >"$CACHE/trixie.sources"
  local opts=(-o "Dir::Etc::SourceList=$CACHE/trixie.sources" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$CACHE/lists" -o "Dir::Cache::Archives=$CACHE/archives"
              -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Debug::NoLocking=1
              -o "APT::Sandbox::User=$(id -un)")
  echo "build.sh: fetching $DEB_NAME=$DEB_VERSION (ONNX Runtime headers) into $CACHE" >&2
  apt-get -qq "${opts[@]}" update >&2
  (cd "$CACHE" && apt-get -qq "${opts[@]}" download "$DEB_NAME=$DEB_VERSION" >&2)
  local deb="$CACHE/${DEB_NAME}_${DEB_VERSION}_amd64.deb"
  echo "$DEB_SHA256  $deb" | sha256sum -c --quiet - >&2 \
    || { echo "build.sh: SHA256 mismatch for $deb" >&2; rm -f "$deb"; exit 1; }
  rm -rf "$CACHE/root" && dpkg -x "$deb" "$CACHE/root"
  rm -rf "$CACHE/lists"  # ~20 MB of package lists, not needed once the .deb is here
  touch "$CACHE/ok"
  echo "$inc"
}

if [[ "$cuda" == auto ]]; then cuda=$(command -v nvcc >/dev/null && echo yes || echo no); fi
if [[ "$cuda" == yes ]] && ! command -v nvcc >/dev/null; then echo "build.sh: --cuda given but nvcc is not on PATH" >&2; exit 1; fi
if [[ "$aot" == auto ]]; then
  aot=0
  if [[ "$cuda" == yes ]] && python3 -c "import triton" >/dev/null 2>&1; then aot=1; fi
fi

ORT_INC="$(fetch_headers)"
if [[ $check == 1 ]]; then out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT; fi
mkdir -p "$out/obj"
CXXFLAGS=(-std=c++17 -O3 -fno-trapping-math -fPIC -fvisibility=hidden -fvisibility-inlines-hidden -Wall -Wextra -Wno-unused-parameter -Wno-psabi -I"$ORT_INC")
objs=("$out/obj/simba_ort_ops.o")
for src in cpu_kernels cpu_kernels_ssd; do  # Mamba-1's kernels, Mamba-2's
  g++ "${CXXFLAGS[@]}" -c "$HERE/$src.cc" -o "$out/obj/$src.o"
  objs+=("$out/obj/$src.o")
  if [[ "$(uname -m)" == x86_64 ]]; then
    # the same kernels for AVX2+FMA and AVX-512 CPUs, chosen at run time (simba_ort_ops.cc, cpu_kernels<K>())
    g++ "${CXXFLAGS[@]}" -mavx2 -mfma -DSIMBA_CPU_ISA=avx2 -c "$HERE/$src.cc" -o "$out/obj/${src}_avx2.o"
    g++ "${CXXFLAGS[@]}" -mavx2 -mfma -mavx512f -DSIMBA_CPU_ISA=avx512 -c "$HERE/$src.cc" -o "$out/obj/${src}_avx512.o"
    objs+=("$out/obj/${src}_avx2.o" "$out/obj/${src}_avx512.o")
  fi
done
if [[ "$(uname -m)" == x86_64 ]]; then CXXFLAGS+=(-DSIMBA_HAVE_AVX2); fi
g++ "${CXXFLAGS[@]}" -c "$HERE/simba_ort_ops.cc" -o "$out/obj/simba_ort_ops.o"
# Export RegisterCustomOps only: nothing of ours or of the static libraries can clash with the host process.
# (and the extern "C" CUDA launchers, simba_cuda_*, for ctypes tests)
printf '{ global: RegisterCustomOps; simba_cuda_*; simba_aot_*; local: *; };\n' >"$out/obj/exports.map"
LDFLAGS=(-shared -Wl,--exclude-libs,ALL -Wl,--no-undefined -Wl,--version-script="$out/obj/exports.map")
LIBS=(-lpthread)
if [[ "$cuda" == yes ]]; then
  # nvcc may be a wrapper script; its dry run names the real toolkit root (TOP)
  cuda_home="${CUDA_HOME:-$(nvcc --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)}"
  gencode=()
  for a in $CUDA_ARCHS; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
  last="${CUDA_ARCHS##* }"; gencode+=(-gencode "arch=compute_$last,code=compute_$last")  # PTX for newer GPUs
  # nvcc cannot parse onnxruntime_lite_custom_op.h (ONNX.md pitfall 8): the .cu file holds only the
  # kernels and extern "C" launchers; the ORT glue is compiled by g++ with SIMBA_WITH_CUDA.
  nvcc -std=c++17 -O3 -Xcompiler -fPIC,-fvisibility=hidden "${gencode[@]}" -c "$HERE/cuda_kernels.cu" -o "$out/obj/cuda_kernels.o"
  g++ "${CXXFLAGS[@]}" -DSIMBA_WITH_CUDA -c "$HERE/cuda_ops.cc" -o "$out/obj/cuda_ops.o"
  g++ "${CXXFLAGS[@]}" -DSIMBA_WITH_CUDA -c "$HERE/simba_ort_ops.cc" -o "$out/obj/simba_ort_ops.o"
  objs+=("$out/obj/cuda_kernels.o" "$out/obj/cuda_ops.o")
  if [[ $aot != 0 ]]; then
    # Our Triton kernels as cubins (simba_convert/ops/aot.py) and their launchers (aot_ops.cu)
    aot_archs="${SIMBA_AOT_ARCHS:-80 90}"
    if ! PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" python3 -m simba_convert.ops.aot --quiet --out "$out/aot" \
        --arch "${aot_archs// /,}"; then
      [[ $aot == explicit ]] && { echo "build.sh: the Triton AOT step failed" >&2; exit 1; }
      echo "build.sh: warning: the Triton AOT step failed; building the hand-written CUDA kernels only (--no-aot to skip it)" >&2
      aot=0
    fi
  fi
  if [[ $aot != 0 ]]; then
    gcc -O1 -fPIC -fvisibility=hidden -c "$out/aot/simba_aot_kernels.c" -o "$out/obj/simba_aot_kernels.o"
    nvcc -std=c++17 -O3 -Xcompiler -fPIC,-fvisibility=hidden "${gencode[@]}" -I"$out/aot" -c "$HERE/aot_ops.cu" \
      -o "$out/obj/aot_ops.o"
    objs+=("$out/obj/simba_aot_kernels.o" "$out/obj/aot_ops.o")
    g++ "${CXXFLAGS[@]}" -DSIMBA_WITH_CUDA -DSIMBA_WITH_AOT -I"$cuda_home/include" -c "$HERE/cuda_ops.cc" \
      -o "$out/obj/cuda_ops.o"
  fi
  # Static cudart: the library needs no CUDA runtime of its own and shares the driver context with ORT.
  LIBS+=(-L"$cuda_home/lib64" -L"$cuda_home/lib" -L"$cuda_home/targets/x86_64-linux/lib" -l:libcudart_static.a -ldl -lrt)
fi
g++ "${LDFLAGS[@]}" "${objs[@]}" -o "$out/libsimba_ort_ops.so" "${LIBS[@]}"
if [[ $check == 0 ]]; then echo "$out/libsimba_ort_ops.so (cuda: $cuda, triton aot: $([[ $aot != 0 ]] && echo yes || echo no))"; fi
