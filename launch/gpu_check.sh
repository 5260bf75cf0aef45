#!/usr/bin/env bash
# launch/gpu_check.sh -- builds lmforge on a GPU machine from the bundle launch/gpu_pack.sh made,
# and checks what only a GPU can: the NCCL backend, bf16 CUDA training with exact resume, speed.
#
# Usage: launch/gpu_check.sh [BUNDLE.tar.gz]   (from anywhere; default build/gpu_bundle/lmforge_gpu_bundle.tar.gz)
# Env:   GPU_CHECK_BUILD   build folder (default build_gpu/ in the source root); the bundle is
#                          unpacked into it, the runs go to GPU_CHECK_BUILD/runs/
#        GPU_CHECK_LOG     the one log everything goes to (default GPU_CHECK_BUILD/gpu_check.log)
#        GPU_CHECK_DRY_RUN 1: no GPU (see below); 0: GPU mode; unset: dry run exactly when neither
#                          nvidia-smi nor python3's torch sees a GPU
#        GPU_CHECK_JOBS    parallel compile jobs (default: the number of cores)
#        GPU_CHECK_RESUME_RTOL  tolerance of the resume comparison (default 1e-6, relative)
#        GPU_CHECK_DRY_TRAIN=1  in a dry run, also run d/e (resume checks) on the CPU
#        GPU_CHECK_HIDE_SYSTEM=0  in a dry run, do not hide this machine's copies (see below)
#        PYTHON            the python that holds PyTorch (default python3)
#
# What it does, in order, continuing past failures; everything it prints (and every command's
# output) goes to one log (tee), and it ends with a PASS/FAIL/SKIPPED table (exit 1 on any FAIL):
#   setup  unpacks the bundle (again only when the tarball is newer), checks that the machine's
#          glibc is at least the one the bundle needs and that a C/C++ compiler is there; finds
#          LibTorch (`torch.utils.cmake_prefix_path` of PYTHON) and NCCL (pip's nvidia-nccl:
#          nvidia/nccl/{include,lib/libnccl.so.2}, else /usr/local/cuda, else /usr).
#   configure  CMake + Ninja into GPU_CHECK_BUILD, -DLMFORGE_REQUIRE_NCCL=ON, the bundle found
#          through CMAKE_PREFIX_PATH and explicit hints, because the packages' own wrappers and
#          files say /usr: HDF5 (no h5cc: HDF5_ROOT, HDF5_C_INCLUDE_DIR, HDF5_hdf5_LIBRARY_RELEASE),
#          MPI (no mpicc: MPI_C_HEADER_DIR, MPI_C_LIB_NAMES, MPI_mpi_LIBRARY), OpenSSL, PCRE2, the
#          multiarch include folder, and -rpath-link for the libraries' own dependencies. The
#          configure step also FAILs when any dependency resolved outside the bundle (GPU mode:
#          only reported; the machine's own copy is then used).
#   build  lmforge lmforge_tests lmforge_mpi_tests train_throughput with ninja -k 0.
#   Every lmforge program then runs with LD_LIBRARY_PATH, PATH, OPAL_PREFIX and
#   PMIX_MCA_mca_base_component_path pointing into the bundle (OpenMPI and PMIx are relocated by
#   environment only); the shell itself and python keep the machine's own environment.
#   a. lmforge version.
#   b. the model, HF, optimizer and checkpoint GoogleTest suites (tests/trainer/...).
#   mpi. the MPI communicator tests (Comm.*) as one process and under the bundle's mpirun -np 2:
#          the bundled OpenMPI works on this machine (c starts MPI the same way).
#   c. NcclComm.* as ONE process (lmforge_mpi_tests without mpirun: a world of 1, NCCL on GPU 0);
#          a skipped test counts as FAIL.
#   d. resume on CUDA in bf16 (configs/quickstart.yaml, its fortune files taken from the bundle,
#          schedule.kind=constant so the learning rate of a step does not depend on max_steps):
#          run A uninterrupted to 80 steps; run B to 60 steps with a checkpoint every 20, then a
#          new run from B's step-60 checkpoint to 80; the losses of steps 61..80 must agree within
#          GPU_CHECK_RESUME_RTOL. Bit equality is not required on a GPU, whose kernels (atomics in
#          attention and embedding backward) need not be deterministic; whether they were equal bit
#          for bit, and how far A and B already differ over steps 1..60 (no resume there), is
#          printed beside the verdict.
#   e. the same with data.cross_document_attention=false.
#   f. throughput: the quickstart model (100 steps), and a ~0.85B-parameter llama (hidden 2048, 16
#          layers, 32 heads, 8 kv heads, intermediate 5632, seq 1024, vocab 32000, micro-batch 8)
#          for 12 steps, both bf16 on CUDA:
#          median tokens/s of metrics.jsonl's `tokens_per_s` rows, and peak GPU memory used
#          (nvidia-smi sampled every 200 ms).
#
# The dry run (GPU_CHECK_DRY_RUN=1, or no GPU found) uses the same bundle with a CPU LibTorch
# (PYTHON's torch if it has CMake files, else Debian's /usr/lib/x86_64-linux-gnu/cmake/Torch) and
# NCCL from /usr/local/cuda when present. As root with `unshare` it first hides this machine's
# own copies of the bundled packages (headers, CMake files, h5cc/mpicc/mpirun, OpenMPI's and
# PMIx's plugin folders, the fortune files) in a private mount namespace. It runs setup,
# configure, build, a, b and mpi, and reports c-f as SKIPPED (no GPU). What it proves: the
# bundle is complete and relocatable (configure finds every dependency in it, the hints are
# right, the full build links against it), lmforge and the gtests run on its libraries, and the
# bundled OpenMPI starts a singleton and an mpirun world from the unpacked prefix; with CUDA and
# NCCL in /usr/local/cuda the NCCL backend compiles and links too (its tests then skip: no GPU).
# GPU_CHECK_DRY_TRAIN=1 also runs d and e on the CPU, which checks the resume procedure and the
# comparison (bit-identical on a CPU). What it does not prove: anything about CUDA, NCCL, pip's LibTorch 2.x headers and libraries (the dry run
# compiles against Debian's LibTorch 1.13), or the GPU machine's compiler, CMake and glibc.
#
# What it does NOT do: install anything outside GPU_CHECK_BUILD, download anything, patch the
# bundle's files, run the full ctest suite (launch/test.sh does that on CPU machines), or run
# several GPUs (c uses a world of one; multi-GPU NCCL needs mpirun -np N on an N-GPU machine).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bundle_tar=${1:-$root/build/gpu_bundle/lmforge_gpu_bundle.tar.gz}
build=${GPU_CHECK_BUILD:-$root/build_gpu}
log=${GPU_CHECK_LOG:-$build/gpu_check.log}
PYTHON=${PYTHON:-python3}
rtol=${GPU_CHECK_RESUME_RTOL:-1e-6}
jobs=${GPU_CHECK_JOBS:-$(nproc)}
mkdir -p "$build" "$(dirname "$log")"
log=$(cd "$(dirname "$log")" && pwd)/$(basename "$log")
bundle_tar=$(cd "$(dirname "$bundle_tar")" 2>/dev/null && pwd)/$(basename "$bundle_tar")
build=$(cd "$build" && pwd)

