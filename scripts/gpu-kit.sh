#!/usr/bin/env bash
# The GPU checks of `make test` and `make bench`, on a lent GPU machine that cannot build them.
#
# The GPU machines this project's sessions may be lent have a GPU, a python3 with PyTorch and
# its CUDA libraries, and nothing else of ours: no Rust toolchain, a different PyTorch than the
# libtorch xcam links (2.13), no network, and each call carries at most 64 MiB to them. So the
# checks travel built: the worker and the integration-test binary (stripped), libtorch 2.13's
# own libraries (compressed; their CUDA libraries are the machine's), and the wheels
# pytorch-grad-cam needs, in parts small enough for one call each. On a GPU node of your own,
# `make setup test bench` does all of this and more.
#
#   scripts/gpu-kit.sh pack      here: builds and packs .gpu-kit/part-NN and .gpu-kit/SHA256SUMS,
#                                and prints the calls that take them over
#   scripts/gpu-kit.sh receive   there, in the call that carries a part: keeps it in $KIT_STORE
#   scripts/gpu-kit.sh check     there, last: unpacks, then runs the GPU engine tests, the GPU
#                                grid of `make bench` and every loop of the worker's bench once,
#                                their logs in $OUT (or ./gpu-out)
#
# A machine goes back 30 s after a call: make the calls one after the other.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
kit="$root/.gpu-kit"
store="${KIT_STORE:-/var/tmp/xcam-kit}"

