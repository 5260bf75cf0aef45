#!/usr/bin/env bash
# tests/parallel/nccl_cuda_branch_test.sh -- compiles parallel/nccl_comm.cpp's CUDA-LibTorch branch
# (current stream, recordStream; LMFORGE_HAVE_C10_CUDA) against this LibTorch's c10/cuda headers,
# syntax only: a CPU build never compiles it otherwise. Exit 77 without NCCL or those headers.
set -euo pipefail
build=$(realpath "$1")
object=CMakeFiles/lmforge_core.dir/parallel/nccl_comm.cpp.o
cd "$build"
command=$(ninja -t commands "$object" 2>/dev/null | tail -1)
if [[ "$command" != *nccl_comm.cpp* ]]; then
  echo "skipped: this build has no NCCL backend (no CUDA/NCCL at configure time)"
  exit 77
fi
stream_header=""
for dir in /usr/include /usr/local/include $(sed -n 's/.*-isystem \([^ ]*\).*/\1/p' <<<"$command"); do
  [ -f "$dir/c10/cuda/CUDAStream.h" ] && stream_header="$dir/c10/cuda/CUDAStream.h" && break
done
if [ -z "$stream_header" ]; then
  echo "skipped: no c10/cuda headers next to this LibTorch"
  exit 77
fi
# The one generated header a CPU package leaves out: it only says the library is shared.
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/c10/cuda/impl"
if [ ! -f "$(dirname "$stream_header")/impl/cuda_cmake_macros.h" ]; then
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
fi
command=$(sed -e 's/-include [^ ]*cmake_pch\.hxx//' -e 's/ -MD -MT [^ ]* -MF [^ ]*//' -e "s| -o [^ ]*\.o | -o /dev/null |" <<<"$command")
command=${command/ -c / -fsyntax-only -DLMFORGE_HAVE_C10_CUDA=1 -I$stub -c }
if ! eval "$command"; then
  echo "FAIL: parallel/nccl_comm.cpp does not compile with LMFORGE_HAVE_C10_CUDA=1"
  exit 1
fi
echo "ok: the CUDA-LibTorch branch of parallel/nccl_comm.cpp compiles (syntax only)"