# A private mount namespace for the dry run (root + unshare): this machine's own copies of the
# bundled packages are hidden, so whatever builds and runs can only have come from the bundle.
hide_system_copies() {
  local d f
  for d in /usr/include/hdf5 /usr/lib/x86_64-linux-gnu/hdf5 /usr/lib/x86_64-linux-gnu/openmpi \
           /usr/lib/x86_64-linux-gnu/pmix2 /usr/share/openmpi /usr/include/yaml-cpp /usr/include/nlohmann \
           /usr/include/CLI /usr/include/gtest /usr/include/gmock /usr/include/openssl \
           /usr/include/x86_64-linux-gnu/openssl /usr/include/x86_64-linux-gnu/openmpi /usr/include/libpng16 \
           /usr/lib/x86_64-linux-gnu/cmake/yaml-cpp /usr/lib/x86_64-linux-gnu/cmake/GTest \
           /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json /usr/share/games/fortunes; do
    [ -d "$d" ] && mount -t tmpfs -o size=1m,mode=755 none "$d"
  done
  # Files (a bind mount lands on a link's target: only the programs are hidden through links;
  # shared libraries the machine's own tools load stay, the bundle's are found first anyway).
  for f in /usr/include/pcre2.h /usr/include/png.h /usr/include/pngconf.h /usr/include/zlib.h \
           /usr/lib/x86_64-linux-gnu/libgtest.a /usr/lib/x86_64-linux-gnu/libgtest_main.a; do
    [ -f "$f" ] && [ ! -L "$f" ] && mount --bind /dev/null "$f"
  done
  for f in /usr/bin/h5cc /usr/bin/mpicc /usr/bin/mpirun /usr/bin/mpiexec /usr/bin/orted; do
    [ -e "$f" ] && mount --bind /dev/null "$(readlink -f "$f")"
  done
  return 0
}

dry=${GPU_CHECK_DRY_RUN:-}
if [ -z "$dry" ]; then
  if { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; } ||
     "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    dry=0
  else
    dry=1; dry_reason="no GPU found (nvidia-smi -L and $PYTHON's torch.cuda see none)"
  fi
fi
[ "$dry" = 1 ] && dry_reason=${dry_reason:-GPU_CHECK_DRY_RUN=1}

if [ "$dry" = 1 ] && [ -z "${GPU_CHECK_IN_NAMESPACE:-}" ] && [ "$(id -u)" = 0 ] &&
   [ "${GPU_CHECK_HIDE_SYSTEM:-1}" = 1 ] && command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
  export GPU_CHECK_IN_NAMESPACE=1 GPU_CHECK_DRY_RUN=1 GPU_CHECK_DRY_REASON="$dry_reason"
  exec unshare -m --propagation private bash -c "$(declare -f hide_system_copies); hide_system_copies && exec bash \"\$0\" \"\$@\"" \
    "$0" "$bundle_tar"
