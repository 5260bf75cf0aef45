#!/usr/bin/env bash
# launch/gpu_pack.sh -- makes the bundle that launch/gpu_check.sh carries to a GPU machine.
#
# What it does (run it HERE, on Debian 12 with apt reachable; as any user, no root needed):
#   1. Resolves the Debian packages of lmforge's C++ build and run dependencies that a bare GPU
#      image (PyTorch + CUDA in its python, CMake, ninja and a compiler, nothing else) lacks: an
#      explicit curated list of roots (ROOTS below) whose Depends/Pre-Depends are followed with
#      `apt-cache depends` (the first of each set of alternatives, the first provider of a virtual
#      package), stopping at the packages in ASSUMED (the C library, the compiler toolchain, perl,
#      dpkg and the like, which such an image has or lmforge does not need).
#   2. Downloads them with `apt-get download` into build/gpu_bundle/debs/ (kept as a cache: a
#      second run downloads only what changed), unpacks each with `dpkg -x` into
#      build/gpu_bundle/lmforge_gpu_bundle/ (a prefix whose usr/ mirrors /usr), and drops what
#      neither a build nor a run needs: docs, man and info pages, locales, static libraries
#      (except GoogleTest's, which has no shared one), sources.
#   3. Writes CONTENTS.txt (package, version, installed size) and BUNDLE_INFO (the newest glibc
#      symbol version any bundled binary needs, the Debian release) into the prefix, packs the
#      prefix as build/gpu_bundle/lmforge_gpu_bundle.tar.gz (gzip), prints the packages and its
#      size, and fails (exit 1, naming size and limit) unless it is under LIMIT_MB (60 MB: the
#      bundle travels with the working tree to the GPU machine, 64 MiB in all).
#   The fortune files (packages fortunes, fortunes-min) are included: configs/quickstart.yaml
#   trains on them and the GPU machine has no /usr/share/games/fortunes.
#
# What it does NOT do: install anything on this machine (no root, no dpkg -i, no maintainer
# scripts: no update-alternatives, so the bundle has mpirun.openmpi but no mpirun link); rewrite
# the /usr paths compiled or written into the packages (h5cc, mpicc, pkg-config and CMake files
# still say /usr: gpu_check.sh passes OPAL_PREFIX, CMAKE_PREFIX_PATH and explicit FindHDF5 /
# FindMPI hints instead); bundle a compiler, CMake, CUDA, NCCL or LibTorch (the GPU machine's
# own are used); check that the GPU machine's glibc is at least Debian 12's 2.36 (gpu_check.sh
# does, before it builds).
#
# Usage: launch/gpu_pack.sh            (env: GPU_BUNDLE_DIR, default build/gpu_bundle)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${GPU_BUNDLE_DIR:-$root/build/gpu_bundle}
name=lmforge_gpu_bundle
LIMIT_MB=60

# The roots: every package lmforge's CMakeLists.txt finds, the tools to run it, and its data.
ROOTS=(
  libyaml-cpp-dev                     # find_package(yaml-cpp)
  libhdf5-dev                         # find_package(HDF5 COMPONENTS C)
  libopenmpi-dev openmpi-bin          # find_package(MPI COMPONENTS C); mpirun.openmpi, orted
  nlohmann-json3-dev libcli11-dev     # header-only
  libssl-dev                          # find_package(OpenSSL): libcrypto
  libpcre2-dev libpng-dev             # find_library(pcre2-8), find_package(PNG)
  zlib1g-dev libzstd-dev              # find_package(ZLIB), find_library(zstd): .gz/.zst sources
  libgtest-dev                        # find_package(GTest)
  ninja-build                         # the generator (also on the GPU image; this one is known)
  fortunes fortunes-min               # configs/quickstart.yaml's and configs/tiny.yaml's corpus
)
# Not followed: present on any image that can compile C++ (C library, compiler toolchain,
# libstdc++), the packaging system's own tools, or not needed to build and run lmforge (Fortran,
# X11/OpenCL plugins of hwloc, ssh for remote launches, autotools, JavaScript for HTML docs).
ASSUMED=(
  libc6 libc6-dev libc-dev-bin linux-libc-dev libcrypt1 libcrypt-dev libnsl2 libnsl-dev
  libtirpc3 libtirpc-dev libtirpc-common rpcsvc-proto libgcc-s1 libstdc++6 gcc-12-base gcc-11-base
  gcc gcc-12 g++ g++-12 cpp cpp-12 libgcc-12-dev libstdc++-12-dev binutils binutils-common
  binutils-x86-64-linux-gnu libbinutils libctf0 libctf-nobfd0 libgprofng0
  gfortran gfortran-12 libgfortran-12-dev
  perl perl-base perl-modules-5.36 libperl5.36 dpkg debconf cdebconf tar adduser passwd
  debianutils install-info libpam0g libpam-modules libpam-modules-bin libselinux1 libaudit1
  libaudit-common libsemanage2 libsemanage-common libsepol2 libdebian-installer4 libnewt0.52
  libslang2 libtextwrap1 ucf sensible-utils lsb-base init-system-helpers
  openssh-client libhwloc-plugins libjs-jquery libjs-jquery-ui autoconf automake autotools-dev m4
)

mkdir -p "$out/debs"
cd "$out"