pack() {
  . scripts/torch-env.sh
  export LIBTORCH_USE_PYTORCH=1 PATH="$TORCH_VENV/bin:$PATH"
  cargo build --release -p xcam-worker --bin xcam-worker
  local it
  it=$(cargo test -p xcam-tests --test it --no-run --message-format=json \
        | python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "it" and m.get("executable"):
        print(m["executable"])' | tail -1)
  local stage="$kit/stage"
  rm -rf "$kit"; mkdir -p "$stage/bin" "$stage/lib" "$stage/wheels"
  strip -o "$stage/bin/xcam-worker" target/release/xcam-worker
  strip -o "$stage/bin/it" "$it"
  # The binaries find libtorch through the run path the build gave them; the kit recreates it.
  local libdir="" d runpath
  runpath=$(readelf -d target/release/xcam-worker | sed -n 's/.*R\(UN\)\?PATH.*\[\(.*\)\]/\2/p')
  for d in ${runpath//:/ }; do
    [[ -f "$d/libtorch_cuda.so" ]] && { libdir=$d; break; }
  done
  [[ -n "$libdir" ]] || { echo "the worker's run path ($runpath) holds no CUDA libtorch" >&2; exit 1; }
  echo "$libdir" > "$stage/libdir"
  # The test binary finds the repository where it was built (its CARGO_MANIFEST_DIR).
  echo "$root" > "$stage/built_in"
  # libtorch's own libraries; its CUDA libraries (cuDNN, cuBLAS, …) are the machine's, found
  # where its PyTorch keeps them (libtorch_cuda looks in ../../nvidia beside its directory).
  local lib
  for lib in libtorch.so libtorch_cpu.so libtorch_cuda.so libtorch_cuda_linalg.so libc10.so \
             libc10_cuda.so libtorch_nvshmem.so libtorch_global_deps.so libcaffe2_nvrtc.so libgomp.so.1; do
    cp "$libdir/$lib" "$stage/lib/"
  done
  python3 -m pip wheel -q --no-deps -w "$stage/wheels" \
    "grad-cam==$GRADCAM_VERSION" ttach
  # A part travels with the working tree (what git does not ignore), within a call's 64 MiB.
  local tree part_size
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
         | awk '{ s += $1 } END { print s }')
  part_size=$(( (63 << 20) - tree - (64 << 10) ))
  echo "==> compressing (a few minutes on two cores); parts of $((part_size >> 20)) MiB"
  tar -C "$stage" -cf - . | xz -6 -T0 | split -b "$part_size" -d - "$kit/part-"
  rm -rf "$stage"
  (cd "$kit" && sha256sum part-* > SHA256SUMS)
  local parts=("$kit"/part-*) n=0
  echo
  echo "Kit: ${#parts[@]} parts, $(du -ch "${parts[@]}" | tail -1 | cut -f1) in all. One device call each, back to back:"
  for p in "${parts[@]}"; do
    n=$((n + 1))
    local name=${p##*/}
    if (( n < ${#parts[@]} )); then
      echo "  run  carry=[\".gpu-kit/$name\"]  command='scripts/gpu-kit.sh receive'"
    else
      echo "  run  carry=[\".gpu-kit/$name\", \".gpu-kit/SHA256SUMS\"]  command='scripts/gpu-kit.sh receive && scripts/gpu-kit.sh check'  timeout_s=540"
    fi
  done
}

receive() {
  mkdir -p "$store"
  local p
  for p in "$kit"/part-* "$kit"/SHA256SUMS; do
    [[ -f "$p" ]] && mv -f "$p" "$store/" && echo "kept ${p##*/} ($(du -h "$store/${p##*/}" | cut -f1))"
  done
  return 0
}

# The libraries and binaries in place; prints the directory of libtorch.
install() {
  (cd "$store" && sha256sum --quiet -c SHA256SUMS) >&2
  local unpacked="$store/unpacked"
  rm -rf "$unpacked"; mkdir -p "$unpacked"
  cat "$store"/part-* | xz -d -T0 | tar -C "$unpacked" -xf -
  # KIT_LIBDIR: elsewhere than the build's run path, to try the kit where libtorch is installed
  # (the binaries then need LD_LIBRARY_PATH).
  local libdir="${KIT_LIBDIR:-$(cat "$unpacked/libdir")}"
  mkdir -p "$libdir"
  cp "$unpacked"/lib/* "$libdir/"
  local nvidia
  nvidia=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')
  [[ -d "$libdir/../../nvidia" ]] || ln -s "$nvidia" "$libdir/../../nvidia"
  mkdir -p target/release target/gpu-kit
  cp "$unpacked/bin/xcam-worker" target/release/xcam-worker
  cp "$unpacked/bin/it" target/gpu-kit/it
  # The test binary finds the repository where it was built.
  local built_in
  built_in=$(cat "$unpacked/built_in")
  if [[ "$built_in" != "$root" && ! -e "$built_in" ]]; then
    mkdir -p "$(dirname "$built_in")"; ln -s "$root" "$built_in"
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/xcam-site "$unpacked"/wheels/*.whl >&2
  echo "$libdir"
}

check() {
  local out="${OUT:-$root/gpu-out}"
  mkdir -p "$out"
  local libdir
  libdir=$(install)
  export PYTHONPATH="/tmp/xcam-site${PYTHONPATH:+:$PYTHONPATH}"
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    python3 -c 'import torch; print("machine PyTorch", torch.__version__, "CUDA", torch.version.cuda)'
    echo "libtorch 2.13 libraries in $libdir"
    ldd target/release/xcam-worker | grep -E "not found|torch|cudnn|cublas|cudart" || true
  } 2>&1 | tee "$out/machine.txt"
  local rc=0
  echo "==> the GPU engine tests"
  timeout 300 target/gpu-kit/it "${KIT_TESTS:-engine::on_a_gpu}" --test-threads 1 --nocapture 2>&1 | tee "$out/engine-tests.log" || rc=1
  # Every loop of the worker's own bench once, at the worker's default precision there: each
  # CAM method, the OOD score's cost, faithfulness, and the other memory layout (channels_last).
  echo "==> every loop of xcam-worker bench (DenseNet-121 with its reference, batch ${KIT_BATCH:-32})"
  local bundle=target/bench-models/densenet121
  [[ -f "$bundle/reference.npz" ]] ||
    python3 models/tools/export.py --arch densenet121 --num-classes 18 --out "$bundle" --reference-synthetic 200
  timeout 180 target/release/xcam-worker bench --model "$bundle" \
    --device "${KIT_DEVICE:-cuda:0}" --batch "${KIT_BATCH:-32}" --seconds 2 --replicas 1 2>&1 \
    | tee "$out/bench-loops.log" || rc=1
  # The longest step last: if the call runs out, the rest is already in $OUT.
  echo "==> the GPU grid of make bench"
  BENCH_GRID_ONLY=1 BENCH_GRID_BATCHES="${BENCH_GRID_BATCHES:-1 8 64}" BENCH_GRID_SECONDS="${BENCH_GRID_SECONDS:-2}" \
    timeout 360 scripts/bench.sh 2>&1 | tee "$out/bench-grid.log" || rc=1
  return $rc
}

case "${1:-}" in
  pack) pack ;;
  receive) receive ;;
  check) check ;;
  *) echo "usage: scripts/gpu-kit.sh pack|receive|check" >&2; exit 2 ;;
esac