fi
dry_reason=${GPU_CHECK_DRY_REASON:-$dry_reason}

: >"$log"
exec > >(tee -a "$log") 2>&1
echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${HOSTNAME:-$(uname -n)}, source $root ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "gpu_check: build $build, log $log, bundle $bundle_tar"
if [ "$dry" = 1 ]; then
  echo "gpu_check: DRY RUN: $dry_reason; CPU LibTorch, c-f skipped"
  [ -n "${GPU_CHECK_IN_NAMESPACE:-}" ] && echo "gpu_check: this machine's own copies of the bundled packages are hidden (private mount namespace)"
fi

# ---- results ---------------------------------------------------------------------------------
names=() results=() notes=()
record() { names+=("$1"); results+=("$2"); notes+=("${3:-}"); echo "gpu_check: [$2] $1${3:+: $3}"; }
banner() { echo; echo "==== $* ===="; }
# run_step NAME CMD...: PASS when the command exits 0.
run_step() {
  local name=$1; shift
  banner "$name"; echo "+ $*"
  "$@"; local rc=$?
  if [ $rc = 0 ]; then record "$name" PASS; else record "$name" FAIL "exit $rc"; fi
  return $rc
}
summary() {
  banner "summary"
  local i fails=0
  for i in "${!names[@]}"; do
    printf '%-8s %-44s %s\n' "${results[$i]}" "${names[$i]}" "${notes[$i]}"
    [ "${results[$i]}" = FAIL ] && fails=$((fails + 1))
  done
  local pass=0 skip=0
  for i in "${results[@]}"; do [ "$i" = PASS ] && pass=$((pass + 1)); [ "$i" = SKIPPED ] && skip=$((skip + 1)); done
  echo "gpu_check: $pass passed, $fails failed, $skip skipped"
  [ "$dry" = 1 ] && echo "gpu_check: this was a DRY RUN ($dry_reason): it checks the bundle, the hints and the" \
    "build on a CPU LibTorch; CUDA, NCCL and pip's LibTorch are checked only on a GPU machine"
  echo "gpu_check: log $log"
  [ $fails = 0 ]
}
py() { "$PYTHON" "$@"; }   # the bundle's libraries are in run_env only, never in this shell's environment
in_root() { (cd "$root" && "$@"); }
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

# ---- setup -----------------------------------------------------------------------------------
banner "setup"
setup_ok=1 setup_note=""
setup_fail() { setup_ok=0; setup_note+="${setup_note:+; }$1"; echo "gpu_check: setup: $1"; }
bundle_parent=$build/bundle
B=$bundle_parent/lmforge_gpu_bundle
if [ ! -f "$bundle_tar" ]; then
  setup_fail "no bundle at $bundle_tar (make it with launch/gpu_pack.sh where apt works)"
elif [ ! -f "$B/CONTENTS.txt" ] || [ "$bundle_tar" -nt "$B/CONTENTS.txt" ]; then
  echo "unpacking $bundle_tar ($(du -h "$bundle_tar" | cut -f1))"
  rm -rf "$B"; mkdir -p "$bundle_parent"
  tar -C "$bundle_parent" -xzf "$bundle_tar" || setup_fail "cannot unpack $bundle_tar"
  touch "$B/CONTENTS.txt" 2>/dev/null
else
  echo "bundle already unpacked in $B"
fi
L=$B/usr/lib/x86_64-linux-gnu
[ -f "$B/BUNDLE_INFO" ] && sed 's/^/bundle: /' "$B/BUNDLE_INFO"
[ -f "$B/CONTENTS.txt" ] && echo "bundle: $(grep -vc '^#' "$B/CONTENTS.txt") packages"

glibc_have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
glibc_need=$(awk '$1 == "glibc_needed" {print $2}' "$B/BUNDLE_INFO" 2>/dev/null)
echo "glibc: this machine ${glibc_have:-?}, the bundle needs ${glibc_need:-?}"
if [ -n "$glibc_have" ] && [ -n "$glibc_need" ] && [ "$glibc_need" != unknown ] && ! ver_ge "$glibc_have" "$glibc_need"; then
  setup_fail "glibc $glibc_have is older than the $glibc_need the bundle's Debian binaries need"
fi
[ "$(uname -m)" = x86_64 ] || setup_fail "the bundle is x86_64; this machine is $(uname -m)"