is_assumed() { local a; for a in "${ASSUMED[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }

# One package's direct dependencies, one per line: the first alternative of each group, the first
# provider of a virtual one (an alternative already chosen or assumed wins over the first).
direct_deps() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "$1" |
    awk -v chosen=" $2 " '
      function pick(   i, best) {   # closes a group of alternatives
        if (n == 0) return
        best = ""
        for (i = 1; i <= n; i++) if (index(chosen, " " alt[i] " ")) { best = alt[i]; break }
        if (best == "") best = alt[1]
        print best; n = 0 }
      function end_virtual() {     # a virtual package stands for its (preferred) provider
        if (!virt) return
        virt = 0
        if (provider != "") alt[++n] = provider
        if (!vcont) pick() }
      /^ [ |](Pre)?Depends: / {
        end_virtual()
        cont = (substr($0, 2, 1) == "|")
        d = $2; sub(/:any$/, "", d)
        if (d ~ /^</) { virt = 1; vcont = cont; provider = ""; next }
        alt[++n] = d
        if (!cont) pick()
        next }
      /^    [^ ]/ && virt {
        if (provider == "" || (!index(chosen, " " provider " ") && index(chosen, " " $1 " "))) provider = $1
        next }
      { end_virtual() }
      END { end_virtual(); pick() }'
}

echo "gpu_pack: resolving dependencies of: ${ROOTS[*]}"
declare -A seen=()
queue=("${ROOTS[@]}")
selected=()
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  if is_assumed "$p"; then continue; fi
  if ! apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then
    echo "gpu_pack: package '$p' is unknown to apt (run apt-get update?)" >&2; exit 1
  fi
  selected+=("$p")
  while read -r d; do
    [ -n "$d" ] && [ -z "${seen[$d]:-}" ] && queue+=("$d")
  done < <(direct_deps "$p" "${selected[*]} ${ASSUMED[*]}")
done
mapfile -t selected < <(printf '%s\n' "${selected[@]}" | sort -u)
echo "gpu_pack: ${#selected[@]} packages (not followed, assumed on the GPU image: ${#ASSUMED[@]} names)"

# Download what the cache lacks (exact version: the file name carries it).
missing=()
for p in "${selected[@]}"; do
  v=$(apt-cache show --no-all-versions "$p" | awk '/^Version:/{print $2; exit}')
  f=$(printf '%s_%s_' "$p" "${v//:/%3a}")
  compgen -G "debs/${f}*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu_pack: downloading ${#missing[@]} .deb files"
  (cd debs && apt-get download -q "${missing[@]}" >/dev/null) ||
    { echo "gpu_pack: apt-get download failed for some of: ${missing[*]}" >&2; exit 1; }
fi

rm -rf "$name" "$name.tar.gz"
mkdir -p "$name"
contents="$name/CONTENTS.txt"
{
  echo "# lmforge GPU bundle: Debian $(cat /etc/debian_version) $(dpkg --print-architecture) packages unpacked with dpkg -x,"
  echo "# made by launch/gpu_pack.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). package version installed-size-KiB"
} >"$contents"
for p in "${selected[@]}"; do
  v=$(apt-cache show --no-all-versions "$p" | awk '/^Version:/{print $2; exit}')
  deb=$(compgen -G "debs/$(printf '%s_%s_' "$p" "${v//:/%3a}")*.deb" | head -1)
  dpkg -x "$deb" "$name"
  echo "$p $v $(dpkg-deb -f "$deb" Installed-Size)" >>"$contents"
done

# Neither a build nor a run needs these. GoogleTest ships only static libraries: keep those.
rm -rf "$name"/usr/share/{doc,doc-base,man,info,locale,lintian,bug,bash-completion,zsh} "$name"/usr/src \
       "$name"/usr/lib/*/fortran   # Fortran modules of OpenMPI
find "$name" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' -delete
find "$name" -xtype l -name '*.a' -delete   # links to the static libraries just removed

# The newest glibc symbol version any bundled program or library needs: gpu_check.sh compares it
# with the GPU machine's C library before building.
glibc=$(find "$name" -type f \( -name '*.so*' -o -path '*/bin/*' \) -exec readelf -V --wide {} + 2>/dev/null |
          grep -o 'GLIBC_2\.[0-9.]*' | sort -uV | tail -1 | sed 's/GLIBC_//' || true)  # readelf: scripts are no ELF
echo "glibc_needed ${glibc:-unknown}" >"$name/BUNDLE_INFO"
echo "debian $(cat /etc/debian_version)" >>"$name/BUNDLE_INFO"
echo "arch $(dpkg --print-architecture)" >>"$name/BUNDLE_INFO"

tar -C "$out" -czf "$name.tar.gz" "$name"
bytes=$(stat -c %s "$name.tar.gz")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "gpu_pack: included (package version):"
awk '!/^#/ { printf "%s=%s ", $1, $2 } END { print "" }' "$contents" | fold -s -w 110 | sed 's/^/  /'
echo "gpu_pack: needs glibc >= ${glibc:-unknown} on the GPU machine (Debian $(cat /etc/debian_version) binaries)"
echo "gpu_pack: unpacked $(du -sh "$name" | cut -f1), $(find "$name" -type f | wc -l) files"
echo "gpu_pack: $out/$name.tar.gz: $mb MB ($bytes bytes; limit $LIMIT_MB MB)"
if [ "$bytes" -ge $((LIMIT_MB * 1000 * 1000)) ]; then
  echo "gpu_pack: FAILED: the bundle is $mb MB, over the $LIMIT_MB MB limit; add the biggest packages of" \
       "$contents that the GPU image has to ASSUMED" >&2
  exit 1
fi