cc_bin=$(command -v "${CC:-cc}" || command -v gcc || true)
cxx_bin=$(command -v "${CXX:-c++}" || command -v g++ || true)
[ -n "$cxx_bin" ] && [ -n "$cc_bin" ] || setup_fail "no C/C++ compiler (cc, c++)"
echo "compilers: ${cc_bin:-none} ${cxx_bin:-none} ($("${cxx_bin:-false}" --version 2>/dev/null | head -1))"
cmake_bin=$(command -v cmake || true)
[ -n "$cmake_bin" ] || setup_fail "no cmake"
echo "cmake: ${cmake_bin:-none} ($("${cmake_bin:-false}" --version 2>/dev/null | head -1))"
ninja_bin=$(command -v ninja || true)
[ -n "$ninja_bin" ] || ninja_bin=$B/usr/bin/ninja
echo "ninja: $ninja_bin ($("$ninja_bin" --version 2>/dev/null))"

# LibTorch: the python's torch (GPU mode), else Debian's CPU LibTorch (dry run).
torch_info=$(py -c 'import torch, os
print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch._C._GLIBCXX_USE_CXX11_ABI, torch.utils.cmake_prefix_path)' 2>/dev/null)
echo "python: $(command -v "$PYTHON") torch: ${torch_info:-not importable}"
torch_prefix=""
if [ -n "$torch_info" ]; then
  read -r _ _ torch_gpu torch_abi torch_prefix <<<"$torch_info"   # version, CUDA: printed above
  [ -d "$torch_prefix/Torch" ] || torch_prefix=""
fi
if [ -z "$torch_prefix" ] && [ "$dry" = 1 ]; then
  for d in /usr/lib/x86_64-linux-gnu/cmake /usr/lib/cmake; do [ -d "$d/Torch" ] && torch_prefix=$d && break; done
fi
if [ -z "$torch_prefix" ]; then
  setup_fail "no LibTorch CMake files ($PYTHON: torch.utils.cmake_prefix_path)"
else
  echo "LibTorch: $torch_prefix/Torch"
fi
if [ "$dry" = 0 ] && [ "${torch_gpu:-False}" != True ]; then
  setup_fail "nvidia-smi sees a GPU but $PYTHON's torch.cuda.is_available() is not True"
fi
if [ "$dry" = 0 ] && [ "${torch_abi:-True}" = False ]; then
  setup_fail "this torch is built with _GLIBCXX_USE_CXX11_ABI=0; the bundle's yaml-cpp and GoogleTest use the new ABI (a link would fail)"
fi

# NCCL: pip's nvidia-nccl (include/ and lib/libnccl.so.2), else the CUDA toolkit, else /usr.
nccl_inc="" nccl_lib=""
nccl_pip=$(py -c 'import nvidia.nccl as m, os
print(os.path.dirname(m.__file__) if getattr(m, "__file__", None) else list(m.__path__)[0])' 2>/dev/null)
for d in "$nccl_pip" /usr/local/cuda /usr; do
  [ -n "$d" ] || continue
  for l in "$d/lib/libnccl.so" "$d/lib/libnccl.so.2" "$d/lib64/libnccl.so" "$d/lib64/libnccl.so.2" \
           "$d/lib/x86_64-linux-gnu/libnccl.so" "$d/lib/x86_64-linux-gnu/libnccl.so.2"; do
    if [ -f "$d/include/nccl.h" ] && [ -e "$l" ]; then nccl_inc=$d/include nccl_lib=$l; break 2; fi
  done
done
echo "NCCL: ${nccl_lib:-not found}${nccl_inc:+ (headers $nccl_inc)}${nccl_pip:+; pip nvidia.nccl at $nccl_pip}"
[ -n "$nccl_lib" ] || [ "$dry" = 1 ] || setup_fail "no NCCL (pip nvidia-nccl, /usr/local/cuda or /usr)"
cuda_root=""
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do [ -n "$d" ] && [ -x "$d/bin/nvcc" ] && cuda_root=$d && break; done
echo "CUDA toolkit: ${cuda_root:-not found}${cuda_root:+ ($("$cuda_root/bin/nvcc" --version | tail -2 | head -1))}"
[ -n "$cuda_root" ] || [ "$dry" = 1 ] || setup_fail "no CUDA toolkit (nvcc) for LibTorch's CMake files and CUDA::cudart"
if [ "$dry" = 0 ]; then nvidia-smi 2>&1 | head -15; fi
if [ $setup_ok = 1 ]; then record setup PASS; else record setup FAIL "$setup_note"; fi

# The environment every lmforge program runs in: the bundle's libraries and programs (orted for
# an MPI singleton, mpirun.openmpi), OpenMPI relocated by OPAL_PREFIX (plugins, help files) and
# PMIx's plugins by their MCA path (PMIx ignores a prefix from the environment here).
run_env=(env "LD_LIBRARY_PATH=$L:$L/openmpi/lib:$L/pmix2/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
         "PATH=$B/usr/bin:$PATH" "OPAL_PREFIX=$B/usr" "PMIX_MCA_mca_base_component_path=$L/pmix2/lib/pmix"
         OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
         OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none)
mpirun_bin=$B/usr/bin/mpirun.openmpi

# ---- configure -------------------------------------------------------------------------------
configure() {
  local rpath_link="-Wl,-rpath-link,$L:$L/openmpi/lib:$L/pmix2/lib"
  local args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
    -DCMAKE_MAKE_PROGRAM="$ninja_bin" -DCMAKE_C_COMPILER="$cc_bin" -DCMAKE_CXX_COMPILER="$cxx_bin"
    -DCMAKE_PREFIX_PATH="$torch_prefix;$B/usr"
    -DCMAKE_POLICY_VERSION_MINIMUM=3.5   # pip's CMake 4 and old policy lines in packages' files (3.x ignores it)
    -DCMAKE_C_FLAGS="-isystem $B/usr/include/x86_64-linux-gnu" -DCMAKE_CXX_FLAGS="-isystem $B/usr/include/x86_64-linux-gnu"
    -DCMAKE_EXE_LINKER_FLAGS="$rpath_link" -DCMAKE_SHARED_LINKER_FLAGS="$rpath_link"
    # HDF5: the library search, not h5cc (which says /usr): a wrapper path that does not exist
    # (FindHDF5 then says it "is unable to compile a minimal HDF5 program") and the exact files
    -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON -DHDF5_PREFER_PARALLEL=OFF -DHDF5_ROOT="$L/hdf5/serial"
    -DHDF5_C_COMPILER_EXECUTABLE="$B/no-h5cc" -DHDF5_C_INCLUDE_DIR="$B/usr/include/hdf5/serial"
    -DHDF5_hdf5_LIBRARY_RELEASE="$L/hdf5/serial/libhdf5.so"
    # MPI: the header and library, not mpicc (which says /usr)
    -DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_C_HEADER_DIR="$L/openmpi/include" -DMPI_C_LIB_NAMES=mpi
    -DMPI_mpi_LIBRARY="$L/openmpi/lib/libmpi.so" -DMPIEXEC_EXECUTABLE="$mpirun_bin"
    -DOPENSSL_ROOT_DIR="$B/usr" -DOPENSSL_INCLUDE_DIR="$B/usr/include"
    -DOPENSSL_CRYPTO_LIBRARY="$L/libcrypto.so" -DOPENSSL_SSL_LIBRARY="$L/libssl.so"
    -DPCRE2_LIBRARY="$L/libpcre2-8.so" -DPNG_LIBRARY="$L/libpng16.so" -DPNG_PNG_INCLUDE_DIR="$B/usr/include/libpng16"
    -DZLIB_LIBRARY="$L/libz.so" -DZLIB_INCLUDE_DIR="$B/usr/include")
  if [ -n "$nccl_lib" ]; then
    args+=(-DLMFORGE_REQUIRE_NCCL=ON -DNCCL_INCLUDE_DIR="$nccl_inc" -DNCCL_LIBRARY="$nccl_lib")
  fi
  [ -n "$cuda_root" ] && args+=(-DCUDAToolkit_ROOT="$cuda_root" -DCUDA_TOOLKIT_ROOT_DIR="$cuda_root")
  # LibTorch's CMake files ask for the GPU architectures; Hopper unless the machine says otherwise.
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  rm -f "$build/CMakeCache.txt"
  echo "+ cmake ${args[*]}"
  PATH=${cuda_root:+$cuda_root/bin:}$PATH cmake "${args[@]}" || return 1
  # Where each dependency resolved: in the bundle, or (GPU mode) the machine's own copy.
  local outside=0 var val
  echo "dependencies as configured:"
  for var in yaml-cpp_DIR HDF5_C_INCLUDE_DIR HDF5_hdf5_LIBRARY_RELEASE nlohmann_json_DIR CLI11_DIR OPENSSL_INCLUDE_DIR \
             OPENSSL_CRYPTO_LIBRARY GTest_DIR MPI_C_HEADER_DIR MPI_mpi_LIBRARY PCRE2_LIBRARY PNG_LIBRARY \
             PNG_PNG_INCLUDE_DIR ZLIB_LIBRARY NCCL_LIBRARY Torch_DIR; do
    val=$(grep -E "^$var:[A-Z]+=" "$build/CMakeCache.txt" | head -1 | cut -d= -f2-)
    [ -n "$val" ] || val=$(grep -E "^${var%_RELEASE}:[A-Z]+=" "$build/CMakeCache.txt" | head -1 | cut -d= -f2-)
    local where=bundle
    case "$var" in NCCL_LIBRARY|Torch_DIR) where=machine ;; esac
    if [ "$where" = bundle ] && [[ "$val" != "$B"/* ]]; then where="OUTSIDE THE BUNDLE"; outside=$((outside + 1)); fi
    printf '  %-28s %-18s %s\n' "$var" "$where" "${val:-?}"
  done
  if [ $outside -gt 0 ]; then
    if [ "$dry" = 1 ]; then echo "gpu_check: $outside dependencies resolved outside the bundle"; return 1; fi
    echo "gpu_check: note: $outside dependencies resolved to this machine's own copies"
  fi
  return 0
}
if [ $setup_ok = 1 ]; then
  run_step configure configure
  configure_ok=$?
else
  configure_ok=1; record configure SKIPPED "setup failed"
fi

# ---- build -----------------------------------------------------------------------------------
targets=(lmforge lmforge_tests lmforge_mpi_tests train_throughput)
if [ $configure_ok = 0 ]; then
  nice_cmd=(); [ "$dry" = 1 ] && nice_cmd=(nice -n 19)   # the dry run shares a small machine
  run_step build "${nice_cmd[@]}" "$ninja_bin" -C "$build" -k 0 -j "$jobs" "${targets[@]}"
else
  record build SKIPPED "configure failed"
fi
lmforge=$build/lmforge
have() { [ -x "$build/$1" ]; }
need_skip() { record "$1" SKIPPED "$2 was not built"; }

if have lmforge; then
  echo "lmforge's libraries (the bundle's where it has them):"
  "${run_env[@]}" ldd "$lmforge" | grep -E 'yaml|hdf5|mpi|open-pal|pmix|crypto|pcre2|png|nccl|torch_cpu|not found' | sed 's/^/  /'
fi

# ---- a. version -------------------------------------------------------------------------------
if have lmforge; then run_step "a. lmforge version" "${run_env[@]}" "$lmforge" version; else need_skip "a. lmforge version" lmforge; fi

# ---- b. model / HF / optimizer / checkpoint gtests ---------------------------------------------
# The suites of tests/trainer/models, tests/trainer/hf_generate_test.cpp, optim_test.cpp and
# checkpoint_test.cpp (parameterised ones as Instantiation/Suite).
gfilter='ModelNames.*:GroupedQueryAttention.*:Loss.*:PositionIds.*:ReplaceableLayers.*:Rope.*:BothFamilies/CausalityTest.*'
gfilter+=':Fixtures/HfFixture.*:HfDirTest.*:Sampling.*:Generate.*:Schedule.*:Optimizer.*:ClipGradNorm.*:Checkpoint.*'
if have lmforge_tests; then
  run_step "b. model/HF/optim/checkpoint gtests" in_root "${run_env[@]}" OMP_NUM_THREADS=4 \
    "$build/lmforge_tests" --gtest_filter="$gfilter" --gtest_brief=1
else
  need_skip "b. model/HF/optim/checkpoint gtests" lmforge_tests
fi

# gtest_verdict JSON: PASS only when at least one test ran, none failed and none was skipped.
gtest_verdict() {
  py - "$1" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("no gtest report:", e); sys.exit(1)
ran = failed = skipped = 0
for suite in r.get("testsuites", []):
    for t in suite.get("testsuite", []):
        ran += 1
        if t.get("failures"): failed += 1
        elif t.get("result") == "SKIPPED" or t.get("skipped"): skipped += 1
        if t.get("result") == "SKIPPED":
            for f in t.get("skipped", []) or []: print("  skipped:", t["name"], "-", f.get("message", "").strip())
print(f"{ran} tests: {ran - failed - skipped} passed, {failed} failed, {skipped} skipped")
sys.exit(0 if ran and not failed and not skipped else 1)
EOF
}

# ---- mpi. the bundled OpenMPI: a singleton and an mpirun world ------------------------------------
if have lmforge_mpi_tests; then
  banner "mpi. Comm.* as 1 process and under mpirun -np 2"
  mpi_ok=1
  echo "+ lmforge_mpi_tests --gtest_filter='Comm.*'   (one process: MPI singleton)"
  (cd "$root" && "${run_env[@]}" CUDA_VISIBLE_DEVICES= timeout 300 "$build/lmforge_mpi_tests" --gtest_filter='Comm.*' --gtest_brief=1) || mpi_ok=0
  echo "+ mpirun.openmpi -np 2 lmforge_mpi_tests --gtest_filter='Comm.*'"
  (cd "$root" && "${run_env[@]}" CUDA_VISIBLE_DEVICES= timeout 300 "$mpirun_bin" --allow-run-as-root --oversubscribe \
     --bind-to none -np 2 "$build/lmforge_mpi_tests" --gtest_filter='Comm.*' --gtest_brief=1) || mpi_ok=0
  if [ $mpi_ok = 1 ]; then record "mpi. bundled OpenMPI (1 and 2 ranks)" PASS; else record "mpi. bundled OpenMPI (1 and 2 ranks)" FAIL "see the log"; fi
else
  need_skip "mpi. bundled OpenMPI (1 and 2 ranks)" lmforge_mpi_tests
fi

# ---- c. NcclComm.* as one process ---------------------------------------------------------------
c_name="c. NcclComm.* (1 process, no mpirun)"
if [ "$dry" = 1 ]; then
  if have lmforge_mpi_tests; then   # shown, not counted: what the skip says without a GPU
    echo "(dry run: NcclComm.* run once to show its skip reason)"
    (cd "$root" && "${run_env[@]}" timeout 120 "$build/lmforge_mpi_tests" --gtest_filter='NcclComm.*' \
       --gtest_output="json:$build/nccl_dry.json" >"$build/nccl_dry.out" 2>&1)
    gtest_verdict "$build/nccl_dry.json"
    grep -A1 ': Skipped' "$build/nccl_dry.out" | grep -v -e ': Skipped' -e '^--' | sort -u | sed 's/^/  skip reason: /'
  fi
  record "$c_name" SKIPPED "no GPU ($dry_reason)"
elif have lmforge_mpi_tests; then
  banner "$c_name"
  (cd "$root" && "${run_env[@]}" timeout 300 "$build/lmforge_mpi_tests" --gtest_filter='NcclComm.*' \
     --gtest_output="json:$build/nccl.json" 2>&1 | tee "$build/nccl.out")
  rc=$?
  grep -A1 ': Skipped' "$build/nccl.out" | grep -v -e ': Skipped' -e '^--' | sort -u | sed 's/^/  skip reason: /'
  if gtest_verdict "$build/nccl.json" && [ $rc = 0 ]; then record "$c_name" PASS
  else record "$c_name" FAIL "exit $rc; a skip counts as a failure here"; fi
else
  need_skip "$c_name" lmforge_mpi_tests
fi

# ---- d/e. resume on CUDA ----------------------------------------------------------------------
# configs/quickstart.yaml with its fortune files from the bundle (the GPU machine has none).
cfg=$build/quickstart_gpu.yaml
sed "s#/usr/share/games/fortunes#$B/usr/share/games/fortunes#g" "$root/configs/quickstart.yaml" >"$cfg"
train_device=cuda
[ "$dry" = 1 ] && train_device=cpu
# The run directory a train command made under $1 (runs/<name>/<run_id>/), newest first.
run_dir_of() { ls -td "$1"/*/*/ 2>/dev/null | head -1 | sed 's#/$##'; }

# compare_losses REF RESUMED FIRST LAST [OTHER]: steps FIRST..LAST of both runs' metrics.jsonl within
# rtol; OTHER (a second fresh run) is compared with REF over steps 1..FIRST-1, for information.
compare_losses() {
  py - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "$4" "$rtol" "${5:-}" <<'EOF'
import json, sys
def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if "loss" in r: out[r["step"]] = r["loss"]
    return out
ref, res = losses(sys.argv[1]), losses(sys.argv[2])
lo, hi, rtol = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def compare(a, b, steps):
    missing = [s for s in steps if s not in a or s not in b]
    if missing: return None, None, missing
    rel = max(abs(a[s] - b[s]) / max(abs(a[s]), 1e-30) for s in steps)
    return rel, all(a[s] == b[s] for s in steps), []
steps = list(range(lo, hi + 1))
rel, bits, missing = compare(ref, res, steps)
if missing:
    print(f"missing loss rows for steps {missing[:5]}{'...' if len(missing) > 5 else ''}"); sys.exit(1)
for s in (lo, lo + 1, hi):
    print(f"  step {s}: uninterrupted {ref[s]!r}  resumed {res[s]!r}")
print(f"steps {lo}..{hi}: max relative difference {rel:.3g} (tolerance {rtol:g}); "
      + ("bit-identical" if bits else "not bit-identical"))
if len(sys.argv) > 6 and sys.argv[6]:
    pre = losses(sys.argv[6] + "/metrics.jsonl")
    prel, pbits, pmiss = compare(ref, pre, list(range(1, lo)))
    if not pmiss:
        print(f"steps 1..{lo - 1} (two fresh runs, no resume): max relative difference {prel:.3g}; "
              + ("bit-identical" if pbits else "not bit-identical: the kernels are not deterministic"))
sys.exit(0 if rel <= rtol else 1)
EOF
}

# resume_check NAME OUT [--set k=v ...]: A to 80, B to 60 (checkpoints 20/40/60), B's step 60 resumed to 80.
resume_check() {
  local name=$1 out=$2; shift 2
  banner "$name"
  rm -rf "$out" "$out".?.log; mkdir -p "$out"
  local common=(--set "train.device=$train_device" --set train.precision=bf16 --set schedule.kind=constant
                --set train.log_every=1 --set train.eval_every=0 --set checkpoint.every_steps=20
                --set "data.cache_dir=$build/data_cache" "$@")
  local lm=("${run_env[@]}" CUBLAS_WORKSPACE_CONFIG=:4096:8 "$lmforge" train "$cfg")
  echo "+ lmforge train quickstart ${common[*]} (A: 80 steps; B: 60 steps, then B's step 60 resumed to 80)"
  "${lm[@]}" "${common[@]}" --set train.max_steps=80 --set "run.output_dir=$out/A" >"$out.A.log" 2>&1 ||
    { tail -20 "$out.A.log"; record "$name" FAIL "run A (80 steps) failed: $out.A.log"; return; }
  "${lm[@]}" "${common[@]}" --set train.max_steps=60 --set "run.output_dir=$out/B" >"$out.B.log" 2>&1 ||
    { tail -20 "$out.B.log"; record "$name" FAIL "run B (60 steps) failed: $out.B.log"; return; }
  local a b ckpt
  a=$(run_dir_of "$out/A") b=$(run_dir_of "$out/B")
  echo "B's checkpoints: $(cd "$b/checkpoints" 2>/dev/null && ls -d step_* | tr '\n' ' ')"
  ckpt=$(ls -d "$b"/checkpoints/step_*60 2>/dev/null | tail -1)
  [ -n "$ckpt" ] || { record "$name" FAIL "run B left no step-60 checkpoint"; return; }
  "${lm[@]}" "${common[@]}" --set train.max_steps=80 --set "checkpoint.resume=$ckpt" \
    --set "run.output_dir=$out/C" >"$out.C.log" 2>&1 ||
    { tail -20 "$out.C.log"; record "$name" FAIL "the resume from $ckpt failed: $out.C.log"; return; }
  grep -o 'resumed from .*' "$out.C.log"
  local c; c=$(run_dir_of "$out/C")
  local verdict
  verdict=$(compare_losses "$a" "$c" 61 80 "$b"); local rc=$?
  echo "$verdict"
  if [ $rc = 0 ]; then record "$name" PASS "$(echo "$verdict" | grep '^steps 61')"
  else record "$name" FAIL "$(echo "$verdict" | grep -E '^steps 61|^missing' | head -1)"; fi
}
d_name="d. bf16 resume 60 -> 80 ($train_device)"
e_name="e. same, cross_document_attention=false"
if [ "$dry" = 1 ] && [ "${GPU_CHECK_DRY_TRAIN:-0}" != 1 ]; then
  record "d. bf16 cuda resume 60 -> 80" SKIPPED "no GPU ($dry_reason)"
  record "$e_name" SKIPPED "no GPU"
elif have lmforge; then
  resume_check "$d_name" "$build/runs/d_resume"
  resume_check "$e_name" "$build/runs/e_resume_no_cross_doc" --set data.cross_document_attention=false
else
  need_skip "$d_name" lmforge; need_skip "$e_name" lmforge
fi

# ---- f. throughput ----------------------------------------------------------------------------
# throughput NAME OUT STEPS [--set ...]: median tokens/s over the logged steps after the first
# two, peak GPU memory used while it ran.
throughput() {
  local name=$1 out=$2 steps=$3; shift 3
  banner "$name"
  rm -rf "$out"; mkdir -p "$out"
  local smi_pid=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$out/gpu_mem.txt" 2>/dev/null &
    smi_pid=$!
  fi
  echo "+ lmforge train quickstart --set train.max_steps=$steps $*"
  "${run_env[@]}" "$lmforge" train "$cfg" --set train.device=cuda --set train.precision=bf16 \
    --set train.max_steps="$steps" --set train.log_every=1 --set train.eval_every=0 --set eval.max_batches=1 \
    --set checkpoint.save_final=false --set "data.cache_dir=$build/data_cache" --set "run.output_dir=$out" "$@" \
    >"$out.log" 2>&1
  local rc=$?
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null && wait "$smi_pid" 2>/dev/null
  tail -5 "$out.log"
  if [ $rc != 0 ]; then record "$name" FAIL "exit $rc: $out.log"; return; fi
  local report
  report=$(py - "$(run_dir_of "$out")/metrics.jsonl" "$out/gpu_mem.txt" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > 2]
try:
    mem = max(int(x) for x in open(sys.argv[2]).read().split() if x.strip().isdigit())
    mem = f"peak GPU memory used {mem / 1024:.1f} GiB"
except Exception:
    mem = "peak GPU memory: nvidia-smi gave nothing"
print(f"{statistics.median(tps):,.0f} tokens/s (median of {len(tps)} steps), {mem}" if tps else "no tokens_per_s rows")
sys.exit(0 if tps else 1)
EOF
)
  local prc=$?
  echo "$report"
  if [ $prc = 0 ]; then record "$name" PASS "$report"; else record "$name" FAIL "$report"; fi
}
if [ "$dry" = 1 ]; then
  record "f. throughput quickstart (bf16 cuda)" SKIPPED "no GPU"
  record "f. throughput ~0.85B llama (bf16 cuda)" SKIPPED "no GPU"
elif have lmforge; then
  throughput "f. throughput quickstart (bf16 cuda)" "$build/runs/f_quickstart" 100
  throughput "f. throughput ~0.85B llama (bf16 cuda)" "$build/runs/f_llama_1b" 12 \
    --set model.hidden_size=2048 --set model.n_layers=16 --set model.n_heads=32 --set model.n_kv_heads=8 \
    --set model.intermediate_size=5632 --set model.max_seq_len=1024 --set model.vocab_size=32000 \
    --set train.seq_len=1024 --set train.micro_batch_size=8 --set run.name=llama_1b
else
  need_skip "f. throughput" lmforge
fi

summary
